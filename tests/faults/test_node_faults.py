"""Nodes that freeze, die, shut down, or lose etcd for a while, on real backends.

Every scenario runs node processes on loopback (``_fault_node.py``). On c10d the
first node started hosts the store; the scenarios never harm it unless that is
the fault under test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _faults import (
    Nodes,
    assert_one_round,
    free_port,
    join,
    participant_ids,
    state_reader,
    wait_until,
)

from rdzv.etcd_server import EtcdServer


@pytest.fixture(params=["etcd-v2", "c10d"])
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Backend name and endpoint: the session's etcd, or a free port for the c10d store."""
    if request.param == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        yield {"backend": "etcd-v2", "endpoint": server.get_endpoint()}
    else:
        yield {"backend": "c10d", "endpoint": f"127.0.0.1:{free_port()}"}


def test_frozen_node_is_dropped_and_after_resuming_joins_the_next_round_with_a_new_rank(
    backend: dict[str, Any], run_id: str, record: Callable[..., None]
) -> None:
    """SIGSTOP a node past the heartbeat expiry: the others meet without it; after SIGCONT
    it is no participant (its own heartbeats do not bring it back) and its next
    next_rendezvous() joins a new round with the others, with a rank of that round."""
    interval, attempts = 1.0, 5  # a 5 s expiry: a loaded machine delays no live heartbeat that long
    expiry = interval * attempts
    base = {
        **backend,
        "run_id": run_id,
        "min_nodes": 2,
        "max_nodes": 3,
        "options": {
            "join_timeout": 120,
            "last_call_timeout": 0.5,
            "keep_alive_interval": interval,
            "keep_alive_max_attempt": attempts,
        },
    }
    with Nodes(base) as nodes:
        host, other, sleeper = nodes.start(3)  # on c10d `host` serves the store
        first = join([host, other, sleeper])
        assert_one_round(first, 3)
        stale = next(r for r in first if r["node"] == sleeper.id)

        sleeper.freeze()
        frozen_at = time.monotonic()
        detected = wait_until(
            lambda: host.ask("waiting", "waiting")["count"] > 0, 10 * expiry, "the others to notice"
        )
        second = join([host, other])
        regrouped = time.monotonic() - frozen_at
        assert_one_round(second, 2)
        assert second[0]["round"] > stale["round"]

        with state_reader(backend["backend"], backend["endpoint"], run_id) as read:
            assert participant_ids(read()) == {host.id, other.id}
            time.sleep(max(2 * expiry - (time.monotonic() - frozen_at), 0))
            sleeper.thaw()
            frozen_for = time.monotonic() - frozen_at
            # Heartbeats of the resumed node are due at once: give them time to run.
            time.sleep(2 * interval)
            state = read()
            assert state is not None
            assert participant_ids(state) == {host.id, other.id}
            assert sleeper.id not in {str(n) for n in state.members()}
            assert state.round == second[0]["round"]
            assert host.ask("waiting", "waiting")["count"] == 0

            sleeper.send("next")
            wait_until(
                lambda: host.ask("waiting", "waiting")["count"] > 0, 30, "the resumed node to wait"
            )
            third = join([host, other])
            third.append(sleeper.expect("round"))
            assert_one_round(third, 3)
            assert third[0]["round"] > second[0]["round"]
            assert participant_ids(read()) == {host.id, other.id, sleeper.id}
        record(
            heartbeat_expiry_s=expiry,
            frozen_s=frozen_for,
            noticed_after_s=detected,
            new_round_after_s=regrouped,
        )


def test_waiting_nodes_get_rendezvous_closed_promptly_when_another_node_shuts_down(
    backend: dict[str, Any], run_id: str, record: Callable[..., None]
) -> None:
    """Two nodes wait for a third; a node that calls shutdown() closes the rendezvous, and
    the waiting ones get RendezvousClosedError within seconds, not at their join timeout."""
    join_timeout = 120
    base = {
        **backend,
        "run_id": run_id,
        "min_nodes": 3,
        "max_nodes": 3,
        "options": {"join_timeout": join_timeout, "last_call_timeout": 0.5},
    }
    with Nodes(base) as nodes:
        first, second, quitter = nodes.start(3)
        with state_reader(backend["backend"], backend["endpoint"], run_id) as read:
            first.send("next")
            second.send("next")
            wait_until(lambda: len(participant_ids(read())) == 2, 30, "two nodes to wait")
            shut_at = time.monotonic()
            assert quitter.ask("shutdown", "shutdown")["value"] is True
            errors = [first.expect("error", 30), second.expect("error", 30)]
            latency = time.monotonic() - shut_at
            state = read()
        assert {e["type"] for e in errors} == {"RendezvousClosedError"}, errors
        assert latency < 20, f"took {latency:.1f} s"
        assert state is not None and state.closed
        record(join_timeout_s=join_timeout, closed_error_after_s=latency)


