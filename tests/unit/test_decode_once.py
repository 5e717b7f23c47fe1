"""The shell decodes a state once per process, however many nodes read it at once."""

from __future__ import annotations

import threading
import time

import pytest

from rdzv.api import RendezvousStateError
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
    monkeypatch.setattr(perform, "_recent", perform._Recent())
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
    monkeypatch.setattr(perform, "_recent", perform._Recent())
    for round_ in range(10):
        perform.decode_once(encode_state(RendezvousState(round=round_)))
    assert len(perform._recent.states) == perform._RECENT


def test_a_decode_never_waits_for_the_decode_of_another_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thousand threads queued on one lock behind a slow decode, each then waiting for
    the GIL while holding it, stalled nodes for 38 s at 4,096 nodes: nothing that waits
    for a decode may wait for anything else."""
    real = perform.decode_state
    first = encode_state(RendezvousState(round=1))
    release = threading.Event()

    def decode(data: bytes) -> RendezvousState:
        if data == first:
            release.wait(10)
        return real(data)

    monkeypatch.setattr(perform, "decode_state", decode)
    monkeypatch.setattr(perform, "_recent", perform._Recent())
    slow = threading.Thread(target=perform.decode_once, args=(first,))
    slow.start()
    try:
        time.sleep(0.05)
        other: list[RendezvousState] = []
        reader = threading.Thread(
            target=lambda: other.append(perform.decode_once(encode_state(RendezvousState(round=2))))
        )
        reader.start()
        reader.join(2)
        assert [s.round for s in other] == [2]
    finally:
        release.set()
        slow.join(10)


def test_a_decode_that_fails_fails_for_every_reader_and_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []

    def broken(data: bytes) -> RendezvousState:
        calls.append(data)
        time.sleep(0.05)
        raise RendezvousStateError("not a state")

    monkeypatch.setattr(perform, "decode_state", broken)
    monkeypatch.setattr(perform, "_recent", perform._Recent())
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def read() -> None:
        start.wait()
        try:
            perform.decode_once(b"garbage")
        except RendezvousStateError as e:
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 8
    with pytest.raises(RendezvousStateError):
        perform.decode_once(b"garbage")
    assert len(calls) >= 2  # nothing failed is kept: the next read decodes again
    assert perform._recent.states == {}
