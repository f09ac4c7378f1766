"""Issue 25, item 3: which address a pairing request is counted under. X-Forwarded-For is
believed only from configured proxies, and IPv6 clients are counted per /64."""

from __future__ import annotations

import pytest

from python_worker.api.rate_limit import client_key, trusted_networks
from python_worker.api.settings import ApiSettings

NONE = trusted_networks([])
LB = trusted_networks(["10.0.0.0/8", "127.0.0.1"])


def test_without_configured_proxies_the_header_is_ignored_even_from_loopback() -> None:
    assert client_key("127.0.0.1", ["203.0.113.9"], NONE) == "127.0.0.1"
    assert client_key("198.51.100.7", ["203.0.113.9, 127.0.0.1"], NONE) == "198.51.100.7"


def test_from_a_configured_proxy_the_nearest_untrusted_hop_is_the_client() -> None:
    # The client wrote "1.1.1.1" itself; the load balancer appended what it saw.
    assert client_key("10.1.2.3", ["1.1.1.1, 203.0.113.9"], LB) == "203.0.113.9"
    # Two proxies of ours in a row are skipped.
    assert client_key("127.0.0.1", ["1.1.1.1, 203.0.113.9, 10.9.9.9"], LB) == "203.0.113.9"
    # Several header lines are one list, in order.
    assert client_key("10.1.2.3", ["1.1.1.1", "203.0.113.9"], LB) == "203.0.113.9"


def test_a_client_that_is_not_a_proxy_cannot_choose_its_address() -> None:
    for rotated in ("1.1.1.1", "2.2.2.2", "10.0.0.1"):
        assert client_key("198.51.100.7", [rotated], LB) == "198.51.100.7"


def test_a_malformed_hop_stops_the_walk_at_the_last_proxy() -> None:
    assert client_key("10.1.2.3", ["203.0.113.9, not-an-ip"], LB) == "10.1.2.3"
    assert client_key("10.1.2.3", [], LB) == "10.1.2.3"


def test_ipv6_clients_are_counted_per_64() -> None:
    a = client_key("2001:db8:1:2:aaaa::1", [], NONE)
    b = client_key("2001:db8:1:2:ffff:ffff:ffff:ffff", [], NONE)
    assert a == b == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1", [], NONE) != a
    assert client_key("10.0.0.1", ["[2001:db8:1:2::5]"], LB) == "2001:db8:1:2::/64"
    # An IPv4 client seen through an IPv6 socket is that IPv4 client.
    assert client_key("::ffff:198.51.100.7", [], NONE) == "198.51.100.7"


def test_the_setting_is_empty_by_default_and_refuses_what_is_not_a_network() -> None:
    assert ApiSettings.model_validate({}).trusted_proxies == ""
    with pytest.raises(ValueError, match="is not an IP address or network"):
        ApiSettings.model_validate({"CALLPANION_TRUSTED_PROXIES": "10.0.0.0/8, lb.internal"})
