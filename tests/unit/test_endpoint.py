"""parse_rendezvous_endpoint and parse_endpoint_list."""

from __future__ import annotations

import pytest

from rdzv import parse_rendezvous_endpoint
from rdzv.endpoint import parse_endpoint_list


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


def test_an_endpoint_list_gives_each_member_with_the_default_port_where_none_is_given() -> None:
    assert parse_endpoint_list("h1:2379, h2 ,[::1]:3", 2379) == [
        ("h1", 2379),
        ("h2", 2379),
        ("::1", 3),
    ]


def test_a_single_endpoint_is_a_list_of_one() -> None:
    assert parse_endpoint_list("10.0.0.1:5", 2379) == [("10.0.0.1", 5)]
    assert parse_endpoint_list(None, 2379) == [("localhost", 2379)]


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("h1:1,,h2:2", "empty item"),
        ("h1:1,", "empty item"),
        ("h1:1,h1:1", "lists h1:1 twice"),
        ("h1:1,bad host", "hostname"),
    ],
)
def test_an_endpoint_list_with_an_empty_repeated_or_bad_item_is_refused(
    endpoint: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint_list(endpoint, 2379)
