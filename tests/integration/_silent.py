"""Endpoints of an etcd that cannot be used: nothing listening, or a listener that never answers."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def closed_endpoint() -> str:
    """``127.0.0.1:<port>`` of a port that was free a moment ago: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """``127.0.0.1:<port>`` where connections succeed but no request is ever answered.

    The kernel completes the handshake for the listen backlog, so a client sends its
    request and waits for a reply, as it does with a hung etcd.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
