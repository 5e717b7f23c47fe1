"""The simulation: many nodes in one thread, on a virtual clock, against a simulated backend.

Every node runs the real protocol (:func:`rdzv.core.protocol.step`) and the
shell's own :func:`rdzv.dynamic.perform.perform`; only time, the network and the
backend's server are simulated. Each node runs a launcher's loop, as torchrun's
agent does: ``next_rendezvous()``, then poll ``num_nodes_waiting()`` and
rendezvous again when it is above 0, with the handler's keep-alive timer beside it.

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
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    encode_state,
    num_nodes_waiting,
    pacing,
    protocol,
)
from rdzv.core.effects import (
    BeatsRead,
    Changed,
    CompareAndSet,
    Effect,
    Fail,
    Failure,
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
from rdzv.dynamic.perform import STATE_CODEC, Memory, StateCodec, perform, snapshot_of
from rdzv.sim.backend import SimBackend, Traffic
from rdzv.sim.checks import Checker, converged
from rdzv.sim.network import JITTERY, Cores, Host, Latency, Server
from rdzv.sim.sharing import SharedStates

__all__ = ["EPOCH", "Faults", "Result", "Scenario", "World"]

EPOCH = 1_800_000_000.0
"""True time 0 of a simulation, in seconds since the Unix epoch."""

_RECORD = 64
"""Bytes a small request or answer moves: a heartbeat, an intent, a heartbeat record."""


@attrs.frozen
class Faults:
    """What goes wrong, and when; nothing goes wrong after ``until``.

    Node faults name nodes by index.
    """

    until: float = 0.0
    crashes: tuple[tuple[int, float], ...] = ()
    """(node, time): the process dies."""
    pauses: tuple[tuple[int, float, float], ...] = ()
    """(node, time, seconds): the process stops (SIGSTOP) and resumes."""
    slow: tuple[tuple[int, float], ...] = ()
    """(node, seconds): added to each way of each of its requests."""
    skew: tuple[tuple[int, float], ...] = ()
    """(node, seconds): its clock is that far ahead (behind, if negative)."""
    join_timeouts: tuple[tuple[int, float], ...] = ()
    """(node, seconds): its join_timeout, where it is short."""
    outages: tuple[tuple[float, float], ...] = ()
    """(time, seconds): the backend answers no request."""
    lost_replies: float = 0.0
    """Chance that a reply is lost after the request was applied."""
    lost_writes: tuple[tuple[float, float], ...] = ()
    """(time, seconds): every compare-and-set loses, as if another writer always won."""
    shell_failures: float = 0.0
    """Chance that a node fails right after a join (its bootstrap): it leaves, then joins again."""
    close_at: float | None = None
    """When an operator closes the rendezvous (``rdzv close``)."""


@attrs.frozen
class Scenario:
    """One simulated job."""

    nodes: int
    min_nodes: int
    max_nodes: int
    interval: float = 1.0
    attempts: int = 3
    last_call: float = 0.5
    join_timeout: float = 120.0
    poll: float = 0.5
    """The launcher's ``num_nodes_waiting()`` interval."""
    arrival: float = 0.2
    """Nodes start within this many seconds."""
    late: tuple[float, ...] = ()
    """Start times of nodes beyond ``nodes`` that arrive late."""
    latency: Latency = JITTERY
    segment_records: int = 8
    reconnect_window: float = 5.0
    faults: Faults = Faults()
    max_skew: float = 0.0
    host: Host | None = None
    """The CPUs the nodes share; ``None``: a node's own work takes no time."""

    @property
    def settings(self) -> RendezvousSettings:
        return RendezvousSettings(
            "sim",
            self.min_nodes,
            self.max_nodes,
            timeout=RendezvousTimeout(
                join=self.join_timeout, last_call=self.last_call, close=10, heartbeat=5
            ),
            keep_alive_interval=timedelta(seconds=self.interval),
            keep_alive_max_attempt=self.attempts,
        )

    @property
    def total_nodes(self) -> int:
        return self.nodes + len(self.late)

    def liveness_bound(self) -> float:
        """Seconds after the faults stop within which every live node must be at rest.

        A dead node is dropped after the expiry (and the skew); the survivors see it
        within a poll; a round forms within a patience, a hold and its last call.
        Twice that, for a cascade (a node that arrives while a round forms makes the
        next one), and the join deadline of a node that waits in a round that
        cannot complete.
        """
        s = self.settings
        one = (
            s.heartbeat_expiry
            + 2 * self.max_skew
            + self.poll
            + self.interval
            + pacing.PATIENCE
            + self.last_call
            + self.reconnect_window
        )
        return 3 * one + 10


