"""The shell decodes a state once per process, however many nodes read it at once."""

from __future__ import annotations

import threading
import time

import pytest

from rdzv.core import RendezvousState, encode_state
from rdzv.core.model import NodeDesc
from rdzv.dynamic import perform


def test_nodes_woken_by_the_same_write_decode_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    real = perform.decode_state
    calls: list[bytes] = []

    def slow_decode(data: bytes) -> RendezvousState:
        calls.append(data)
        time.sleep(0.05)  # long enough for every thread to arrive while it runs
        return real(data)

    monkeypatch.setattr(perform, "decode_state", slow_decode)
    monkeypatch.setattr(perform, "_recent", {})
    node = NodeDesc("host", 1, 0)
    data = encode_state(RendezvousState(participants={node: 0}, last_heartbeats={node: 1.0}))
    results: list[RendezvousState] = []
    start = threading.Barrier(16)

    def read() -> None:
        start.wait()
        results.append(perform.decode_once(bytes(data)))  # a copy, as each read brings

    threads = [threading.Thread(target=read) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert len(results) == 16 and all(r is results[0] for r in results)
    assert set(results[0].participants) == {node}


def test_only_the_last_few_states_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perform, "_recent", {})
    for round_ in range(10):
        perform.decode_once(encode_state(RendezvousState(round=round_)))
    assert len(perform._recent) == perform._RECENT
