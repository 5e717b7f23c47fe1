"""A deterministic simulator of rdzv's rendezvous: the real protocol, in virtual time.

Many nodes run in one thread on a virtual clock against a simulated backend with
compare-and-set, change notification and a latency model (and, optionally, a host
whose CPUs the nodes share); every node runs the
real core (:mod:`rdzv.core.protocol`) and the shell's own ``perform``. A seed
draws a whole run (its job, its faults, every delay and random draw), so a seed
replays one run exactly; each run is checked for safety after every write and for
liveness at its end (:mod:`rdzv.sim.checks`).

    python -m rdzv.sim --seeds 1000           # hunt: random jobs of up to 64 nodes
    python -m rdzv.sim --seed 1234 --trace    # replay one, with its trace

:func:`random_scenario` draws a job and its faults from a seed (one seed in eight
also shares two cores between the nodes, and one in eight gives up to three nodes
round trips of up to half the expiry, and one in eight stalls the backend);
:func:`check_seed` runs it.
``benchmarks/simulate.py`` runs large jobs for planning, the ``failure`` one as
:func:`failure_scenario` builds it (so do the cost tests).
"""

from __future__ import annotations

import random

import attrs

from rdzv.sim.job import EPOCH, Faults, Result, Scenario
from rdzv.sim.network import ETCD, JITTERY, TCP_STORE, Host, Latency
from rdzv.sim.world import World

__all__ = [
    "EPOCH",
    "ETCD",
    "JITTERY",
    "TCP_STORE",
    "Faults",
    "Host",
    "Latency",
    "Result",
    "Scenario",
    "World",
    "check_seed",
    "failure_scenario",
    "random_scenario",
]