@attrs.define
class _Run:
    """One operation in flight on a node."""

    progress: protocol.Progress
    on_end: Callable[[_Run, Finish | Fail], None]
    effect: Effect | None = None
    gave_up: bool = False
    """The operation could not take its node out in time (a ``leave_failed`` event)."""


@attrs.define
class _Node:
    index: int
    desc: NodeDesc
    settings: RendezvousSettings
    skew: float
    slow: float
    memory: Memory = attrs.field(factory=Memory)
    joined: int | None = None
    started: bool = False
    crashed: bool = False
    exited: bool = False
    paused_until: float = 0.0
    joining: bool = False
    beating: bool = False
    beat_run: _Run | None = None
    beat_timer: int = 0
    """Numbers the node's heartbeat timers: a timer set again supersedes the last."""
    join_since: float | None = None
    """When its join under way started, by its clock (``None``: not joining)."""
    run: _Run | None = None
    """Its join, or its leave, in flight."""


@attrs.frozen
class Result:
    """What a run did and whether it was sound."""

    violations: tuple[str, ...]
    converged_at: float | None
    """Seconds after the faults stopped when every live node was at rest (``None``: never)."""
    steps: int
    rounds: int
    traffic: Traffic
    unchecked: bool
    """Too few live nodes were left for any round: liveness had nothing to check."""
    trace: str
    done_at: dict[int, float]
    """Node index -> true time its first join returned a rank."""
    last_done_at: dict[int, float]
    """Node index -> true time its last join returned a rank."""
    ended_at: float
    """True time when the run stopped."""
    stopped: bool = False
    """Given up on by the caller's ``stop`` (see :meth:`World.run`) before it ended."""
    false_deaths: int = 0
    """Running nodes that a write dropped while their heartbeat on the board was younger
    than the expiry (see :meth:`World._count_false_deaths`)."""


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
        self._watchers: dict[int, tuple[_Node, _Run, WaitForChange]] = {}
        self._watch_ids = 0
        self.steps = 0
        self._trace: collections.deque[tuple[float, int, str]] = collections.deque(
            maxlen=trace_lines
        )
        self.done_at: dict[int, float] = {}
        self.last_done_at: dict[int, float] = {}
        self.unchecked = False
        self.false_deaths = 0
        self.nodes = [self._make_node(i) for i in range(scenario.total_nodes)]
        self._closer = _Node(-1, NodeDesc("rdzv-close@sim", 1, 0), self.settings, 0.0, 0.0)

    # -- setup ---------------------------------------------------------------------

    def _make_node(self, index: int) -> _Node:
        f = self.scenario.faults
        skew = dict(f.skew).get(index, 0.0)
        timeout = dict(f.join_timeouts).get(index)
        settings = self.settings
        if timeout is not None:
            settings = attrs.evolve(
                settings, timeout=attrs.evolve(settings.timeout, join=timedelta(seconds=timeout))
            )
        desc = NodeDesc(f"node{index:05d}", 1000 + index, 0)
        return _Node(index, desc, settings, skew, dict(f.slow).get(index, 0.0))

    def _at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (max(when, self.now), self._seq, fn, args))

    def _on_node(
        self, node: _Node, when: float, fn: Callable[..., None], *args: Any, records: int = 0
    ) -> None:
        """An event of ``node``'s process: nothing if it crashed, later if it is paused.
        ``records``: what the answer it handles carries, each parsed at a CPU cost."""
        self._at(when, self._node_event, node, fn, args, False, records)

    def _node_event(
        self,
        node: _Node,
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

    def clock(self, node: _Node) -> float:
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
            self._on_node(node, start, self._start, node)
        for index, when in f.crashes:
            self._at(when, self._crash, self.nodes[index])
        for index, when, seconds in f.pauses:
            self._at(when, self._pause, self.nodes[index], seconds)
        if f.close_at is not None:
            self._at(f.close_at, self._close)
        for when, _ in f.outages:
            self._at(when, self._outage)
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
            dict(self.done_at),
            dict(self.last_done_at),
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

    def _crash(self, node: _Node) -> None:
        if node.crashed or node.exited:
            return
        node.crashed = True
        if node.started:
            self.checker.node_ended(node.desc, self.now, graceful=False)
        self._note(node, "CRASH")

    def _pause(self, node: _Node, seconds: float) -> None:
        if node.crashed:
            return
        node.paused_until = max(node.paused_until, self.now + seconds)
        self._note(node, f"PAUSE {seconds:.2f} s")

    def _outage(self) -> None:
        """The backend goes down: every watch breaks."""
        watchers, self._watchers = self._watchers, {}
        for node, run, _ in watchers.values():
            self._reply(node, run, Unreachable("simulated: the backend went down"), lost=True)

    def _in_outage(self) -> bool:
        return any(t <= self.now < t + d for t, d in self.scenario.faults.outages)

    def _faulty(self) -> bool:
        return self.now < self.scenario.faults.until

    # -- operations ----------------------------------------------------------------

    def _start_op(
        self,
        node: _Node,
        progress: protocol.Progress,
        on_end: Callable[[_Run, Finish | Fail], None],
    ) -> _Run:
        run = _Run(progress, on_end)
        self._advance(node, run, Started())
        return run

    def _advance(self, node: _Node, run: _Run, outcome: Outcome) -> None:
        ctx = protocol.Context(
            node.desc,
            node.settings,
            self.clock(node),
            self.rng.random(),
            True,
            True,
            self.scenario.reconnect_window,
            node.memory.observed,
            node.memory.checked,
        )
        result = protocol.step(run.progress, outcome, ctx)
        self.steps += 1
        run.progress = result.progress
        if any(e.kind == "leave_failed" for e in result.events):
            run.gave_up = True
        effect = result.effect
        run.effect = effect
        self._trace.append((self.now, node.index, _describe(effect, outcome)))
        if isinstance(effect, Finish | Fail):
            run.on_end(run, effect)
            return
        # A write decided on a board read knows the heartbeats as of the asking (the
        # node's clock, made true time here), and the core judges them so
        # (rdzv.core.protocol): the checker dates it there, but never more than an
        # expiry back, so that a reading kept too long shows as a ghost.
        decided = self.now
        asked = run.progress.board_asked
        if asked is not None:
            decided = max(asked - EPOCH - node.skew, self.now - node.settings.heartbeat_expiry)
        self._issue(node, run, effect, decided)

    def _deliver(self, node: _Node, run: _Run, outcome: Outcome) -> None:
        if run.effect is not None:
            known = self._knows(node)
            node.memory.update(node.desc, run.effect, outcome)
            if not known and self._knows(node) and node.beating and node.beat_run is None:
                # The shell's executor nudges the keep-alive (Heartbeats.nudge).
                self._set_beat_timer(node, self.now)
        self._advance(node, run, outcome)

    @staticmethod
    def _knows(node: _Node) -> bool:
        return node.desc in node.memory.last.state.last_heartbeats

    def _issue(self, node: _Node, run: _Run, effect: Effect, decided: float) -> None:
        if isinstance(effect, Sleep):
            self._on_node(node, effect.until - EPOCH - node.skew, self._deliver, node, run, Slept())
            return
        up = self.scenario.latency.network(self.rng) + node.slow
        handler = self._watch if isinstance(effect, WaitForChange) else self._arrive
        self._at(self.now + up, handler, node, run, effect, decided)

    def _reply(self, node: _Node, run: _Run, outcome: Outcome, *, lost: bool = False) -> None:
        down = self.scenario.latency.network(self.rng) + node.slow
        if lost:
            # The node waits for a reply that never comes, then sees an error.
            outcome = Unreachable("simulated: the reply was lost")
            down += self.rng.uniform(0.05, 1.0)
        records = _records(outcome)
        self._on_node(node, self.now + down, self._deliver, node, run, outcome, records=records)

    def _arrive(self, node: _Node, run: _Run, effect: Effect, decided: float) -> None:
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

    def _apply(self, node: _Node, run: _Run, effect: Effect, decided: float) -> None:
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
            self.checker.written(effect.state, self.now, decided)
            self._count_false_deaths(before, effect.state)
            self._notify()
        lost = self._faulty() and self.rng.random() < self.scenario.faults.lost_replies
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
                self._note(node, "DROPPED ALIVE")

    def _watch(self, node: _Node, run: _Run, effect: WaitForChange, decided: float) -> None:
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

    def _send_state(self, node: _Node, run: _Run) -> None:
        size = self.backend.size(self.backend.value or b"")
        self.backend.traffic.bytes_read += size
        done = self.server.schedule(self.now, write=False, payload=size)
        self._at(done, self._send_now, node, run)

    def _send_now(self, node: _Node, run: _Run) -> None:
        result = self.backend.get_state()
        self.backend.traffic.requests -= 1  # a notification, not a request
        self._reply(node, run, Changed(snapshot_of(result, self.codec)))

    # -- the launcher --------------------------------------------------------------

    def _start(self, node: _Node) -> None:
        node.started = True
        self._join(node)

    def _join(self, node: _Node) -> None:
        # The heartbeats go on beside the join, as the shell's do on a backend with a
        # board (the simulated one has one); a first join starts them.
        node.join_since = self.clock(node)
        self._start_beats(node)
        if node.beat_run is None:
            self._set_beat_timer(node, self.now)  # Heartbeats.joining nudges
        node.joining = True
        self.checker.node_joins(node.desc, self.now)
        deadline = self.clock(node) + node.settings.timeout.join.total_seconds()
        progress = protocol.join(deadline, leaving=node.joined)
        node.run = self._start_op(node, progress, lambda run, end: self._joined(node, run, end))

    def _joined(self, node: _Node, run: _Run, end: Finish | Fail) -> None:
        node.joining = False
        node.join_since = None
        if isinstance(end, Fail):
            node.beating = False
            # Unreachable: it could not withdraw; its intents expire as a dead node's.
            graceful = end.failure is not Failure.UNREACHABLE and not run.gave_up
            self._exit(node, graceful=graceful, ended=True)
            return
        view = end.state
        self.checker.ranked(node.desc, view.round, view.participants[node.desc], view.world_size)
        self.done_at.setdefault(node.index, self.now)
        self.last_done_at[node.index] = self.now
        node.joined = view.round
        if self._faulty() and self.rng.random() < self.scenario.faults.shell_failures:
            self._note(node, "SHELL FAILURE: leaves, then joins again")
            node.beating = False
            deadline = self.clock(node) + 5.0
            leave = protocol.leave(deadline)
            node.run = self._start_op(node, leave, lambda run, _: self._left(node, run))
            return
        if not node.beating:
            self._start_beats(node)
        elif node.beat_run is None:
            self._set_beat_timer(node, self.now)  # Heartbeats.joined re-times the beats
        # A launcher polls at its own phase, not in step with the others.
        self._on_node(node, self.now + self.scenario.poll * self.rng.random(), self._poll, node)

    def _left(self, node: _Node, run: _Run) -> None:
        self.checker.node_ended(node.desc, self.now, graceful=not run.gave_up)
        self._on_node(node, self.now + self.rng.uniform(0, 1), self._join, node)

    def _exit(self, node: _Node, *, graceful: bool, ended: bool) -> None:
        node.exited = True
        node.beating = False
        if ended:
            self.checker.node_ended(node.desc, self.now, graceful=graceful)
        self._note(node, "EXIT" + ("" if graceful else " (could not leave)"))

    def _poll(self, node: _Node) -> None:
        if node.exited or node.joining:
            return
        self._start_op(node, protocol.read(), lambda _, end: self._polled(node, end))

    def _polled(self, node: _Node, end: Finish | Fail) -> None:
        if isinstance(end, Finish):
            if end.state.closed:
                self._exit(node, graceful=True, ended=False)
                return
            if num_nodes_waiting(end.state, node.desc, node.joined) > 0:
                self._join(node)
                return
        self._on_node(node, self.now + self.scenario.poll, self._poll, node)

    def _heartbeat_delay(self, node: _Node) -> float:
        interval = self.scenario.interval
        due = self._due(node)
        last = None if due is None else due - interval
        return pacing.heartbeat_delay(last, self.clock(node), interval)

    def _due(self, node: _Node) -> float | None:
        return pacing.beat_due(
            node.memory.last_heartbeat(node.desc),
            node.join_since,
            self._knows(node),
            node.settings.heartbeat_expiry,
            self.scenario.interval,
        )

    def _start_beats(self, node: _Node) -> None:
        """Heartbeats from now on, unless they run already (Heartbeats.start)."""
        if node.beating:
            return
        node.beating = True
        delay = self._heartbeat_delay(node)
        self._set_beat_timer(node, self.now + pacing.first_heartbeat(delay, self.rng.random()))

    def _set_beat_timer(self, node: _Node, when: float) -> None:
        node.beat_timer += 1
        self._on_node(node, when, self._beat, node, node.beat_timer)

    def _beat(self, node: _Node, timer: int) -> None:
        if not node.beating or node.exited or timer != node.beat_timer:
            return
        known = self._knows(node) or node.join_since is not None
        if known:
            due = self._due(node)
            early = 0.0 if due is None else due - self.clock(node)
            if early > 0:
                self._set_beat_timer(node, self.now + early)  # not due yet: see _deliver
                return
        deadline = self.clock(node) + node.settings.timeout.heartbeat.total_seconds()
        progress = protocol.keep_alive(deadline, known=known)
        run = node.beat_run = _Run(progress, lambda _, end: self._beaten(node, end, known))
        self._advance(node, run, Started())

    def _beaten(self, node: _Node, end: Finish | Fail, known: bool) -> None:
        node.beat_run = None
        if not node.beating:
            return
        if isinstance(end, Fail):
            delay = pacing.heartbeat_retry(self.scenario.interval, self.rng.random())
        elif not known:
            delay = self.scenario.interval  # not in the state: nothing to keep alive
        else:
            delay = self._heartbeat_delay(node)
        self._set_beat_timer(node, self.now + delay)

    def _close(self) -> None:
        closer = self._closer
        deadline = self.clock(closer) + 10.0
        self._note(closer, "CLOSE")
        self._start_op(closer, protocol.close(deadline), lambda _, __: None)

    # -- the trace -----------------------------------------------------------------

    def _note(self, node: _Node, text: str) -> None:
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


def _describe(effect: Effect, outcome: Outcome) -> str:
    """One line: what came back, then what the node does next."""
    return f"{_outcome(outcome):<34} -> {_effect(effect)}"


def _state(state: RendezvousState) -> str:
    flags = ("complete " if state.complete else "") + ("CLOSED " if state.closed else "")
    return (
        f"r{state.round} {flags}p={len(state.participants)} w={len(state.wait_list)} "
        f"red={len(state.redundancy_list)} cur={state.intent_cursor}"
    )


def _effect(effect: Effect) -> str:
    if isinstance(effect, CompareAndSet):
        return f"CAS@{effect.token} [{_state(effect.state)}]"
    if isinstance(effect, Post):
        return f"POST {type(effect.record).__name__} @{effect.cursor}"
    if isinstance(effect, ReadLog):
        return f"READ LOG @{effect.cursor}"
    if isinstance(effect, WaitForChange):
        return f"WAIT @{effect.token} until {effect.until - EPOCH:.3f}"
    if isinstance(effect, Sleep):
        return f"SLEEP until {effect.until - EPOCH:.3f}"
    if isinstance(effect, WriteBeat):
        return "BEAT"
    if isinstance(effect, ReadBeats):
        return f"READ BEATS {len(effect.nodes)}"
    if isinstance(effect, ReadState):
        return "READ"
    if isinstance(effect, Finish):
        return f"FINISH [{_state(effect.state)}]"
    if isinstance(effect, Fail):
        return f"FAIL {effect.failure.name}"
    return type(effect).__name__


def _outcome(outcome: Outcome) -> str:
    snapshot = getattr(outcome, "snapshot", None)
    name = type(outcome).__name__
    if isinstance(outcome, Written):
        return f"{'written' if outcome.written else 'LOST'} @{getattr(snapshot, 'token', None)}"
    if snapshot is not None:
        return f"{name} @{snapshot.token} [{_state(snapshot.state)}]"
    if isinstance(outcome, Unreachable):
        return f"UNREACHABLE ({outcome.message})"
    return name
