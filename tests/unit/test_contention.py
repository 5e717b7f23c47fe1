"""The etcd stores' compare-and-swap loop: paced while it loses, bounded by the store timeout."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from rdzv.store.base import StoreTimeoutError
from rdzv.store.contention import Contention


def test_a_loop_that_keeps_losing_ends_with_a_timeout_that_says_why() -> None:
    contention = Contention("add to key 'k'", timedelta(seconds=0.3))
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match=r"add to key 'k' within 0.3 s.*compare-and-swap"):
        while True:
            contention.lost()
    # It gave up at the timeout, not before (the pauses grow but stay below 0.05 s).
    assert time.monotonic() - started >= 0.3 - 0.05
