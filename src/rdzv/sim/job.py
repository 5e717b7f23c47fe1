"""A simulated job: what runs (:class:`Scenario`), what goes wrong (:class:`Faults`), and
what a run did (:class:`Result`)."""

from __future__ import annotations

from datetime import timedelta

import attrs

from rdzv.core import RendezvousSettings, RendezvousTimeout, pacing
from rdzv.sim.backend import Traffic
from rdzv.sim.network import JITTERY, Host, Latency

__all__ = ["EPOCH", "Faults", "Result", "Scenario"]

EPOCH = 1_800_000_000.0
"""True time 0 of a simulation, in seconds since the Unix epoch."""


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
    stalls: tuple[tuple[float, float], ...] = ()
    """(time, seconds): the backend applies nothing (a frozen process, a stalled disk);
    requests wait, and are applied in order once it resumes."""
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

        A dead node is dropped after the expiry (and the skew, and the backend's lag as
        the nodes saw it: gone an expiry after the faults, but for slow nodes'); the
        survivors see it within a poll; a round forms within a patience, a hold and its
        last call.
        Twice that, for a cascade (a node that arrives while a round forms makes the
        next one), and the join deadline of a node that waits in a round that
        cannot complete.
        """
        s = self.settings
        slowest = max((seconds for _, seconds in self.faults.slow), default=0.0)
        one = (
            2 * s.heartbeat_expiry
            + 2 * slowest
            + 2 * self.max_skew
            + self.poll
            + self.interval
            + pacing.PATIENCE
            + self.last_call
            + self.reconnect_window
        )
        return 3 * one + 10


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
    """Given up on by the caller's ``stop`` (see :meth:`rdzv.sim.world.World.run`)
    before it ended."""
    false_deaths: int = 0
    """Running nodes that a write dropped while their heartbeat on the board was younger
    than the expiry (counted by :mod:`rdzv.sim.world` at each write)."""
