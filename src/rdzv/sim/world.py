"""The simulation: many nodes in one thread, on a virtual clock, against a simulated backend.

Every node runs the real protocol (:func:`rdzv.core.protocol.step`) and the
shell's own :func:`rdzv.dynamic.perform.perform`; only time, the network and the
backend's server are simulated. Each node runs a launcher's loop with the
handler's keep-alive beside it (:mod:`rdzv.sim.shell`); the world runs their
operations, the network and the server, and the faults.

One seed draws everything (the scenario's faults, every network delay, every
random draw a node makes), so a seed replays one run exactly. Faults: crashes,
pauses past the heartbeat expiry, slow nodes, backend outages, replies lost after
the request was applied, clock skew, join timeouts, failures after a join (the
node leaves and joins again), and closing the rendezvous at any time. A
:class:`~rdzv.sim.network.Host` makes the nodes share a few CPUs: every step then
waits for one, as on a benchmark's machine running a thousand nodes.
"""

from __future__ import annotations

import collections
import heapq
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from rdzv.core import (
    NodeDesc,
    RendezvousState,
    encode_state,
    protocol,
)
from rdzv.core.effects import (
    BeatsRead,
    Changed,
    CompareAndSet,
    Effect,
    Fail,
    Finish,
    LogRead,
    Outcome,
    Post,
    ReadBeats,
    ReadLog,
    ReadState,
    Sleep,
    Slept,
    Started,
    Unreachable,
    WaitForChange,
    WriteBeat,
    Written,
)
from rdzv.core.intents import decode_beat, merge_heartbeats
from rdzv.core.liveness import drop_dead_nodes
from rdzv.core.progress import leaving
from rdzv.dynamic.perform import STATE_CODEC, StateCodec, perform, snapshot_of
from rdzv.sim.backend import SimBackend
from rdzv.sim.checks import Checker, converged
from rdzv.sim.job import EPOCH, Result, Scenario
from rdzv.sim.network import Cores, Server
from rdzv.sim.node import Node, Operation
from rdzv.sim.sharing import SharedStates
from rdzv.sim.shell import Shell
from rdzv.sim.trace import describe

__all__ = ["World"]

_RECORD = 64
"""Bytes a small request or answer moves: a heartbeat, an intent, a heartbeat record."""


