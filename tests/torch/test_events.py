"""torch's rendezvous events: the plug-in records what torch's own handler records.

Each scenario runs twice in this process, on torch's ``c10d`` rendezvous and on
the plug-in's ``rdzv-c10d``, with a torchelastic event handler installed on
torch's ``dynamic_rendezvous`` destination, as a launcher installs one. Both
streams are then compared: the handler's events node by node, and the changes
that took effect (those a successful sync followed) over all nodes, since
rdzv's steward may record a change for another node.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _torchrun import free_port
from torch.distributed.elastic import events as torch_events
from torch.distributed.elastic.events import handlers as torch_event_handlers
from torch.distributed.elastic.events.api import NodeState, RdzvEvent
from torch.distributed.elastic.rendezvous import api as torch_api
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler

import rdzv.torch_plugin  # noqa: F401 - registers rdzv-c10d with torch's registry

HANDLER = "dynamic_rendezvous.py:DynamicRendezvousHandler."
EXECUTOR = "dynamic_rendezvous.py:_DistributedRendezvousOpExecutor."


class Destination(logging.Handler):
    """A torchelastic event handler that keeps the rendezvous events it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[RdzvEvent] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(RdzvEvent.deserialize(record.getMessage()))

    def of(self, run_id: str) -> list[RdzvEvent]:
        return [e for e in list(self.events) if e.run_id == run_id]


