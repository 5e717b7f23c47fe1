"""The v3 client's leases: one grant per TTL for a client (made ahead of the write when
asked), a few for the writers of a scope."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rdzv.etcd.v3_leases import LeaseCache, shared_lease_id
from rdzv.etcd.v3_wire import EtcdV3ConnectionError, EtcdV3Error


class _Gateway:
    """etcd's answers to lease grants, in order (an ``Exception`` is raised instead), and
    the leases etcd holds, which a write checks as etcd does."""

    def __init__(self, *answers: object, held: set[int] | None = None) -> None:
        self.answers = list(answers)
        self.grants: list[dict[str, Any]] = []
        self.held = set() if held is None else held

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "lease/grant"
        self.grants.append(body)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, dict)
        self.held.add(int(answer["ID"]))
        return answer

    def write(self, lease: int) -> int:
        if lease not in self.held:
            raise EtcdV3Error(
                "etcd at http://etcd:2379 refused kv/put: etcdserver: requested lease not found"
            )
        return lease


class _Grants:
    """etcd's answers to lease grants, in order: an ``Exception`` is raised instead. The
    first grant waits for ``gate``, if given."""

    def __init__(self, *answers: object, gate: threading.Event | None = None) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.gate = gate

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == "lease/grant"
        self.asked += 1
        if self.gate is not None and self.asked == 1:
            self.gate.wait(5)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, dict)
        return answer


def _cache(gateway: _Gateway | _Grants) -> LeaseCache:
    return LeaseCache(gateway.post, lambda: "http://etcd:2379", read_timeout=5.0)


def test_a_client_grants_one_lease_per_ttl_for_its_writes() -> None:
    gateway = _Gateway({"ID": "7", "TTL": "200"}, {"ID": "8", "TTL": "600"})
    cache = _cache(gateway)
    assert cache.with_lease(100, gateway.write) == 7
    assert cache.with_lease(100, gateway.write) == 7
    assert cache.with_lease(300, gateway.write) == 8
    assert [g["TTL"] for g in gateway.grants] == ["200", "600"]
    assert cache.with_lease(None, lambda lease: lease) == 0


def test_a_client_whose_lease_etcd_lost_grants_another() -> None:
    gateway = _Gateway({"ID": "7", "TTL": "200"}, {"ID": "9", "TTL": "200"})
    cache = _cache(gateway)
    assert cache.with_lease(100, gateway.write) == 7
    gateway.held.clear()  # expired, or revoked
    assert cache.with_lease(100, gateway.write) == 9


def test_writers_of_a_scope_use_the_lease_that_exists_without_a_grant() -> None:
    lease = shared_lease_id("run", 100, 1_000.0)
    gateway = _Gateway(held={lease})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("time.time", lambda: 1_000.0)
        assert _cache(gateway).with_lease(100, gateway.write, "run") == lease
    assert gateway.grants == []


def test_the_first_writer_of_a_scope_grants_its_lease_by_id() -> None:
    lease = shared_lease_id("run", 100, 1_000.0)
    gateway = _Gateway({"ID": str(lease), "TTL": "200"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("time.time", lambda: 1_000.0)
        assert _cache(gateway).with_lease(99.5, gateway.write, "run") == lease
    assert gateway.grants == [{"ID": str(lease), "TTL": "200"}]


def test_a_writer_that_lost_the_race_to_grant_writes_on_the_lease_granted() -> None:
    lease = shared_lease_id("run", 100, 1_000.0)
    gateway = _Gateway(
        EtcdV3Error("etcd refused lease/grant: HTTP 400: etcdserver: lease already exists")
    )
    cache = _cache(gateway)
    written: list[int] = []

    def write(lease: int) -> int:
        if not written:
            written.append(lease)
            gateway.held.add(lease)  # another writer granted it meanwhile
            raise EtcdV3Error("etcdserver: requested lease not found")
        return gateway.write(lease)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("time.time", lambda: 1_000.0)
        assert cache.with_lease(100, write, "run") == lease
    assert len(gateway.grants) == 1


def test_a_failed_grant_of_a_shared_lease_is_the_writes_error() -> None:
    gateway = _Gateway(EtcdV3ConnectionError("etcd at http://etcd:2379 cannot be reached"))
    with pytest.raises(EtcdV3ConnectionError):
        _cache(gateway).with_lease(100, gateway.write, "run")


def test_a_shared_lease_is_one_per_scope_ttl_and_half_ttl_of_wall_time() -> None:
    first = shared_lease_id("run-a", 100, 1_000.0)
    assert first == shared_lease_id("run-a", 100, 1_049.9)  # the same epoch: [1000, 1050)
    assert first != shared_lease_id("run-a", 100, 1_050.0)
    assert first != shared_lease_id("run-b", 100, 1_000.0)
    assert first != shared_lease_id("run-a", 200, 1_000.0)
    ids = {shared_lease_id(f"run-{n}", 6, 1e9 + n) for n in range(1_000)}
    assert len(ids) == 1_000
    assert all(0 < lease < 2**63 for lease in ids)


def test_a_prefetched_lease_serves_the_write_that_follows() -> None:
    grants = _Grants({"ID": "7", "TTL": "200"})
    cache = _cache(grants)
    cache.prefetch(100)
    cache.prefetch(100)  # one is coming already: no second grant
    assert cache.with_lease(100, lambda lease: lease) == 7
    assert cache.with_lease(100, lambda lease: lease) == 7
    assert grants.asked == 1


def test_a_write_waits_for_the_grant_under_way_rather_than_asking_again() -> None:
    gate = threading.Event()
    grants = _Grants({"ID": "7", "TTL": "200"}, gate=gate)
    cache = _cache(grants)
    cache.prefetch(100)
    leases: list[int] = []
    writer = threading.Thread(target=lambda: leases.append(cache.with_lease(100, int)))
    writer.start()
    gate.set()
    writer.join(5)
    assert leases == [7] and grants.asked == 1


def test_a_prefetch_that_failed_leaves_the_write_to_grant_and_report() -> None:
    down = EtcdV3ConnectionError("etcd at http://etcd:2379 cannot be reached")
    grants = _Grants(down, {"ID": "8", "TTL": "200"}, down)
    cache = _cache(grants)
    cache.prefetch(100)
    assert cache.with_lease(100, lambda lease: lease) == 8  # granted by the write
    assert grants.asked == 2
    with pytest.raises(EtcdV3ConnectionError):
        cache.with_lease(300, lambda lease: lease)  # no prefetch: the error is the write's


def test_a_write_waits_for_a_grant_under_way_no_longer_than_the_read_timeout() -> None:
    gate = threading.Event()  # the prefetched grant never answers while the write waits
    grants = _Grants({"ID": "9", "TTL": "200"}, {"ID": "7", "TTL": "200"}, gate=gate)
    cache = LeaseCache(grants.post, lambda: "http://etcd:2379", read_timeout=0.2)
    cache.prefetch(100)
    writer = threading.Thread(target=lambda: cache.with_lease(100, int))
    writer.start()
    writer.join(3)
    alive = writer.is_alive()  # still waiting: the bound was not kept
    gate.set()
    writer.join(5)
    assert not alive
    assert grants.asked == 2  # the write granted its own