def failure_scenario(
    nodes: int,
    crash: float,
    latency: Latency,
    segment_records: int,
    arrival: float = 0.1,
    host: Host | None = None,
) -> Scenario:
    """The ``failure`` benchmark as a job: a round of ``nodes`` (min one fewer), keep-alive
    1 s x 3, last call 0.1 s, launchers polling every 0.25 s; node ``nodes // 2`` dies at
    ``crash``, the rest re-form."""
    return Scenario(
        nodes=nodes,
        min_nodes=nodes - 1,
        max_nodes=nodes,
        interval=1.0,
        attempts=3,
        last_call=0.1,
        poll=0.25,
        latency=latency,
        segment_records=segment_records,
        arrival=arrival,
        join_timeout=3600.0,
        reconnect_window=60.0,
        faults=Faults(until=crash + 0.01, crashes=((nodes // 2, crash),)),
        host=host,
    )


def random_scenario(seed: int, max_nodes: int = 64) -> Scenario:
    """A job and its faults, drawn from ``seed``: mostly small jobs, every fault kind."""
    rng = random.Random(f"scenario-{seed}")
    n = int(2 + (max_nodes - 1) * rng.random() ** 3)
    n = min(n, max_nodes)
    interval = rng.choice([0.5, 1.0, 2.0])
    attempts = rng.choice([2, 3])
    expiry = interval * attempts
    until = rng.uniform(3, 25)
    window = rng.choice([1.0, 3.0, 5.0])
    late = tuple(sorted(rng.uniform(0.5, until) for _ in range(rng.choice([0, 0, 1, 3]))))
    total = n + len(late)
    nodes = list(range(total))

    def pick(k: int) -> list[int]:
        return rng.sample(nodes, min(k, total))

    crashes = tuple((i, rng.uniform(0, until)) for i in pick(rng.randint(0, max(total // 4, 0))))
    pauses = []
    for i in pick(rng.choice([0, 0, 1, 2, 4])):
        start = rng.uniform(0, until)
        pauses.append((i, start, min(expiry * rng.uniform(0.3, 3.0), max(until - start, 0.01))))
    max_skew = rng.choice([0.0, 0.0, 0.01, 0.1 * interval])
    faults = Faults(
        until=until,
        crashes=crashes,
        pauses=tuple(pauses),
        # A slow node: its round trip to the backend up to a fifth of an interval (the
        # protocol assumes round trips well below the interval).
        slow=tuple((i, rng.uniform(0.01, 0.1) * interval) for i in pick(rng.choice([0, 0, 1, 3]))),
        skew=tuple((i, rng.uniform(-max_skew, max_skew)) for i in nodes) if max_skew else (),
        join_timeouts=tuple((i, rng.uniform(0.5, 6)) for i in pick(rng.choice([0, 0, 1, 3]))),
        outages=tuple(
            (rng.uniform(0, until), rng.uniform(0.05, 1.5 * window))
            for _ in range(rng.choice([0, 0, 1, 2]))
        ),
        lost_replies=rng.choice([0.0, 0.0, 0.01, 0.05]),
        shell_failures=rng.choice([0.0, 0.0, 0.05, 0.2]),
        close_at=rng.uniform(0, until) if rng.random() < 0.1 else None,
    )
    # Enough nodes stay for a round, mostly: then liveness has something to check.
    doomed = {i for i, _ in faults.crashes} | {i for i, _ in faults.join_timeouts}
    min_nodes = rng.randint(1, max(1, total - len(doomed)))
    scenario = Scenario(
        nodes=n,
        min_nodes=min_nodes,
        max_nodes=rng.randint(min_nodes, total + 2),
        interval=interval,
        attempts=attempts,
        last_call=rng.choice([0.05, 0.3, 1.0, 3.0]),
        poll=rng.choice([0.1, 0.5, 1.0]),
        arrival=rng.uniform(0, 3),
        late=late,
        latency=rng.choice([JITTERY, JITTERY, ETCD, TCP_STORE]),
        segment_records=rng.choice([2, 4, 8, 64]),
        reconnect_window=window,
        faults=faults,
        max_skew=max_skew,
    )
    scenario = attrs.evolve(scenario, host=_loaded_host(seed, scenario))
    scenario = attrs.evolve(scenario, faults=_far_nodes(seed, scenario))
    return attrs.evolve(scenario, faults=_stalls(seed, scenario))


def _stalls(seed: int, job: Scenario) -> Faults:
    """One seed in eight: the backend stalls once or twice, for half an expiry to three
    (a frozen etcd, a stalled disk): nothing is applied meanwhile, nor answered. Drawn
    apart from the job, which is the same with or without them."""
    draw = random.Random(f"stall-{seed}")
    if draw.random() >= 0.125:
        return job.faults
    expiry = job.interval * job.attempts
    until = job.faults.until
    stalls = []
    for _ in range(draw.choice([1, 2])):
        start = draw.uniform(0, until)
        stalls.append((start, min(expiry * draw.uniform(0.5, 3.0), max(until - start, 0.01))))
    return attrs.evolve(job.faults, stalls=tuple(sorted(stalls)))


def _far_nodes(seed: int, job: Scenario) -> Faults:
    """One seed in eight: up to three nodes so far from the backend that a round trip takes
    up to the expiry less the interval, and half the expiry (a slow link, a loaded
    etcd), where the other slow nodes' round trips stay under a fifth of an interval.
    Heartbeats land late, and readings age on the way back: a node whose board and log
    reads outlasted the expiry less the interval never joined (19ff1db). Half as far
    while a join sent its own heartbeats between its steps: a node whose round trips
    took a third of the expiry beat too seldom to stay in a round then (seeds 124 and
    300163). Drawn apart from the job, which is the same with or without them."""
    far = random.Random(f"far-{seed}")
    if far.random() >= 0.125:
        return job.faults
    expiry = job.interval * job.attempts
    reach = min(expiry - job.interval, expiry / 2)
    chosen = far.sample(range(job.total_nodes), min(far.choice([1, 2, 3]), job.total_nodes))
    slow = dict(job.faults.slow) | {i: far.uniform(0.1, 1) * reach / 2 for i in chosen}
    return attrs.evolve(job.faults, slow=tuple(sorted(slow.items())))


def _loaded_host(seed: int, job: Scenario) -> Host | None:
    """One seed in eight: the nodes share two cores, each step taking the CPU time that
    keeps the host half to nine tenths busy while the nodes are at rest (a heartbeat
    and its answer, and two steps a poll, per interval). Heartbeats, readings and
    decisions come late, but the host keeps up. Drawn apart from the job, which is
    the same with or without it."""
    load = random.Random(f"host-{seed}")
    if load.random() >= 0.125:
        return None
    steps = job.total_nodes * (2 / job.interval + 2 / job.poll)  # a second, at rest
    return Host(cores=2, step=2 * load.uniform(0.5, 0.9) / steps)


def check_seed(seed: int, max_nodes: int = 64) -> tuple[Scenario, Result]:
    """Run the job that ``seed`` draws; the result lists its violations (none: sound)."""
    scenario = random_scenario(seed, max_nodes)
    return scenario, World(scenario, seed).run()
