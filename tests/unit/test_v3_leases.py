"""The v3 client's lease cache: one grant per TTL, made ahead of the write when asked."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from rdzv.etcd.v3_leases import LeaseCache
from rdzv.etcd.v3_wire import EtcdV3ConnectionError


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


def _cache(grants: _Grants) -> LeaseCache:
    return LeaseCache(grants.post, lambda: "http://etcd:2379", read_timeout=5.0)


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