def test_node_whose_heartbeats_fail_while_etcd_is_down_stays_a_participant(
    own_etcd: EtcdServer, run_id: str, record: Callable[..., None]
) -> None:
    """etcd down for less than the heartbeat expiry: heartbeats fail (logged), then resume;
    afterwards both nodes are still the participants of the same round and nobody is
    told to re-rendezvous."""
    interval, attempts, outage = 1.0, 10, 4.0  # etcd is back well within the expiry
    expiry = interval * attempts
    endpoint = own_etcd.get_endpoint()
    base = {
        "backend": "etcd-v2",
        "endpoint": endpoint,
        "run_id": run_id,
        "min_nodes": 2,
        "max_nodes": 2,
        "options": {
            "join_timeout": 120,
            "last_call_timeout": 0.5,
            "keep_alive_interval": interval,
            "keep_alive_max_attempt": attempts,
            "read_timeout": 5,
        },
    }
    with Nodes(base) as nodes:
        pair = nodes.start(2)
        rounds = join(pair)
        assert_one_round(rounds, 2)

        own_etcd.stop(keep_data=True, kill=True)
        stopped_at = time.monotonic()
        time.sleep(outage)
        own_etcd.start(timeout=30)
        down_for = time.monotonic() - stopped_at
        assert own_etcd.get_endpoint() == endpoint
        # Past the expiry counted from the outage: a node whose heartbeats did not
        # resume would be dead by now.
        time.sleep(max(expiry + 2 * interval - (time.monotonic() - stopped_at), 0))

        # Failed heartbeats are logged, and retried by the handler on its own schedule.
        assert all("heartbeat" in node.stderr() for node in pair), [n.stderr() for n in pair]
        for node in pair:
            assert node.ask("waiting", "waiting")["count"] == 0
        with state_reader("etcd-v2", endpoint, run_id) as read:
            state = read()
        assert state is not None and state.complete
        assert state.round == rounds[0]["round"]
        assert participant_ids(state) == {node.id for node in pair}
        # How often a node retried its heartbeat while etcd was down (one warning each).
        failures = max(
            sum("heartbeat" in line for line in node.stderr(tail=None).splitlines())
            for node in pair
        )
        record(
            heartbeat_expiry_s=expiry,
            etcd_down_s=down_for,
            heartbeat_interval_s=interval,
            failed_heartbeats_logged=failures,
        )


def test_killing_the_store_host_fails_every_node_within_read_timeout_without_leaks(
    run_id: str, record: Callable[..., None]
) -> None:
    """c10d: SIGKILL the node hosting the TCP store. Nodes blocked in next_rendezvous() and a
    node that calls it afterwards all get RendezvousConnectionError within read_timeout;
    none keeps a keep-alive thread, none gains descriptors by failing again, and once the
    handler is dropped no socket to the dead store is left."""
    read_timeout = 5.0
    port = free_port()
    base = {
        "backend": "c10d",
        "endpoint": f"127.0.0.1:{port}",
        "run_id": run_id,
        "min_nodes": 4,
        "max_nodes": 4,
        # connect_timeout: a node retries a refused connection this long (else 5 s, min of
        # 10 and read_timeout); the repeated failures below then take a second each.
        "options": {
            "join_timeout": 120,
            "last_call_timeout": 0.5,
            "read_timeout": read_timeout,
            "connect_timeout": 1,
        },
    }
    with Nodes(base) as nodes:
        host, *others = nodes.start(4)
        assert_one_round(join([host, *others]), 4)
        blocked, idle = others[:2], others[2]
        for node in blocked:
            node.send("next")  # leaves the round and waits for the next one
        wait_until(lambda: host.ask("waiting", "waiting")["count"] >= 2, 30, "two to leave")

        connected = [s for s in idle.ask("fds", "fds")["tcp"] if s["remote_port"] == port]
        assert connected, "the idle node should hold a connection to the store"
        host.kill()
        killed_at = time.monotonic()
        errors = [node.expect("error", 3 * read_timeout) for node in blocked]
        blocked_latency = time.monotonic() - killed_at
        started = time.monotonic()
        errors.append(idle.ask("next", "error", 3 * read_timeout))
        idle_latency = time.monotonic() - started
        assert {e["type"] for e in errors} == {"RendezvousConnectionError"}, errors
        assert blocked_latency < read_timeout + 2
        assert idle_latency < read_timeout + 2

        leftovers = {}
        for node in others:
            threads = node.ask("threads", "threads")["names"]
            assert not [t for t in threads if t.startswith("rdzv-keep-alive")], threads
            assert len(threads) <= len(node.ready["threads"]), (threads, node.ready)
            after_error = node.ask("fds", "fds")
            for _ in range(2):
                assert node.ask("next", "error", 3 * read_timeout)["type"] == (
                    "RendezvousConnectionError"
                )
            again = node.ask("fds", "fds")
            assert again["count"] <= after_error["count"], (after_error, again)
            node.ask("drop", "dropped")
            dropped = node.ask("fds", "fds")
            to_store = [s for s in dropped["tcp"] if s["remote_port"] == port]
            assert not to_store, dropped
            assert dropped["count"] <= node.ready["fds_before"], (node.ready, dropped)
            leftovers[node.id] = len([s for s in after_error["tcp"] if s["remote_port"] == port])
        record(
            read_timeout_s=read_timeout,
            blocked_nodes_failed_after_s=blocked_latency,
            idle_node_failed_after_s=idle_latency,
            max_sockets_to_dead_store_before_drop=max(leftovers.values()),
        )
