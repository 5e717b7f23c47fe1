"""parse_rendezvous_endpoint."""

from __future__ import annotations

import pytest

from rdzv import parse_rendezvous_endpoint


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (None, ("localhost", 29400)),
        ("", ("localhost", 29400)),
        ("  ", ("localhost", 29400)),
        ("node1", ("node1", 29400)),
        ("node1.example.com:1234", ("node1.example.com", 1234)),
        ("10.0.0.1", ("10.0.0.1", 29400)),
        ("10.0.0.1:0", ("10.0.0.1", 0)),
        ("10.0.0.1:65535", ("10.0.0.1", 65535)),
        ("[::1]", ("::1", 29400)),
        ("[::1]:8080", ("::1", 8080)),
        ("fe80::1", ("fe80::1", 29400)),
    ],
)
def test_parses_hosts_addresses_and_ports(endpoint: str | None, expected: tuple[str, int]) -> None:
    assert parse_rendezvous_endpoint(endpoint, 29400) == expected


@pytest.mark.parametrize("endpoint", ["host:65536", "host:-1", "host:port", "host:", "h:123456"])
def test_rejects_a_bad_port_saying_the_range(endpoint: str) -> None:
    with pytest.raises(ValueError, match="between 0 and 65535"):
        parse_rendezvous_endpoint(endpoint, 29400)


@pytest.mark.parametrize("endpoint", ["bad host:1", "host/path", ":1", "a;b", "[fe80::1%eth0]:5"])
def test_rejects_a_bad_hostname(endpoint: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        parse_rendezvous_endpoint(endpoint, 29400)


@pytest.mark.parametrize("endpoint", ["[::1", "[::1]x", "[::1]]:5"])
def test_rejects_misplaced_brackets(endpoint: str) -> None:
    with pytest.raises(ValueError, match="bracket"):
        parse_rendezvous_endpoint(endpoint, 29400)
