"""Creating an etcd backend contacts etcd: a hung or v2-less etcd fails creation, clearly.

One test per behaviour for the three etcd backends (issue 17, item 9).
"""

from __future__ import annotations

import time
import uuid

import pytest
from _silent import silent_endpoint

from rdzv import RendezvousConnectionError, RendezvousParameters, get_rendezvous_handler
from rdzv.etcd_server import EtcdServer


@pytest.mark.parametrize(
    ("backend", "says"),
    [("etcd-v2", "read_timeout"), ("etcd-v3", "read_timeout"), ("etcd", None)],
)
def test_creation_fails_within_read_timeout_when_etcd_does_not_answer(
    backend: str, says: str | None
) -> None:
    with silent_endpoint() as endpoint:
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        params = RendezvousParameters(backend, endpoint, run_id, 1, 1, read_timeout=1)
        started = time.monotonic()
        with pytest.raises(RendezvousConnectionError, match=says or endpoint):
            get_rendezvous_handler(params)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, f"failed after {elapsed:.2f} s with read_timeout=1"


@pytest.mark.parametrize("backend", ["etcd-v2", "etcd"])
def test_creation_on_an_etcd_without_the_v2_api_says_to_use_etcd_v3(
    backend: str, etcd_v3_server: EtcdServer
) -> None:
    endpoint = etcd_v3_server.get_endpoint()
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    params = RendezvousParameters(backend, endpoint, run_id, 1, 1, read_timeout=5)
    with pytest.raises(RendezvousConnectionError, match="v2 API") as failure:
        get_rendezvous_handler(params)
    if backend == "etcd-v2":
        assert "etcd-v3" in str(failure.value) and endpoint in str(failure.value)
