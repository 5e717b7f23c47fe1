"""Functions run in other OS processes by the TCP and file store tests (spawned, so importable)."""

from __future__ import annotations

import time
from datetime import timedelta

from rdzv.store.base import Store
from rdzv.store.file import FileStore
from rdzv.store.tcp import TCPStore


def _tcp(port: int, token: str | None = None) -> TCPStore:
    return TCPStore("127.0.0.1", port, timeout=timedelta(seconds=30), auth_token=token)


def _file(path: str) -> FileStore:
    return FileStore(path, timeout=timedelta(seconds=30))


def _set_after(store: Store, key: str, value: bytes, delay: float) -> float:
    with store:
        time.sleep(delay)
        store.set(key, value)
        return time.time()


def _add_many(store: Store, key: str, times: int) -> list[int]:
    with store:
        store.wait(["go"])
        return [store.add(key, 1) for _ in range(times)]


def tcp_set_after(port: int, key: str, value: bytes, delay: float) -> float:
    """Sleep ``delay`` seconds, set ``key``; return the wall-clock time of the set."""
    return _set_after(_tcp(port), key, value, delay)


def tcp_add_many(port: int, key: str, times: int) -> list[int]:
    """Once ``go`` is set, add 1 to ``key`` ``times`` times; return what ``add`` returned."""
    return _add_many(_tcp(port), key, times)


def file_set_after(path: str, key: str, value: bytes, delay: float) -> float:
    """As :func:`tcp_set_after`, on a file store."""
    return _set_after(_file(path), key, value, delay)


def file_add_many(path: str, key: str, times: int) -> list[int]:
    """As :func:`tcp_add_many`, on a file store."""
    return _add_many(_file(path), key, times)
