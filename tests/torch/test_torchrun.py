"""torchrun jobs on rdzv's rendezvous: two agents on loopback, gloo trainers, real backends.

Each agent is a ``torchrun`` process of its own (``--nproc-per-node=1``); the trainer
(``_train.py``) joins the process group and all-reduces its rank.
"""

from __future__ import annotations

from typing import Any

import pytest
from _torchrun import Job, free_port, wait_for_port

from rdzv.etcd_server import EtcdServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# The torch imports of two agents and their trainers share two busy cores.
JOB_TIMEOUT = 180

# A node's first heartbeat after a round can come two intervals after its last one
# (one spent in the last call, one before the keep-alive thread's first beat), so
# keep_alive_max_attempt=2 would let each node drop itself right after the round
# (torch's handler does the same); 5 leaves room for a loaded machine.
ELASTIC_CONF = "keep_alive_interval=1,keep_alive_max_attempt=5,last_call_timeout=1,join_timeout=120"


def torchrun_args(
    backend: str, endpoint: str, run_id: str, nnodes: str, conf: str, max_restarts: int
) -> list[str]:
    return [
        f"--nnodes={nnodes}",
        "--nproc-per-node=1",
        f"--rdzv-backend={backend}",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={run_id}",
        f"--rdzv-conf={conf}",
        "--local-addr=127.0.0.1",
        f"--max-restarts={max_restarts}",
        "--monitor-interval=0.5",
    ]


@pytest.fixture
def endpoint(backend: str, request: pytest.FixtureRequest) -> str:
    """Where the agents rendezvous: a free port for c10d (the first agent hosts the
    store there), the session's etcd for the etcd backends (for rdzv-etcd-v3, an
    etcd with the v2 API off, as etcd 3.6 and later)."""
    if backend in ("rdzv-etcd-v2", "rdzv-etcd"):
        server: EtcdServer = request.getfixturevalue("etcd_server")
        return server.get_endpoint()
    if backend == "rdzv-etcd-v3":
        v3_server: EtcdServer = request.getfixturevalue("etcd_v3_server")
        return v3_server.get_endpoint()
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("backend", ["rdzv-c10d", "rdzv-etcd-v2", "rdzv-etcd-v3", "rdzv-etcd"])
def test_two_nodes_all_reduce_their_ranks(
    job: Job, backend: str, endpoint: str, run_id: str
) -> None:
    args = torchrun_args(backend, endpoint, run_id, "2", "join_timeout=120", max_restarts=0)
    agents = [job.start(name, args) for name in ("a", "b")]

    for agent in agents:
        assert agent.wait(JOB_TIMEOUT) == 0, job.logs()
    for agent in agents:
        assert "world_size=2 sum=1" in agent.output(), job.logs()
    starts = job.starts()
    assert sorted(s["rank"] for s in starts) == [0, 1]
    assert {s["node"] for s in starts} == {"a", "b"}


@pytest.mark.parametrize("backend", ["rdzv-c10d", "rdzv-etcd-v2"])
def test_survivor_finishes_alone_after_the_other_node_dies(
    job: Job, backend: str, endpoint: str, run_id: str
) -> None:
    args = torchrun_args(backend, endpoint, run_id, "1:2", ELASTIC_CONF, max_restarts=3)
    env = {"RDZV_TEST_ELASTIC": "1"}
    survivor = job.start("a", args, **env)
    if backend == "rdzv-c10d":
        # The node that hosts the c10d store must survive: make it the first one.
        wait_for_port(int(endpoint.rsplit(":", 1)[1]), timeout=JOB_TIMEOUT)
    victim = job.start("b", args, **env)

    def both_in_a_world_of_two(starts: list[dict[str, Any]]) -> bool:
        return {s["node"] for s in starts if s["world_size"] == 2} == {"a", "b"}

    job.wait_for_starts(both_in_a_world_of_two, JOB_TIMEOUT, "round with both nodes")
    victim.kill()
    job.kill_trainers(node="b")
    (job.workdir / "finish").write_text("")

    assert survivor.wait(JOB_TIMEOUT) == 0, job.logs()
    last = job.starts()[-1]
    assert (last["node"], last["world_size"], last["sum"]) == ("a", 1, 0), job.logs()
    assert "world_size=1 sum=0" in survivor.output()
