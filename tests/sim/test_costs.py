"""What a join costs at scale, counted in the simulator (ideal network, no faults).

Figures of time are for the benchmarks; these are counts that must not grow with
the square of the node count, which would take a large job down long before the
network does.
"""

from __future__ import annotations

from rdzv.sim import TCP_STORE, Scenario, World


def test_nodes_arriving_together_do_not_each_read_the_whole_intent_log() -> None:
    """400 nodes arriving within 0.4 s, min = max = 400. Reading the log is for the
    node that admits: if every pending node read it to find out who admits first,
    each would read a few hundred records, and a job of 4,096 nodes millions."""
    n = 400
    job = Scenario(
        nodes=n,
        min_nodes=n,
        max_nodes=n,
        interval=5.0,
        latency=TCP_STORE,
        segment_records=1500,
        arrival=0.4,
        join_timeout=600.0,
    )
    result = World(job, seed=1).run()
    assert not result.violations
    assert len(result.done_at) == n
    per_node = result.traffic.records_read / n
    assert per_node < 20, f"each node read {per_node:.0f} intent log records on average"
