"""The state of a running round outlives its TTL on etcd; that of an abandoned run does not.

On the etcd backends the state is written with a TTL (``ttl``, two hours by
default) so that an abandoned run cleans itself up. With heartbeats on their own
board, a stable round writes no state: before the nodes kept it alive, it expired
``ttl`` after the round formed, every launcher's ``num_nodes_waiting()`` turned 1,
and torchrun restarted every worker, every two hours.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _threads import next_round

from rdzv import (
    DynamicRendezvousHandler,
    RendezvousInfo,
    RendezvousParameters,
    get_rendezvous_handler,
)
from rdzv.backends import etcd, etcd_v3
from rdzv.etcd_server import EtcdServer

TTL = 2
"""Seconds: the state outlives its last write by one to two of them (one on v2)."""


@pytest.fixture(params=["etcd-v2", "etcd-v3"])
def endpoint(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    fixture = "etcd_server" if request.param == "etcd-v2" else "etcd_v3_server"
    server: EtcdServer = request.getfixturevalue(fixture)
    yield request.param, server.get_endpoint()


def _params(backend: str, endpoint: str, count: int) -> RendezvousParameters:
    return RendezvousParameters(
        backend,
        endpoint,
        f"lifetime-{uuid.uuid4().hex[:8]}",
        count,
        count + 1,
        "127.0.0.1",
        ttl=TTL,
        last_call_timeout=0.1,
        keep_alive_interval=0.3,
        keep_alive_max_attempt=3,
    )


def _nodes(params: RendezvousParameters, count: int) -> list[DynamicRendezvousHandler]:
    handlers: list[Any] = [get_rendezvous_handler(params) for _ in range(count)]
    return handlers


def _stored(params: RendezvousParameters) -> bool:
    """Whether the run's state is in etcd, read by a backend of its own."""
    module: Any = etcd if params.backend == "etcd-v2" else etcd_v3
    backend, _ = module.create_backend(params)
    return backend.get_state() is not None


def test_a_stable_round_keeps_its_state_past_the_ttl(endpoint: tuple[str, str]) -> None:
    params = _params(*endpoint, count=2)
    handlers = _nodes(params, 2)
    try:
        assert len(next_round(handlers)) == 2
        formed = [h.round for h in handlers]
        deadline = time.monotonic() + 3 * TTL
        while time.monotonic() < deadline:
            assert [h.num_nodes_waiting() for h in handlers] == [0, 0]
            assert _stored(params)
            time.sleep(0.25)
        assert [h.round for h in handlers] == formed
        # A late node then makes the next round: the renewals (on v2 they move the
        # key's index) leave the nodes able to write the state.
        late = _nodes(params, 1)
        handlers += late
        joined: list[RendezvousInfo] = []
        late_round = threading.Thread(target=lambda: joined.extend(next_round(late)))
        late_round.start()
        deadline = time.monotonic() + 10
        while handlers[0].num_nodes_waiting() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        joined += next_round(handlers[:2])
        late_round.join(10)
        assert sorted(info.rank for info in joined) == [0, 1, 2]
        assert {h.round for h in handlers} == {formed[0] + 1}
    finally:
        for handler in handlers:
            handler.shutdown()


def test_the_state_of_an_abandoned_run_still_expires(endpoint: tuple[str, str]) -> None:
    params = _params(*endpoint, count=2)
    handlers = _nodes(params, 2)
    next_round(handlers)
    for handler in handlers:
        handler.shutdown()
    deadline = time.monotonic() + 4 * TTL + 2
    while _stored(params) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not _stored(params)


def test_a_failed_renewal_fails_no_heartbeat_and_is_tried_again(
    endpoint: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """etcd refuses the renewals for a while (two beats): the beats go through, one
    warning says so, the third beat renews, and an info line says that too."""
    params = _params(*endpoint, count=1)
    module: Any = etcd if params.backend == "etcd-v2" else etcd_v3
    backend, _ = module.create_backend(params)
    created = backend.set_state(b"one")
    assert created is not None
    kv = backend._kv  # etcd refusing is injected at the key-value layer
    renew, refused, renewed = kv.renew, [], []

    def refusing(key: bytes, ttl: float) -> None:
        if len(refused) < 2:
            refused.append(key)
            raise backend.client_errors[0]("etcd refused the renewal (injected)")
        renew(key, ttl)
        renewed.append(key)

    kv.renew = refusing
    with caplog.at_level(logging.INFO, logger="rdzv.etcd.renewal"):
        for beat in range(3):
            backend._renewal._at = 0.0  # a renewal is due at each beat
            backend.beat("node", f"{beat}".encode(), 30)
    assert len(refused) == 2 and len(renewed) == 1
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "INFO"], messages
    assert "injected" in messages[0][1] and "renewed again" in messages[1][1]
    assert not backend._renewal.due()  # the next renewal is a while off
