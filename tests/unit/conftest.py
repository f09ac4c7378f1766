"""The unit tier: no cluster, no emulator, no network, so it needs no fixture of its own.

Its tests use pytest's built-in fixtures only (`tmp_path`, `monkeypatch`, ...); `pytest
tests/unit` runs on a bare checkout in seconds.
"""