class Broken(logging.Handler):
    """A torchelastic event handler that fails on every event."""

    def handle(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("the event sink is down")


@contextlib.contextmanager
def installed(handler: logging.Handler, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``handler`` on torch's ``dynamic_rendezvous`` destination, where torch looks for it."""
    monkeypatch.setitem(torch_event_handlers._log_handlers, "dynamic_rendezvous", handler)
    logger = torch_events._get_or_create_logger("dynamic_rendezvous")
    logger.addHandler(handler)  # if the logger was made before, with torch's NullHandler
    try:
        yield
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def destination(monkeypatch: pytest.MonkeyPatch) -> Iterator[Destination]:
    collector = Destination()
    with installed(collector, monkeypatch):
        yield collector


def handlers(backend: str, count: int, min_nodes: int, max_nodes: int, **options: str) -> list[Any]:
    """``count`` handlers of one new run through torch's registry (the plug-in for rdzv-*)."""
    endpoint = f"127.0.0.1:{free_port()}"
    run_id = f"events-{uuid.uuid4().hex[:8]}"
    return [
        get_rendezvous_handler(
            torch_api.RendezvousParameters(
                backend, endpoint, run_id, min_nodes, max_nodes, local_addr="127.0.0.1", **options
            )
        )
        for _ in range(count)
    ]


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Each call in a thread of its own; what each returned or raised, in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def by_node(events: list[RdzvEvent]) -> list[list[RdzvEvent]]:
    """The events of each node, in order. torch's c10d backend records one more, that
    this process hosts the store (``c10d_rendezvous_backend.py``), which is no node's."""
    nodes: dict[tuple[str, int, int | None], list[RdzvEvent]] = {}
    for event in events:
        if event.name.startswith("dynamic_rendezvous.py:"):
            nodes.setdefault((event.hostname, event.pid, event.local_id), []).append(event)
    return list(nodes.values())


def handler_moments(events: list[RdzvEvent]) -> list[tuple[str, str, bool]]:
    """The handler's events of one node: name, state, whether it has a rank. A run of
    heartbeats counts as one (their number depends on timing)."""
    out: list[tuple[str, str, bool]] = []
    for e in events:
        if e.name.startswith(HANDLER):
            moment = (e.name.removeprefix(HANDLER), e.node_state.value, e.rank is not None)
            if not (out and out[-1] == moment and moment[0] == "_keep_alive"):
                out.append(moment)
    return out


def changes_made(events: list[RdzvEvent]) -> Counter[tuple[str, str]]:
    """The changes to the state that took effect: those a successful sync followed."""
    made: Counter[tuple[str, str]] = Counter()
    for node in by_node(events):
        pending: list[tuple[str, str]] = []
        for e in node:
            name = e.name.removeprefix(EXECUTOR)
            if name == "run":
                if "successfully synced" in e.message:
                    made.update(pending)
                pending = []
            elif e.name.startswith(EXECUTOR) and name != "_keep_alive":
                pending.append((name, e.node_state.value))
    return made


def wait_for_heartbeats(destination: Destination, run_id: str, nodes: int) -> None:
    """Until each of ``nodes`` nodes has recorded a heartbeat sent."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        beats = {
            e.local_id
            for e in destination.of(run_id)
            if e.name == HANDLER + "_keep_alive" and e.node_state is NodeState.RUNNING
        }
        if len(beats) >= nodes:
            return
        time.sleep(0.05)
    raise AssertionError(f"not every node of {run_id} recorded a heartbeat")


def two_nodes_meet_beat_and_shut_down(destination: Destination, backend: str) -> list[RdzvEvent]:
    nodes = handlers(backend, 2, 2, 2, keep_alive_interval="1", join_timeout="30")
    run_id = nodes[0].get_run_id()
    infos = at_once([node.next_rendezvous for node in nodes])
    assert sorted(info.rank for info in infos) == [0, 1], infos
    wait_for_heartbeats(destination, run_id, 2)
    for node in nodes:
        assert node.shutdown() is True
    return destination.of(run_id)


def test_a_round_and_its_close_are_recorded_as_torch_records_them(
    destination: Destination,
) -> None:
    torch_stream = two_nodes_meet_beat_and_shut_down(destination, "c10d")
    rdzv_stream = two_nodes_meet_beat_and_shut_down(destination, "rdzv-c10d")

    expected = [
        ("next_rendezvous", "RUNNING", False),
        ("next_rendezvous", "RUNNING", True),
        ("_keep_alive", "RUNNING", False),
        ("_close", "SUCCEEDED", False),
    ]
    for stream in (torch_stream, rdzv_stream):
        assert [handler_moments(node) for node in by_node(stream)] == [expected] * 2, stream
    # A node of torch's may mark a closed rendezvous closed again (from its cached state,
    # writing the same bytes, which torch counts as synced): compare which changes took
    # effect, and how many nodes were added.
    made = changes_made(rdzv_stream)
    assert made == {
        ("_add_to_participants", "RUNNING"): 2,
        ("_mark_rendezvous_complete", "SUCCEEDED"): 1,
        ("_mark_rendezvous_closed", "SUCCEEDED"): 1,
    }
    assert set(made) == set(changes_made(torch_stream))
    assert changes_made(torch_stream)[("_add_to_participants", "RUNNING")] == 2
    ranks = sorted(e.rank for e in rdzv_stream if e.rank is not None)
    assert ranks == sorted(e.rank for e in torch_stream if e.rank is not None) == [0, 1]
    for event in rdzv_stream:
        assert event.name.startswith("dynamic_rendezvous.py:")
        assert (event.hostname, event.master_endpoint, event.error_trace) == ("127.0.0.1", "", "")
        assert isinstance(event.local_id, int)


def test_a_join_that_times_out_is_recorded_as_torch_records_it(
    destination: Destination,
) -> None:
    streams = []
    for backend in ("c10d", "rdzv-c10d"):
        (node,) = handlers(backend, 1, 2, 2, join_timeout="1", keep_alive_interval="1")
        with pytest.raises(torch_api.RendezvousTimeoutError):
            node.next_rendezvous()
        node.shutdown()
        streams.append(destination.of(node.get_run_id()))
    torch_stream, rdzv_stream = streams

    for stream in streams:
        [moments] = [handler_moments(node) for node in by_node(stream)]
        assert moments == [
            ("next_rendezvous", "RUNNING", False),
            ("next_rendezvous", "FAILED", False),
            ("_close", "SUCCEEDED", False),
        ], stream
        [failure] = [e for e in stream if e.node_state is NodeState.FAILED]
        assert failure.message.startswith("RendezvousTimeoutError")
        assert "Traceback" in failure.error_trace
    # torch's node adds itself to a round that cannot complete, then removes itself at the
    # deadline; rdzv's waits with a join intent and is never placed: the same net change.
    closed = ("_mark_rendezvous_closed", "SUCCEEDED")
    assert changes_made(rdzv_stream) == {closed: 1}
    assert changes_made(torch_stream) == {
        ("_add_to_participants", "RUNNING"): 1,
        ("_remove_from_participants", "RUNNING"): 1,
        closed: 1,
    }


def test_a_failing_event_handler_does_not_break_the_rendezvous(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with installed(Broken(), monkeypatch):
        nodes = handlers("rdzv-c10d", 2, 2, 2, last_call_timeout="0.1")
        with caplog.at_level(logging.WARNING, logger="rdzv.torch_events"):
            infos = at_once([node.next_rendezvous for node in nodes])
            assert sorted(info.rank for info in infos) == [0, 1], infos
            assert [node.shutdown() for node in nodes] == [True, True]
    warnings = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(warnings) == 2, caplog.text  # once per node, not once per event
