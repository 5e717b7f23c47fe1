"""Hostile peers of the TCP store: the server keeps serving its clients in bounded memory.

The server runs alone in a process (``_store_server.py``) with an auth token, as
``rdzv serve tcp`` recommends, so that its resident memory can be read from
/proc. A well-behaved client (the canary) sets and reads keys the whole time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from _faults import LOOPBACK, StoreServerProcess, wait_until

from rdzv.store.tcp import StoreAuthenticationError, TCPStore
from rdzv.store.tcp_protocol import PREFIX

TOKEN = "fault-suite token"
HANDSHAKE_TIMEOUT = 3.0
IDLE_CONNECTIONS = 200
BULK = 4 * 1024 * 1024
"""Bytes each flooding peer tries to send: 50 of them, 200 MiB, if the server buffered."""
MEMORY_BOUND_KIB = 64 * 1024
"""Most the server's peak RSS may grow by under the whole attack (it starts near 30 MiB)."""


class Canary:
    """A client with the token that sets and reads back a key in a loop on its own thread."""

    def __init__(self, port: int) -> None:
        self.store = TCPStore(LOOPBACK, port, timeout=timedelta(seconds=20), auth_token=TOKEN)
        self.rounds = 0
        self.slowest = 0.0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                value = f"v{self.rounds}".encode()
                self.store.set("canary", value)
                assert self.store.get("canary") == value
            except BaseException as e:  # everything counts, assertions too
                self.errors.append(e)
                return
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.rounds += 1
            time.sleep(0.01)

    def served_since(self, rounds: int, timeout: float = 20) -> None:
        """Wait until the canary completes more rounds than ``rounds``."""
        wait_until(lambda: self.rounds > rounds or self.errors, timeout, "the canary to be served")
        assert not self.errors, self.errors

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.store.close()


@pytest.fixture
def server() -> Iterator[StoreServerProcess]:
    with StoreServerProcess(token=TOKEN, handshake_timeout=HANDSHAKE_TIMEOUT) as process:
        yield process


@pytest.fixture
def canary(server: StoreServerProcess) -> Iterator[Canary]:
    bird = Canary(server.port)
    try:
        bird.served_since(10)
        yield bird
    finally:
        bird.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=10)


def _send_bulk(sock: socket.socket, data: bytes) -> None:
    """Send what the server will take; it may close the connection before the end."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Read until the server closes the connection; whether it did within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_store_serves_its_clients_in_bounded_memory_through_every_hostile_peer(
    server: StoreServerProcess, canary: Canary, record: Callable[..., None]
) -> None:
    """Random bytes, oversized length headers, half frames, 200 idle connections and wrong
    tokens, one wave after another: each hostile connection is refused or dropped (the
    silent ones after the handshake deadline), the canary is served throughout, and the
    server's peak RSS grows by less than MEMORY_BOUND_KIB."""
    port = server.port
    before = server.ask("memory")
    waves: dict[str, float] = {}

    with _sockets() as opened:
        # Random bytes instead of a greeting, or after it: refused at once, without
        # buffering what follows (50 x 4 MiB would show in the server's memory).
        started = time.monotonic()
        for greeting in (b"", PREFIX):
            for _ in range(25):
                sock = _connect(port)
                opened.append(sock)
                _send_bulk(sock, greeting + os.urandom(BULK))
        assert all(_closed_by_peer(s, 10) for s in opened[-50:])
        waves["random_bytes"] = time.monotonic() - started
        canary.served_since(canary.rounds)

        # A greeting, then a length header of 4 GiB (over the 1 KiB allowed before the
        # handshake) and 4 MiB of body: an error reply and a closed connection.
        started = time.monotonic()
        for _ in range(50):
            sock = _connect(port)
            opened.append(sock)
            _send_bulk(sock, PREFIX + struct.pack(">IBH", 0xFFFFFFFF, 1, 0) + bytes(BULK))
        assert all(_closed_by_peer(s, 10) for s in opened[-50:])
        waves["oversized_headers"] = time.monotonic() - started
        canary.served_since(canary.rounds)

        # Half a frame, then silence: dropped at the handshake deadline.
        started = time.monotonic()
        for _ in range(50):
            sock = _connect(port)
            opened.append(sock)
            sock.sendall(PREFIX + struct.pack(">IBH", 1000, 64, 1) + b"\x00" * 400)
        assert all(_closed_by_peer(s, HANDSHAKE_TIMEOUT + 10) for s in opened[-50:])
        waves["half_frames"] = time.monotonic() - started
        canary.served_since(canary.rounds)

        # 200 connections that say nothing: held until the handshake deadline, then
        # dropped; the canary is served while they are open.
        started = time.monotonic()
        idle = [_connect(port) for _ in range(IDLE_CONNECTIONS)]
        opened.extend(idle)
        counts = [0]

        def accepted_all() -> bool:
            counts.append(server.ask("connections")["connections"])
            return counts[-1] >= IDLE_CONNECTIONS

        wait_until(accepted_all, HANDSHAKE_TIMEOUT - 0.5, "the server to accept them all")
        held = max(counts)
        canary.served_since(canary.rounds)
        assert all(_closed_by_peer(s, HANDSHAKE_TIMEOUT + 10) for s in idle)
        waves["idle_connections"] = time.monotonic() - started
        assert held >= IDLE_CONNECTIONS

        # Clients with the wrong token are refused, and tell their user why.
        started = time.monotonic()
        for _ in range(50):
            with pytest.raises(StoreAuthenticationError):
                TCPStore(LOOPBACK, port, timeout=timedelta(seconds=10), auth_token="wrong")
        waves["wrong_token"] = time.monotonic() - started
        canary.served_since(canary.rounds)

    left = wait_until(
        lambda: server.ask("connections")["connections"] <= 2, 20, "hostile connections to go"
    )
    after = server.ask("memory")
    growth = after["VmHWM"] - before["VmRSS"]
    assert not canary.errors, canary.errors
    assert growth < MEMORY_BOUND_KIB, (before, after)
    record(
        rss_before_kib=before["VmRSS"],
        peak_rss_kib=after["VmHWM"],
        rss_after_kib=after["VmRSS"],
        peak_growth_kib=growth,
        connections_held=held,
        canary_rounds=canary.rounds,
        canary_slowest_s=canary.slowest,
        connections_gone_after_s=left,
        **{f"{wave}_s": seconds for wave, seconds in waves.items()},
    )
