"""The rendezvous benchmark scenarios, each driven from the parent process.

A scenario runs once per repeat on fresh worker processes and a fresh run id,
and returns a :class:`RunResult`. Times are seconds on the monotonic clock from
the moment the measured phase starts (all nodes released together) to the last
node's completion; traffic is what the nodes' backends counted in that phase.

- ``first``: N nodes call ``next_rendezvous`` together, min = max = N.
- ``failure``: after a round of N (min = N-1, max = N, short keep-alive), one
  node stops its heartbeats for good; the survivors poll ``num_nodes_waiting()``
  as torchrun's agent does and re-rendezvous when it is above 0, until they
  complete a round of N-1.
- ``scaleup``: after a round of N-1 (min = N-1, max = N), one more node arrives;
  the others poll as above until all N complete a round.
- ``steady``: N nodes after a round, keep-alives running, each polling
  ``num_nodes_waiting()`` every few seconds; backend traffic per second.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness import CellConfig, Workers, add_counts, split

SCENARIOS = ("first", "failure", "scaleup", "steady")


@dataclass(frozen=True)
class Options:
    """Scenario settings (the command line's, see rendezvous.py)."""

    poll: float = 0.25
    """Seconds between an agent's ``num_nodes_waiting()`` calls in failure and scaleup."""
    failure_interval: float = 1.0
    failure_attempts: int = 3
    failure_last_call: float = 0.1
    failure_wait: float = 30.0
    """Seconds the survivors poll before the failure run counts as not finished."""
    scaleup_last_call: float = 1.0
    scaleup_wait: float = 30.0
    steady_interval: float = 5.0
    steady_duration: float = 30.0
    steady_poll: float = 5.0
    nodes_per_worker: int = 64
    max_workers: int = 4
    torch_store_sharing: bool = True
    switch_interval: float | None = None
    """The workers' GIL switch interval in seconds (``None``: Python's 0.005)."""
    start_lead: float = 0.5
    """Seconds between sending an operation and the moment nodes are released."""


@dataclass
class RunResult:
    """One repeat of one cell."""

    ok: bool = False
    finished: bool = True
    seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    stuck: list[dict[str, Any]] = field(default_factory=list)
    """Of a run that did not finish: the nodes still running, as :func:`harness.stuck_nodes`
    gives them (at most :data:`STUCK_KEPT`)."""


STUCK_KEPT = 32
STUCK_GROUPS = 6
"""Groups of stuck nodes (where they are blocked, what they saw) that a note names."""


def stuck_summary(stuck: list[dict[str, Any]]) -> str:
    """The stuck nodes in a line: how many are blocked where, having seen what."""
    groups = Counter(
        (entry["stack"][-1] if entry["stack"] else "?", _seen(entry.get("seen"))) for entry in stuck
    )
    top = groups.most_common(STUCK_GROUPS)
    rest = len(stuck) - sum(count for _, count in top)
    line = "; ".join(f"{count} in {where}{seen}" for (where, seen), count in top)
    return line + (f"; {rest} elsewhere" if rest else "")


def _seen(seen: dict[str, Any] | None) -> str:
    if seen is None:
        return ""
    flags = [
        k
        for k in ("complete", "closed", "is_participant", "is_waiting", "has_heartbeat")
        if seen[k]
    ]
    return (
        f" (saw round {seen['round']}, {seen['participants']} participants, "
        f"{seen['wait_list']} waiting{', ' if flags else ''}{', '.join(flags)})"
    )


def worker_count(n: int, options: Options) -> int:
    """``min(max_workers, ceil(n / nodes_per_worker))`` processes, at least one."""
    return max(1, min(options.max_workers, math.ceil(n / options.nodes_per_worker)))


@dataclass
class Run:
    """What a scenario needs to drive one run: its workers, endpoint and deadline."""

    impl: str
    backend: str
    n: int
    endpoint: str
    workers: Workers
    limit: float
    """Seconds each phase may take."""
    options: Options
    slices: list[list[int]] = field(default_factory=list)
    phase: str = "measured phase"
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limit

    def start_phase(self, name: str) -> None:
        """A new phase: its own ``limit`` seconds from now."""
        self.phase = name
        self.deadline = time.monotonic() + self.limit

    def config(self, min_nodes: int, max_nodes: int, **settings: Any) -> CellConfig:
        return CellConfig(
            impl=self.impl,
            backend=self.backend,
            endpoint=self.endpoint,
            run_id=f"bench-{uuid.uuid4().hex[:8]}",
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            join_timeout=self.limit,
            torch_store_sharing=self.options.torch_store_sharing,
            **settings,
        )

    def setup(self, config: CellConfig) -> None:
        self.slices = split(self.n, self.workers.count)
        args = [{"config": config, "indices": s} for s in self.slices]
        self.workers.call("setup", args, self.deadline)

    def release_time(self) -> float:
        return time.monotonic() + self.options.start_lead

    def each(self, op: str, **args: Any) -> Phase:
        """Run ``op`` on every worker with the same arguments; merge the replies."""
        return Phase.merge(self.workers.broadcast(op, args, self.deadline))

    def join(self, indices: list[int] | None = None) -> Phase:
        """The chosen nodes (default all) call ``next_rendezvous`` together."""
        at = self.release_time()
        if indices is None:
            return self.each("join", at=at)
        wanted = set(indices)
        args = [{"at": at, "indices": [i for i in s if i in wanted]} for s in self.slices]
        return Phase.merge(self.workers.call("join", args, self.deadline), at)


@dataclass
class Phase:
    """The merged replies of the workers to one operation."""

    nodes: dict[int, dict[str, Any]]
    counts: dict[str, Any]
    at: float | None = None

    @classmethod
    def merge(cls, replies: list[dict[str, Any]], at: float | None = None) -> Phase:
        nodes: dict[int, dict[str, Any]] = {}
        counts: dict[str, Any] = {}
        for reply in replies:
            nodes.update(reply["nodes"])
            counts = add_counts(counts, reply["counts"])
        return cls(nodes, counts, at)

    def errors(self) -> list[str]:
        return [f"node {i}: {r['error']}" for i, r in sorted(self.nodes.items()) if "error" in r]

    def check_round(self, world: int, indices: list[int]) -> str:
        """Why nodes ``indices`` do not form one round of ``world`` ranks ("" when they do)."""
        errors = self.errors()
        if errors:
            return f"{len(errors)} node(s) failed, {errors[0]}"
        results = [self.nodes[i] for i in indices]
        if any(r.get("done") is None for r in results):
            return "not every node completed"
        ranks = Counter(r["rank"] for r in results)
        rounds = Counter(r["round"] for r in results)
        worlds = Counter(r["world"] for r in results)
        if sorted(ranks) != list(range(world)) or set(worlds) != {world} or len(rounds) != 1:
            missing = sorted(set(range(world)) - set(ranks))
            doubled = sorted(rank for rank, count in ranks.items() if count > 1)
            return (
                f"inconsistent round of {len(results)} nodes: world sizes {dict(worlds)}, "
                f"rounds {dict(rounds)}, ranks missing {missing[:5]}, ranks given twice "
                f"{doubled[:5]}"
            )
        return ""

    def median(self, key: str, indices: list[int], since: float) -> float | None:
        """Seconds from ``since`` to the median ``key`` time of ``indices`` that have one: the
        typical node, where :meth:`last` is the slowest."""
        present = sorted(v for i in indices if (v := self.nodes[i].get(key)) is not None)
        return present[len(present) // 2] - since if present else None

    def last(self, key: str, indices: list[int], since: float) -> float | None:
        """Seconds from ``since`` to the last ``key`` time of ``indices``; None if one has none."""
        values: list[float | None] = [self.nodes[i].get(key) for i in indices]
        present = [v for v in values if v is not None]
        if not present or len(present) < len(values):
            return None
        return max(present) - since


def first(run: Run) -> RunResult:
    """N nodes call ``next_rendezvous`` together: seconds until all have their ranks."""
    run.setup(run.config(run.n, run.n))
    at = run.release_time()
    phase = run.each("join", at=at)
    everyone = list(range(run.n))
    problem = phase.check_round(run.n, everyone)
    return RunResult(
        ok=not problem,
        seconds=phase.last("done", everyone, at),
        counts=phase.counts,
        note=problem,
    )


def _agents_phase(
    run: Run, victims: list[int], newcomers: list[int], world: int, wait: float
) -> tuple[Phase, float]:
    at = run.release_time()
    phase = run.each(
        "agents",
        at=at,
        poll=run.options.poll,
        limit=wait,
        victims=victims,
        newcomers=newcomers,
        world=world,
    )
    return phase, at


def failure(run: Run) -> RunResult:
    """One of N nodes dies after a round; seconds until the survivors complete a round of N-1."""
    o = run.options
    config = run.config(
        run.n - 1,
        run.n,
        keep_alive_interval=o.failure_interval,
        keep_alive_max_attempt=o.failure_attempts,
        last_call=o.failure_last_call,
    )
    run.start_phase("first round")
    run.setup(config)
    # As agents: with min = N-1 and a 0.1 s last call, a node that comes late to a
    # thousand-node round waits for the next one, which its peers start when they see it.
    everyone = list(range(run.n))
    setup, _ = _agents_phase(run, [], everyone, run.n, o.failure_wait)
    problem = setup.check_round(run.n, everyone)
    if problem:
        return RunResult(note=f"first round: {problem}")
    run.start_phase("measured phase")
    victim = run.n - 1
    survivors = list(range(run.n - 1))
    phase, at = _agents_phase(run, [victim], [], run.n - 1, o.failure_wait)
    extra = {
        "target": config.heartbeat_expiry + 1.0,
        "seen": phase.last("seen", survivors, at),
        "seen_median": phase.median("seen", survivors, at),
        "done_median": phase.median("done", survivors, at),
        "rounds": _rounds(setup, phase, survivors),
    }
    never = [i for i in survivors if phase.nodes[i].get("seen") is None]
    if never and not phase.errors():
        return RunResult(
            finished=False,
            extra=extra,
            counts=phase.counts,
            note=f"{len(never)} of {len(survivors)} survivors never saw num_nodes_waiting() > 0 "
            f"in {o.failure_wait:g} s",
        )
    problem = phase.check_round(run.n - 1, survivors)
    return RunResult(
        ok=not problem,
        seconds=phase.last("done", survivors, at),
        extra=extra,
        counts=phase.counts,
        note=problem,
    )


def scaleup(run: Run) -> RunResult:
    """A node arrives after a round of N-1: seconds until the others see it, and until all N run."""
    o = run.options
    run.start_phase("first round")
    run.setup(run.config(run.n - 1, run.n, last_call=o.scaleup_last_call))
    old = list(range(run.n - 1))
    setup = run.join(old)
    problem = setup.check_round(run.n - 1, old)
    if problem:
        return RunResult(note=f"first round: {problem}")
    run.start_phase("measured phase")
    newcomer = run.n - 1
    phase, at = _agents_phase(run, [], [newcomer], run.n, o.scaleup_wait)
    everyone = list(range(run.n))
    extra = {"seen": phase.last("seen", old, at), "rounds": _rounds(setup, phase, old)}
    never = [i for i in old if phase.nodes[i].get("seen") is None]
    if never and not phase.errors():
        return RunResult(
            finished=False,
            extra=extra,
            counts=phase.counts,
            note=f"{len(never)} of {len(old)} nodes never saw num_nodes_waiting() > 0 "
            f"in {o.scaleup_wait:g} s",
        )
    problem = phase.check_round(run.n, everyone)
    return RunResult(
        ok=not problem,
        seconds=phase.last("done", everyone, at),
        extra=extra,
        counts=phase.counts,
        note=problem,
    )


def steady(run: Run) -> RunResult:
    """N nodes in a complete round for a while: backend traffic per second."""
    o = run.options
    run.start_phase("first round")
    run.setup(run.config(run.n, run.n, keep_alive_interval=o.steady_interval))
    everyone = list(range(run.n))
    setup = run.each("join", at=run.release_time())
    problem = setup.check_round(run.n, everyone)
    if problem:
        return RunResult(note=f"first round: {problem}")
    run.start_phase("measured phase")
    at = run.release_time()
    phase = run.each("steady", at=at, duration=o.steady_duration, poll=o.steady_poll)
    saw = sum(r.get("saw_waiting", 0) for r in phase.nodes.values())
    errors = phase.errors()
    seconds = o.steady_duration
    counts = phase.counts
    return RunResult(
        ok=not errors,
        seconds=seconds,
        extra={
            "requests_per_second": counts["requests"] / seconds,
            "writes_per_second": counts["writes"] / seconds,
            "bytes_written_per_second": counts["bytes_written"] / seconds,
            "bytes_read_per_second": counts["bytes_read"] / seconds,
            "polls_seeing_waiting": saw,
        },
        counts=counts,
        note=errors[0] if errors else "",
    )


def _rounds(setup: Phase, phase: Phase, indices: list[int]) -> int | None:
    """Rounds the agents went through after the setup round (1 when one re-rendezvous did)."""
    start = {setup.nodes[i]["round"] for i in indices if "round" in setup.nodes.get(i, {})}
    end = {phase.nodes[i]["round"] for i in indices if "round" in phase.nodes[i]}
    if len(start) != 1 or not end:
        return None
    return int(max(end)) - int(start.pop())


RUNNERS: dict[str, Callable[[Run], RunResult]] = {
    "first": first,
    "failure": failure,
    "scaleup": scaleup,
    "steady": steady,
}
