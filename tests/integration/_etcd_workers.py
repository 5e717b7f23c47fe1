"""Functions run in other OS processes by the etcd integration tests (spawned, so importable)."""

from __future__ import annotations

import time
from datetime import timedelta

import etcd

from rdzv.store.etcd import EtcdStore


def _store(port: int, prefix: str) -> EtcdStore:
    return EtcdStore(etcd.Client(host="127.0.0.1", port=port), prefix, timedelta(seconds=30))


def set_after(port: int, prefix: str, key: str, value: bytes, delay: float) -> float:
    """Sleep ``delay`` seconds, set ``key``, and return the wall-clock time of the set."""
    store = _store(port, prefix)
    time.sleep(delay)
    store.set(key, value)
    return time.time()


def add_many(port: int, prefix: str, key: str, times: int) -> list[int]:
    """Add 1 to ``key`` ``times`` times; return every value ``add`` returned."""
    store = _store(port, prefix)
    store.wait(["go"])
    return [store.add(key, 1) for _ in range(times)]
