"""Parsing ``<host>[:<port>]`` rendezvous endpoints, and comma-separated lists of them."""

from __future__ import annotations

import ipaddress
import re

__all__ = ["parse_endpoint_list", "parse_rendezvous_endpoint"]

_HOST = re.compile(r"^[\w.:-]+$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def parse_rendezvous_endpoint(endpoint: str | None, default_port: int) -> tuple[str, int]:
    """Split an endpoint into host and port.

    Accepts a hostname, an IPv4 address or a bracketed IPv6 address, each with an
    optional ``:port`` (``node1``, ``10.0.0.1:29400``, ``[::1]:29400``, ``[::1]``);
    an unbracketed IPv6 address is taken whole, as a host without port. An empty
    endpoint means ``localhost``. IPv6 hosts are returned without brackets.

    Raises:
        ValueError: the port is not a number in 0..65535, or the host has
            characters no hostname or address has.
    """
    text = (endpoint or "").strip()
    if not text:
        return "localhost", default_port

    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(
                f"The rendezvous endpoint '{text}' has an unclosed or misplaced bracket; write an "
                "IPv6 address as [addr] or [addr]:port."
            )
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1 and _is_ipv6(text):
        host = text
    else:
        host, colon, tail = text.rpartition(":")
        if not colon:
            host = tail
        else:
            port_text = tail

    if port_text is None:
        port = default_port
    else:
        if not _PORT.match(port_text) or int(port_text) > 65535:
            raise ValueError(
                f"The port number of the rendezvous endpoint '{text}' must be an integer "
                "between 0 and 65535."
            )
        port = int(port_text)

    if not host or not _HOST.match(host):
        raise ValueError(
            f"The hostname of the rendezvous endpoint '{text}' must be a dot-separated list of "
            "labels, an IPv4 address, or an IPv6 address."
        )
    return host, port


def parse_endpoint_list(endpoint: str | None, default_port: int) -> list[tuple[str, int]]:
    """Split ``host1[:port1],host2[:port2],...`` into ``(host, port)`` pairs, in order.

    Each item is read as :func:`parse_rendezvous_endpoint` reads one endpoint (so
    a single endpoint gives a list of one). The members of an etcd cluster are
    written so: every etcd path of rdzv takes such a list.

    Raises:
        ValueError: an item is empty or invalid, or one member is listed twice;
            the message names the item.
    """
    text = (endpoint or "").strip()
    if "," not in text:
        return [parse_rendezvous_endpoint(text, default_port)]
    members: list[tuple[str, int]] = []
    for item in text.split(","):
        if not item.strip():
            raise ValueError(
                f"The rendezvous endpoint '{text}' has an empty item; write the members of a "
                "cluster as host1:port1,host2:port2 with no empty place between commas."
            )
        member = parse_rendezvous_endpoint(item, default_port)
        if member in members:
            raise ValueError(
                f"The rendezvous endpoint '{text}' lists {item.strip()} twice; list each member "
                "of the cluster once."
            )
        members.append(member)
    return members
