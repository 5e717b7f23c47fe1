"""torch's EtcdStore and rdzv's over one prefix see the same keys (torch's key layout)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import etcd
import pytest
from torch.distributed.elastic.rendezvous.etcd_store import EtcdStore as TorchEtcdStore

from rdzv.etcd_server import EtcdServer
from rdzv.store.etcd import EtcdStore


@pytest.fixture
def etcd_client(etcd_server: EtcdServer) -> Iterator[etcd.Client]:
    yield etcd_server.get_client()


def test_torch_writes_and_rdzv_reads(etcd_client: etcd.Client, etcd_prefix: str) -> None:
    theirs = TorchEtcdStore(etcd_client, etcd_prefix, timedelta(seconds=5))
    ours = EtcdStore(etcd_client, etcd_prefix, timeout=timedelta(seconds=5))
    theirs.set("text", "grüße")
    theirs.set(b"bytes-key", b"\x00\xff")
    assert theirs.add("counter", 3) == 3
    assert ours.get("text") == "grüße".encode()
    assert ours.get("bytes-key") == b"\x00\xff"
    assert ours.add("counter", 4) == 7
    assert ours.num_keys() == 3


def test_rdzv_writes_and_torch_reads(etcd_client: etcd.Client, etcd_prefix: str) -> None:
    theirs = TorchEtcdStore(etcd_client, etcd_prefix, timedelta(seconds=5))
    ours = EtcdStore(etcd_client, etcd_prefix)
    ours.set("MASTER_ADDR", "10.0.0.1")
    ours.set("blob", b"\x01\x02\x03")
    assert ours.add("counter", 2) == 2
    assert theirs.get("MASTER_ADDR") == b"10.0.0.1"
    assert theirs.get("blob") == b"\x01\x02\x03"
    assert theirs.add("counter", 5) == 7
    assert theirs.check(["MASTER_ADDR", "blob"])
    assert ours.get("counter") == b"7"


def test_rdzv_waits_for_a_key_torch_sets_later(etcd_client: etcd.Client, etcd_prefix: str) -> None:
    theirs = TorchEtcdStore(etcd_client, etcd_prefix, timedelta(seconds=5))
    ours = EtcdStore(etcd_client, etcd_prefix, timeout=timedelta(seconds=5))
    timer = threading.Timer(0.2, theirs.set, ("late", "from torch"))
    timer.start()
    assert ours.get("late") == b"from torch"
    timer.join()


def test_bytes_keys_are_shared_both_ways(etcd_client: etcd.Client, etcd_prefix: str) -> None:
    """A bytes key names the same etcd key in both stores, UTF-8 or not, and equals its str.

    The keys are chosen so that their base64 has no ``/``: torch's store reads
    only the prefix's direct children and cannot find such a key (see EtcdStore).
    """
    theirs = TorchEtcdStore(etcd_client, etcd_prefix, timedelta(seconds=5))
    ours = EtcdStore(etcd_client, etcd_prefix, timeout=timedelta(seconds=5))
    theirs.set(b"\x80torch", b"1")  # not UTF-8
    ours.set(b"\x80rdzv", b"2")
    ours.set(b"shared", b"3")
    assert ours.get(b"\x80torch") == b"1"
    assert theirs.get(b"\x80rdzv") == b"2"
    assert theirs.get("shared") == b"3"
    assert theirs.add(b"count", 1) == 1
    assert ours.add("count", 1) == 2
    assert theirs.check([b"\x80rdzv", "shared"])
    assert ours.check([b"\x80torch", b"count"])


def test_a_missing_key_is_a_lookup_error_in_both(
    etcd_client: etcd.Client, etcd_prefix: str
) -> None:
    theirs = TorchEtcdStore(etcd_client, etcd_prefix, timedelta(seconds=0.3))
    ours = EtcdStore(etcd_client, etcd_prefix, timeout=timedelta(seconds=0.3))
    for store in (theirs, ours):
        with pytest.raises(LookupError):
            store.get("never")
        with pytest.raises(LookupError):
            store.wait(["never"])
