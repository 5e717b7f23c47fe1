"""etcd stops in the middle of a rendezvous, or while a round runs, and comes back."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from _faults import Node, Nodes, assert_one_round, participant_ids, state_reader, wait_until

from rdzv.etcd_server import EtcdServer

OUTAGE = 5.0


def _drive_like_a_launcher(
    nodes: list[Node], endpoint: str, timeout: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``next`` on every node as a launcher does, until all share one round.

    A node whose ``next`` fails with ``RendezvousConnectionError`` (etcd was down)
    calls it again. A node with a round polls ``num_nodes_waiting()`` and calls
    ``next`` again when it is above 0 (torch's agent does the same while it
    trains). Done when every node has a round, the same one, and none is told to
    re-rendezvous. Returns every ``round`` event, and every error.
    """
    latest: dict[int, dict[str, Any]] = {}
    rounds: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    busy = set(range(len(nodes)))  # nodes with a `next` under way
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index in sorted(busy):
            node = nodes[index]
            if not node.pending():
                continue
            event = node.next_event(1)
            if event["event"] == "error":
                assert event["type"] == "RendezvousConnectionError", event
                assert endpoint in event["message"], event
                errors.append({**event, "node": node.id})
                node.send("next")  # a transient failure: try again
                continue
            assert event["event"] == "round", event
            rounds.append(event)
            latest[index] = event
            busy.discard(index)
        told = set()
        for index in set(range(len(nodes))) - busy:
            if nodes[index].ask("waiting", "waiting")["count"] > 0:
                told.add(index)
                nodes[index].send("next")
        busy |= told
        if not busy and len({r["round"] for r in latest.values()}) == 1:
            return rounds, errors
        time.sleep(0.2)
    raise AssertionError(f"no common round within {timeout} s: {latest}, errors {errors}")


def test_rendezvous_of_eight_completes_once_etcd_is_back_after_a_five_second_outage(
    own_etcd: EtcdServer, run_id: str, record: Callable[..., None]
) -> None:
    """8 nodes, etcd killed after 4 joined, back 5 s later: one round, ranks 0..7.

    No node fails: each keeps retrying its requests while etcd is down (for up to
    read_timeout, 60 s by default) and the rendezvous completes once etcd is back.
    The driver still acts as a launcher (it would retry a failed ``next``, and
    calls it again when ``num_nodes_waiting()`` says so), so that a failure shows
    up as a count, not a hang; no round may have a duplicate rank.
    """
    endpoint = own_etcd.get_endpoint()
    base: dict[str, Any] = {
        "backend": "etcd-v2",
        "endpoint": endpoint,
        "run_id": run_id,
        "min_nodes": 8,
        "max_nodes": 8,
        "options": {"join_timeout": 120, "last_call_timeout": 0.5},
    }
    with Nodes(base) as nodes, state_reader("etcd-v2", endpoint, run_id) as read:
        everyone = nodes.start(8)
        early, late = everyone[:4], everyone[4:]
        for node in early:
            node.send("next")
        wait_until(lambda: len(participant_ids(read())) == 4, 60, "4 nodes to join")

        own_etcd.stop(keep_data=True, kill=True)
        stopped_at = time.monotonic()
        for node in late:
            node.send("next")
        time.sleep(max(OUTAGE - (time.monotonic() - stopped_at), 0))
        own_etcd.start(timeout=30)
        back_at = time.monotonic()
        assert own_etcd.get_endpoint() == endpoint, "etcd came back on another port"

        rounds, errors = _drive_like_a_launcher(everyone, endpoint, timeout=150)
        recovered = time.monotonic() - back_at

        by_round: dict[int, list[int]] = defaultdict(list)
        for event in rounds:
            by_round[event["round"]].append(event["rank"])
        for number, ranks in by_round.items():
            assert len(ranks) == len(set(ranks)), f"duplicate rank in round {number}: {rounds}"
        final_round = max(by_round)
        final = [r for r in rounds if r["round"] == final_round]
        assert_one_round(final, 8)
        assert all(node.process.poll() is None for node in everyone), "a node process died"
        assert errors == [], "a node failed while etcd was briefly down"
        state = read()
        assert state is not None and state.complete and state.round == final_round
        assert participant_ids(state) == {node.id for node in everyone}
        record(
            outage_s=OUTAGE,
            connection_errors=len(errors),
            nodes_that_failed=len({e.get("node", id(e)) for e in errors}),
            rounds_until_all_met=len(by_round),
            recovery_s=recovered,
        )
