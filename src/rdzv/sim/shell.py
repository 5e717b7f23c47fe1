"""The simulated shell of every node: a launcher's loop and the handler's keep-alive.

As torchrun's agent does, a launcher calls ``next_rendezvous()``, then polls
``num_nodes_waiting()`` and rendezvous again when it is above 0; the keep-alive
beats beside it, as the shell's does on a backend with a heartbeat board, timed
by the same pure rules (:mod:`rdzv.core.pacing`). An :class:`Engine` (the
:class:`~rdzv.sim.world.World`) runs their operations, delivers their timers and
models everything else.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from rdzv.core import num_nodes_waiting, pacing, protocol
from rdzv.core.effects import Fail, Failure, Finish, Outcome, Started
from rdzv.sim.checks import Checker
from rdzv.sim.job import Scenario
from rdzv.sim.node import Node, Operation

__all__ = ["Engine", "Shell"]


class Engine(Protocol):
    """What the shell needs of the simulation that runs it."""

    now: float
    scenario: Scenario
    checker: Checker
    rng: random.Random

    def clock(self, node: Node) -> float:
        """``node``'s reading of the time."""

    def on_node(
        self, node: Node, when: float, fn: Callable[..., None], *args: Any, records: int = 0
    ) -> None:
        """Call ``fn(*args)`` at ``when`` in ``node``'s process."""

    def start_op(
        self,
        node: Node,
        progress: protocol.Progress,
        on_end: Callable[[Operation, Finish | Fail], None],
    ) -> Operation:
        """Run an operation on ``node``; ``on_end`` gets how it ended."""

    def advance(self, node: Node, run: Operation, outcome: Outcome) -> None:
        """Step ``run`` with ``outcome``."""

    def faulty(self) -> bool:
        """Whether faults may still happen."""

    def note(self, node: Node, text: str) -> None:
        """Add a line to the trace."""


class Shell:
    """The launchers and keep-alives of a world's nodes."""

    def __init__(self, world: Engine) -> None:
        self.world = world
        self.scenario = world.scenario
        self.checker = world.checker
        self.rng = world.rng
        self.done_at: dict[int, float] = {}
        self.last_done_at: dict[int, float] = {}

    @property
    def now(self) -> float:
        return self.world.now

    # -- the launcher --------------------------------------------------------------

    def admitted(self, node: Node) -> None:
        """A read or write first showed ``node`` in the state: the shell's executor nudges
        the keep-alive (``Heartbeats.nudge``), which times its next beat by that."""
        if node.beating and node.beat_run is None:
            self._set_beat_timer(node, self.now)

    def start(self, node: Node) -> None:
        """The node's process starts: its launcher joins."""
        node.started = True
        self._join(node)

    def _join(self, node: Node) -> None:
        # The heartbeats go on beside the join, as the shell's do on a backend with a
        # board (the simulated one has one); a first join starts them.
        node.join_since = self.world.clock(node)
        self._start_beats(node)
        if node.beat_run is None:
            self._set_beat_timer(node, self.now)  # Heartbeats.joining nudges
        node.joining = True
        self.checker.node_joins(node.desc, self.now)
        deadline = self.world.clock(node) + node.settings.timeout.join.total_seconds()
        progress = protocol.join(deadline, leaving=node.joined)
        node.run = self.world.start_op(
            node, progress, lambda run, end: self._joined(node, run, end)
        )

    def _joined(self, node: Node, run: Operation, end: Finish | Fail) -> None:
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
        if self.world.faulty() and self.rng.random() < self.scenario.faults.shell_failures:
            self.world.note(node, "SHELL FAILURE: leaves, then joins again")
            node.beating = False
            deadline = self.world.clock(node) + 5.0
            leave = protocol.leave(deadline)
            node.run = self.world.start_op(node, leave, lambda run, _: self._left(node, run))
            return
        if not node.beating:
            self._start_beats(node)
        elif node.beat_run is None:
            self._set_beat_timer(node, self.now)  # Heartbeats.joined re-times the beats
        # A launcher polls at its own phase, not in step with the others.
        self.world.on_node(
            node, self.now + self.scenario.poll * self.rng.random(), self._poll, node
        )

    def _left(self, node: Node, run: Operation) -> None:
        self.checker.node_ended(node.desc, self.now, graceful=not run.gave_up)
        self.world.on_node(node, self.now + self.rng.uniform(0, 1), self._join, node)

    def _exit(self, node: Node, *, graceful: bool, ended: bool) -> None:
        node.exited = True
        node.beating = False
        if ended:
            self.checker.node_ended(node.desc, self.now, graceful=graceful)
        self.world.note(node, "EXIT" + ("" if graceful else " (could not leave)"))

    def _poll(self, node: Node) -> None:
        if node.exited or node.joining:
            return
        self.world.start_op(node, protocol.read(), lambda _, end: self._polled(node, end))

    def _polled(self, node: Node, end: Finish | Fail) -> None:
        if isinstance(end, Finish):
            if end.state.closed:
                self._exit(node, graceful=True, ended=False)
                return
            if num_nodes_waiting(end.state, node.desc, node.joined) > 0:
                self._join(node)
                return
        self.world.on_node(node, self.now + self.scenario.poll, self._poll, node)

    # -- the keep-alive ------------------------------------------------------------

    def _heartbeat_delay(self, node: Node) -> float:
        interval = self.scenario.interval
        due = self._due(node)
        last = None if due is None else due - interval
        return pacing.heartbeat_delay(last, self.world.clock(node), interval)

    def _due(self, node: Node) -> float | None:
        return pacing.beat_due(
            node.memory.last_heartbeat(node.desc),
            node.join_since,
            node.knows_itself(),
            node.settings.heartbeat_expiry,
            self.scenario.interval,
        )

    def _start_beats(self, node: Node) -> None:
        """Heartbeats from now on, unless they run already (Heartbeats.start)."""
        if node.beating:
            return
        node.beating = True
        first = pacing.first_heartbeat(self._heartbeat_delay(node), self.rng.random())
        self._set_beat_timer(node, self.now + first)

    def _set_beat_timer(self, node: Node, when: float) -> None:
        node.beat_timer += 1
        self.world.on_node(node, when, self._beat, node, node.beat_timer)

    def _beat(self, node: Node, timer: int) -> None:
        if not node.beating or node.exited or timer != node.beat_timer:
            return
        known = node.knows_itself() or node.join_since is not None
        if known:
            due = self._due(node)
            early = 0.0 if due is None else due - self.world.clock(node)
            if early > 0:
                self._set_beat_timer(node, self.now + early)  # not due yet: see admitted()
                return
        deadline = self.world.clock(node) + node.settings.timeout.heartbeat.total_seconds()
        progress = protocol.keep_alive(deadline, known=known)
        run = node.beat_run = Operation(progress, lambda _, end: self._beaten(node, end, known))
        self.world.advance(node, run, Started())

    def _beaten(self, node: Node, end: Finish | Fail, known: bool) -> None:
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
