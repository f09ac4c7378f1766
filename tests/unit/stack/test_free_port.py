"""free_port: the port a test server or cluster will bind a moment later, picked where no
outgoing connection can take it first."""

from __future__ import annotations

import socket

from python_worker.stack import cluster


def test_free_ports_are_below_the_kernels_ephemeral_range() -> None:
    # The kernel hands out the local ports of every connect() (and of bind(0)) from this range:
    # a port picked there may be some client's before our server binds it.
    low, _high = cluster.ephemeral_port_range()
    ports = {cluster.free_port() for _ in range(50)}
    assert all(1024 <= port < low for port in ports), sorted(ports)


def test_a_free_port_can_be_bound() -> None:
    port = cluster.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
