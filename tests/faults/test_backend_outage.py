"""etcd stops in the middle of a rendezvous, or while a round runs, and comes back."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _faults import Node, Nodes, assert_one_round, participant_ids, state_reader, wait_until

from rdzv import RendezvousParameters, get_rendezvous_handler
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


STALL = 8.0
"""Seconds etcd is frozen: more than twice the heartbeat expiry of 3 s."""


@pytest.mark.parametrize("backend", ["etcd-v2", "etcd-v3"])
def test_a_round_outlives_etcd_frozen_past_the_heartbeat_expiry(
    own_etcd: EtcdServer,
    run_id: str,
    backend: str,
    record: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """8 nodes in a round (keep-alive 1 s x 3) polling ``num_nodes_waiting()`` four times
    a second as launchers; etcd is frozen (SIGSTOP, as a stalled disk or a paused VM
    would) for 8 s, then resumes. No heartbeat could land meanwhile, so the first node to
    read after it must not take the others for dead: no launcher is told to rendezvous
    again, and the round keeps all eight. Each node logs that the backend lagged, and
    that it answers quickly again.

    The simulator's ``test_a_round_outlives_a_backend_stall_longer_than_the_expiry`` is
    the same scenario in virtual time.
    """
    n = 8
    params = RendezvousParameters(
        backend,
        own_etcd.get_endpoint(),
        run_id,
        n,
        n,
        keep_alive_interval=1,
        keep_alive_max_attempt=3,
        join_timeout=60,
    )
    caplog.set_level(logging.INFO, logger="rdzv.dynamic.executor")
    handlers = [get_rendezvous_handler(params) for _ in range(n)]
    stop = threading.Event()
    told: list[tuple[float, int]] = []
    try:
        with ThreadPoolExecutor(n) as pool:
            infos = list(pool.map(lambda h: h.next_rendezvous(), handlers))
        assert {info.world_size for info in infos} == {n}
        first_round = handlers[0].round

        def launcher(handler: Any) -> None:
            while not stop.wait(0.25):
                waiting = handler.num_nodes_waiting()
                if waiting:
                    told.append((time.monotonic(), waiting))

        threads = [threading.Thread(target=launcher, args=(h,), daemon=True) for h in handlers]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        pid = own_etcd.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(STALL)
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        time.sleep(6.0)  # two expiries after etcd resumed
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not told, f"launchers told to rendezvous again after the stall: {told[:8]}"
        assert all(h.num_nodes_waiting() == 0 for h in handlers)
        assert {h.round for h in handlers} == {first_round}
        lagged = [r for r in caplog.records if "judges other nodes' heartbeats late" in r.message]
        quick = [r for r in caplog.records if "answers quickly again" in r.message]
        assert lagged and all(r.levelno == logging.WARNING for r in lagged)
        assert len(quick) >= n  # every node, once etcd answered quickly for an expiry
        record(stall_s=STALL, told=len(told), checked_s=time.monotonic() - resumed)
    finally:
        stop.set()
        for handler in handlers:
            handler.shutdown()