class World:
    """One simulated run. ``run()`` plays it and returns the :class:`Result`."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        *,
        shared: SharedStates | None = None,
        trace_lines: int = 400,
    ) -> None:
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        # The real codec by default: every node decodes its own copy, as a real one does.
        self.codec: StateCodec = STATE_CODEC if shared is None else shared.codec
        size_of: Callable[[RendezvousState], int] = (
            (lambda state: len(encode_state(state))) if shared is None else shared.size_of
        )
        self.backend = SimBackend(
            segment_records=scenario.segment_records,
            reconnect_window=scenario.reconnect_window,
            size=len if shared is None else shared.size,
            stored=None if shared is None else shared.keep_stored,
        )
        self.server = Server(scenario.latency)
        self.cores = None if scenario.host is None else Cores(scenario.host)
        self.settings = scenario.settings
        self.checker = Checker(self.settings, scenario.max_skew, size_of, epoch=EPOCH)
        self._watchers: dict[int, tuple[Node, Operation, WaitForChange]] = {}
        self._watch_ids = 0
        self.steps = 0
        self._trace: collections.deque[tuple[float, int, str]] = collections.deque(
            maxlen=trace_lines
        )
        self.unchecked = False
        self.false_deaths = 0
        self.nodes = [self._make_node(i) for i in range(scenario.total_nodes)]
        self.shell = Shell(self)
        self._closer = Node(-1, NodeDesc("rdzv-close@sim", 1, 0), self.settings, 0.0, 0.0)

    # -- setup ---------------------------------------------------------------------

    def _make_node(self, index: int) -> Node:
        f = self.scenario.faults
        skew = dict(f.skew).get(index, 0.0)
        timeout = dict(f.join_timeouts).get(index)
        settings = self.settings
        if timeout is not None:
            settings = attrs.evolve(
                settings, timeout=attrs.evolve(settings.timeout, join=timedelta(seconds=timeout))
            )
        desc = NodeDesc(f"node{index:05d}", 1000 + index, 0)
        return Node(index, desc, settings, skew, dict(f.slow).get(index, 0.0))

    def _at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (max(when, self.now), self._seq, fn, args))

    def on_node(
        self, node: Node, when: float, fn: Callable[..., None], *args: Any, records: int = 0
    ) -> None:
        """An event of ``node``'s process: nothing if it crashed, later if it is paused.
        ``records``: what the answer it handles carries, each parsed at a CPU cost."""
        self._at(when, self._node_event, node, fn, args, False, records)

    def _node_event(
        self,
        node: Node,
        fn: Callable[..., None],
        args: tuple[Any, ...],
        ran: bool = False,
        records: int = 0,
    ) -> None:
        """``ran``: the step has had its CPU time, and runs unless its process died or
        stopped meanwhile."""
        if node.crashed:
            return
        if node.paused_until > self.now:
            self._at(node.paused_until, self._node_event, node, fn, args, ran, records)
            return
        if self.cores is not None and not ran:
            # The step runs once a core has run it: it sees the time it ends.
            done = self.cores.schedule(self.now, records)
            self._at(done, self._node_event, node, fn, args, True)
            return
        fn(*args)

    def clock(self, node: Node) -> float:
        """``node``'s reading of the time (seconds since the epoch)."""
        return EPOCH + self.now + node.skew

    # -- running -------------------------------------------------------------------

    def run(self, at_least: float = 0.0, stop: Callable[[], bool] | None = None) -> Result:
        """Play the run; whether the nodes are at rest is checked from the moment the
        faults stop and every node has started (or ``at_least``, if later).

        ``stop`` is asked every ten thousand events whether to give up (a benchmark's
        budget of wall time: the world itself reads no clock); a run given up is
        :attr:`Result.stopped`, and its liveness is not judged.
        """
        s, f = self.scenario, self.scenario.faults
        starts = [self.rng.uniform(0, s.arrival) for _ in range(s.nodes)] + list(s.late)
        for node, start in zip(self.nodes, starts, strict=True):
            self.on_node(node, start, self.shell.start, node)
        for index, when in f.crashes:
            self._at(when, self._crash, self.nodes[index])
        for index, when, seconds in f.pauses:
            self._at(when, self._pause, self.nodes[index], seconds)
        if f.close_at is not None:
            self._at(f.close_at, self._close)
        for when, _ in f.outages:
            self._at(when, self._outage)
        for when, seconds in f.stalls:
            self._at(when, self._stall, seconds)
        quiet = max(f.until, *starts, at_least)
        end = quiet + s.liveness_bound()
        converged_at: float | None = None
        check_at = quiet
        stopped = False
        events = 0
        while True:
            events += 1
            if stop is not None and events % 10_000 == 0 and stop():
                stopped = True
                break
            when = self._events[0][0] if self._events else end
            if min(when, end) >= check_at:
                self.now = check_at
                if self._at_rest():
                    converged_at = check_at - quiet
                    break
                check_at += 0.25
                continue
            if when > end or not self._events:
                break
            when, _, fn, args = heapq.heappop(self._events)
            self.now = when
            fn(*args)
        violations = list(self.checker.violations)
        if converged_at is None and not stopped:
            violations.append(
                f"liveness: the live nodes were not at rest {s.liveness_bound():.1f} s after the "
                f"faults stopped at {quiet:.1f} s"
            )
        return Result(
            tuple(violations),
            converged_at,
            self.steps,
            self.checker.rounds_completed,
            self.backend.traffic,
            self.unchecked,
            self.format_trace(),
            dict(self.shell.done_at),
            dict(self.shell.last_done_at),
            self.now,
            stopped,
            self.false_deaths,
        )

    def _at_rest(self) -> bool:
        live = [n for n in self.nodes if not n.crashed and not n.exited]
        if any(not n.started for n in live):
            return False
        value = self.backend.value
        state = RendezvousState() if value is None else self.codec.decode(value)
        now = EPOCH + self.now
        beats = {}
        for node in live:
            beat = decode_beat(self.backend.beats.get(str(node.desc)))
            if beat is not None:
                beats[node.desc] = beat
        view, _ = drop_dead_nodes(merge_heartbeats(state, beats), self.settings, now)
        if len(live) < self.settings.min_nodes and not view.closed:
            self.unchecked = True  # too few nodes left for any round: nothing to reach
            return True
        return converged(view, ((n.desc, n.joined, n.joining) for n in live), self.settings)

    # -- faults --------------------------------------------------------------------

    def _crash(self, node: Node) -> None:
        if node.crashed or node.exited:
            return
        node.crashed = True
        if node.started:
            self.checker.node_ended(node.desc, self.now, graceful=False)
        self.note(node, "CRASH")

    def _pause(self, node: Node, seconds: float) -> None:
        if node.crashed:
            return
        node.paused_until = max(node.paused_until, self.now + seconds)
        self.note(node, f"PAUSE {seconds:.2f} s")

    def _outage(self) -> None:
        """The backend goes down: every watch breaks."""
        watchers, self._watchers = self._watchers, {}
        for node, run, _ in watchers.values():
            self._reply(node, run, Unreachable("simulated: the backend went down"), lost=True)

    def _stall(self, seconds: float) -> None:
        """The backend applies nothing for ``seconds``: what arrives waits in its queue."""
        self.server.free_at = max(self.server.free_at, self.now + seconds)

    def _in_outage(self) -> bool:
        return any(t <= self.now < t + d for t, d in self.scenario.faults.outages)

    def faulty(self) -> bool:
        return self.now < self.scenario.faults.until

    # -- operations ----------------------------------------------------------------

    def start_op(
        self,
        node: Node,
        progress: protocol.Progress,
        on_end: Callable[[Operation, Finish | Fail], None],
    ) -> Operation:
        run = Operation(progress, on_end)
        self.advance(node, run, Started())
        return run

    def advance(self, node: Node, run: Operation, outcome: Outcome) -> None:
        now = self.clock(node)
        lag = node.memory.lag(now, node.settings.heartbeat_expiry)
        ctx = protocol.Context(
            node.desc,
            node.settings,
            now,
            self.rng.random(),
            True,
            True,
            self.scenario.reconnect_window,
            node.memory.observed,
            node.memory.checked,
            lag,
        )
        result = protocol.step(run.progress, outcome, ctx)
        self.steps += 1
        run.progress = result.progress
        if any(e.kind == "leave_failed" for e in result.events):
            run.gave_up = True
        effect = result.effect
        run.effect = effect
        self._trace.append((self.now, node.index, describe(effect, outcome)))
        if isinstance(effect, Finish | Fail):
            run.on_end(run, effect)
            return
        # A write decided on a board read knows the heartbeats as of the asking (the
        # node's clock, made true time here), and the core judges them so
        # (rdzv.core.protocol): the checker dates it there, but never more than an
        # expiry back, so that a reading kept too long shows as a ghost; the backend's
        # lag as the node saw it, by which the core judges heartbeats earlier, goes along.
        run.lag = ctx.heartbeat_lag
        decided = self.now
        asked = run.progress.board_asked
        if asked is not None:
            decided = max(asked - EPOCH - node.skew, self.now - node.settings.heartbeat_expiry)
        if not isinstance(effect, Sleep | WaitForChange):
            run.issued = self.now
        self._issue(node, run, effect, decided)

    def _deliver(self, node: Node, run: Operation, outcome: Outcome) -> None:
        if run.issued is not None:
            node.memory.took(self.clock(node), self.now - run.issued)
            run.issued = None
        if run.effect is not None:
            known = node.knows_itself()
            node.memory.update(node.desc, run.effect, outcome)
            if not known and node.knows_itself():
                self.shell.admitted(node)
        self.advance(node, run, outcome)

    def _issue(self, node: Node, run: Operation, effect: Effect, decided: float) -> None:
        if isinstance(effect, Sleep):
            self.on_node(node, effect.until - EPOCH - node.skew, self._deliver, node, run, Slept())
            return
        up = self.scenario.latency.network(self.rng) + node.slow
        handler = self._watch if isinstance(effect, WaitForChange) else self._arrive
        self._at(self.now + up, handler, node, run, effect, decided)

    def _reply(self, node: Node, run: Operation, outcome: Outcome, *, lost: bool = False) -> None:
        down = self.scenario.latency.network(self.rng) + node.slow
        if lost:
            # The node waits for a reply that never comes, then sees an error.
            outcome = Unreachable("simulated: the reply was lost")
            down += self.rng.uniform(0.05, 1.0)
        records = _records(outcome)
        self.on_node(node, self.now + down, self._deliver, node, run, outcome, records=records)

    def _arrive(self, node: Node, run: Operation, effect: Effect, decided: float) -> None:
        if self._in_outage():
            self._reply(node, run, Unreachable("simulated: the backend is down"), lost=True)
            return
        write = isinstance(effect, CompareAndSet | Post | WriteBeat)
        done = self.server.schedule(self.now, write=write, payload=self._payload(effect))
        self._at(done, self._apply, node, run, effect, decided)

    def _payload(self, effect: Effect) -> int:
        """The bytes the server moves for ``effect``: the stored state for a state read or
        write, every record asked for a log or board read, a small record otherwise."""
        if isinstance(effect, ReadState | CompareAndSet):
            return self.backend.size(self.backend.value or b"")
        if isinstance(effect, ReadLog):
            return self.backend.log_bytes(effect.cursor)
        if isinstance(effect, ReadBeats):
            return _RECORD * len(effect.nodes)
        return _RECORD

    def _apply(self, node: Node, run: Operation, effect: Effect, decided: float) -> None:
        if isinstance(effect, CompareAndSet) and any(
            t <= self.now < t + d for t, d in self.scenario.faults.lost_writes
        ):
            current = snapshot_of(self.backend.get_state(), self.codec)
            self._reply(node, run, Written(current, False))
            return
        before = self.backend.value
        outcome = perform(
            effect, self.backend, node.desc, node.settings, self.codec, node.memory.last
        )
        if isinstance(outcome, Written) and outcome.written and isinstance(effect, CompareAndSet):
            self.checker.written(effect.state, self.now, decided, run.lag)
            self._count_false_deaths(before, effect.state)
            self._notify()
        lost = self.faulty() and self.rng.random() < self.scenario.faults.lost_replies
        self._reply(node, run, outcome, lost=lost)

    def _count_false_deaths(self, before: bytes | None, after: RendezvousState) -> None:
        """Count the members a write dropped that were running and had a heartbeat on the
        board younger than the expiry: dropped for lateness that was not theirs."""
        if before is None or not self.backend.beats:
            return
        gone = self.codec.decode(before).members() - after.members()
        if not gone:
            return
        expired_before = EPOCH + self.now - self.settings.heartbeat_expiry
        for index in range(len(self.nodes)):
            node = self.nodes[index]
            if node.desc not in gone or node.crashed or node.exited:
                continue
            if node.run is not None and leaving(node.run.progress):
                continue  # it took itself out
            beat = decode_beat(self.backend.beats.get(str(node.desc)))
            if beat is not None and beat - node.skew >= expired_before:
                self.false_deaths += 1
                self.note(node, "DROPPED ALIVE")

    def _watch(self, node: Node, run: Operation, effect: WaitForChange, decided: float) -> None:
        if self._in_outage():
            self._reply(node, run, Unreachable("simulated: the backend is down"), lost=True)
            return
        if self.backend.token != effect.token:
            self._send_state(node, run)
            return
        self._watch_ids += 1
        key = self._watch_ids
        self._watchers[key] = (node, run, effect)
        self._at(effect.until - EPOCH - node.skew, self._watch_timeout, key)

    def _watch_timeout(self, key: int) -> None:
        watcher = self._watchers.pop(key, None)
        if watcher is not None:
            node, run, _ = watcher
            self._reply(node, run, Changed(None))

    def _notify(self) -> None:
        watchers, self._watchers = self._watchers, {}
        for node, run, _ in watchers.values():
            self._send_state(node, run)

    def _send_state(self, node: Node, run: Operation) -> None:
        size = self.backend.size(self.backend.value or b"")
        self.backend.traffic.bytes_read += size
        done = self.server.schedule(self.now, write=False, payload=size)
        self._at(done, self._send_now, node, run)

    def _send_now(self, node: Node, run: Operation) -> None:
        result = self.backend.get_state()
        self.backend.traffic.requests -= 1  # a notification, not a request
        self._reply(node, run, Changed(snapshot_of(result, self.codec)))

    def _close(self) -> None:
        closer = self._closer
        deadline = self.clock(closer) + 10.0
        self.note(closer, "CLOSE")
        self.start_op(closer, protocol.close(deadline), lambda _, __: None)

    # -- the trace -----------------------------------------------------------------

    def note(self, node: Node, text: str) -> None:
        self._trace.append((self.now, node.index, text))

    def format_trace(self) -> str:
        return "\n".join(f"{t:10.4f} n{i:<4} {text}" for t, i, text in self._trace)


def _records(outcome: Outcome) -> int:
    """The records an answer carries, which the node parses one by one."""
    if isinstance(outcome, LogRead):
        return len(outcome.records)
    if isinstance(outcome, BeatsRead):
        return len(outcome.beats)
    return 0
