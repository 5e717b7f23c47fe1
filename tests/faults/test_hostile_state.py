"""A value that is not a rendezvous state, planted where the state lives, on each backend.

Whatever is planted, a node's next_rendezvous() raises RendezvousStateError saying
what is wrong, runs nothing (a planted pickle would create a marker file), writes
nothing, and the documented recovery (docs/operations.rst, "Recovering from a
corrupt state") works: ``rdzv close --force``, then a new run id, or on etcd
deleting the state key.
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import string
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import etcd
import pytest
from _faults import Nodes, StoreServerProcess, assert_one_round, join

from rdzv.backends.etcd import EtcdRendezvousBackend
from rdzv.core import NodeDesc, RendezvousState, encode_state
from rdzv.etcd_server import EtcdServer
from rdzv.store.tcp import TCPStore

TEN_MB = 10_000_000


class _TouchWhenUnpickled:
    """Unpickling this runs ``Path(path).touch()``: proof that planted code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[Path], None], tuple[Path]]:
        return (Path.touch, (self.path,))


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _valid_state() -> bytes:
    node = NodeDesc("10.0.0.1", 4242, 0)
    state = RendezvousState(participants={node: 0}, last_heartbeats={node: time.time()})
    return encode_state(state)


def _zlib_bomb() -> bytes:
    """``RDZV`` and 200 MB of zeros compressed to about 200 KB."""
    compressor = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    return b"RDZV" + b"".join(compressor.compress(chunk) for _ in range(200)) + compressor.flush()


def _big_base64_text(size: int) -> bytes:
    """``size`` characters of valid base64 (letters and digits only: an etcd form keeps them
    as they are, so the planted value is ``size`` bytes there too)."""
    rng = random.Random(9)
    alphabet = (string.ascii_letters + string.digits).encode()
    return bytes(rng.choices(alphabet, k=size - size % 4))


def _wrong_version() -> bytes:
    text = zlib.decompress(_valid_state()[4:])
    document = json.loads(text)
    document["version"] = 2
    return b"RDZV" + zlib.compress(json.dumps(document).encode())


def payload(name: str, marker: Path) -> tuple[bytes, str]:
    """The value to plant (as the backend stores it) and what the error must say."""
    if name == "not-base64":
        return b"this is not base64!", "not base64"
    if name == "truncated":
        state = _valid_state()
        return _b64(state[: len(state) // 2]), "truncated"
    if name == "base64-of-garbage":
        return _b64(random.Random(7).randbytes(512)), "does not start with"
    if name == "wrong-schema-version":
        return _b64(_wrong_version()), "schema version 2"
    if name == "10-MB-value":
        return _big_base64_text(TEN_MB), "more than the limit"
    if name == "zlib-bomb":
        return _b64(_zlib_bomb()), "inflates to more than"
    if name == "pickle":
        return _b64(pickle.dumps(_TouchWhenUnpickled(marker))), "pickle"
    raise AssertionError(name)


PAYLOADS = [
    "not-base64",
    "truncated",
    "base64-of-garbage",
    "wrong-schema-version",
    "10-MB-value",
    "zlib-bomb",
    "pickle",
]


class Target:
    """Where a run's state lives, how to plant a value there, and the options to reach it."""

    def __init__(
        self,
        backend: str,
        endpoint: str,
        plant: Callable[[str, bytes], None],
        read_raw: Callable[[str], bytes | None],
        options: dict[str, Any],
        plant_intents: Callable[[str, list[bytes]], None],
    ) -> None:
        self.backend = backend
        self.endpoint = endpoint
        self.plant = plant
        self.read_raw = read_raw
        self.options = options
        self.plant_intents = plant_intents

    def node_config(self, run_id: str) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "endpoint": self.endpoint,
            "run_id": run_id,
            "min_nodes": 1,
            "max_nodes": 1,
            "options": {"join_timeout": 60, "last_call_timeout": 0.2, **self.options},
        }

    def rdzv(self, command: str, run_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """Run ``rdzv COMMAND`` against this run's state."""
        args = ["--backend", self.backend, "--endpoint", self.endpoint, "--run-id", run_id]
        return rdzv_cli(command, *args, *extra)


def rdzv_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``rdzv`` command line, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "rdzv", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module", params=["etcd-v2", "c10d"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """etcd-v2: the session's etcd. c10d: a store served by a process of its own (as
    ``rdzv serve tcp`` would), so that the planted value outlives any node."""
    if request.param == "etcd-v2":
        server: EtcdServer = request.getfixturevalue("etcd_server")
        client = server.get_client()

        def etcd_plant(run_id: str, value: bytes) -> None:
            client.write(EtcdRendezvousBackend(client, run_id).key, value.decode("ascii"))

        def etcd_read(run_id: str) -> bytes | None:
            try:
                value = client.read(EtcdRendezvousBackend(client, run_id).key).value
            except etcd.EtcdKeyNotFound:
                return None
            return None if value is None else value.encode("ascii")

        def etcd_intents(run_id: str, records: list[bytes]) -> None:
            directory = EtcdRendezvousBackend(client, run_id).key + ".intents/0"  # segment 0
            for record in records:
                client.write(directory, record.decode("ascii"), append=True, ttl=300)

        yield Target("etcd-v2", server.get_endpoint(), etcd_plant, etcd_read, {}, etcd_intents)
        return
    with StoreServerProcess() as server:
        store = TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=30))
        try:

            def c10d_plant(run_id: str, value: bytes) -> None:
                store.set(f"rdzv.rendezvous.{run_id}", value)

            def c10d_read(run_id: str) -> bytes | None:
                return store.get_if_exists(f"rdzv.rendezvous.{run_id}")

            def c10d_intents(run_id: str, records: list[bytes]) -> None:
                store.append(f"rdzv.intents.{run_id}.0", b"".join(records))

            yield Target(
                "c10d",
                f"127.0.0.1:{server.port}",
                c10d_plant,
                c10d_read,
                {"is_host": False},
                c10d_intents,
            )
        finally:
            store.close()


@pytest.mark.parametrize("name", PAYLOADS)
def test_planted_value_gives_state_error_runs_nothing_and_force_close_recovers(
    target: Target, name: str, run_id: str, tmp_path: Path, record: Callable[..., None]
) -> None:
    """The node fails with RendezvousStateError naming the fault, nothing runs and nothing
    is overwritten; `rdzv status` exits 3; `rdzv close --force` replaces the value with a
    closed state, after which the node gets RendezvousClosedError."""
    marker = tmp_path / "marker"
    value, reason = payload(name, marker)
    if name == "pickle":
        armed = tmp_path / "armed"
        pickle.loads(base64.b64decode(payload(name, armed)[0]))  # the proof
        assert armed.is_file(), "the planted pickle must really run code when unpickled"
    target.plant(run_id, value)

    with Nodes(target.node_config(run_id)) as nodes:
        (node,) = nodes.start(1)
        errors = [node.ask("next", "error", 60) for _ in range(2)]
        for error in errors:
            assert error["type"] == "RendezvousStateError", error
            assert reason in error["message"], error
            assert "corrupt" in error["message"] or "not base64" in error["message"]
        assert not marker.exists(), "the planted pickle ran"
        assert target.read_raw(run_id) == value, "the node overwrote the planted value"

        status = target.rdzv("status", run_id)
        assert status.returncode == 3, status
        assert not marker.exists(), "rdzv status ran the planted pickle"

        started = time.monotonic()
        forced = target.rdzv("close", run_id, "--force")
        force_seconds = time.monotonic() - started
        assert forced.returncode == 0, forced.stderr
        closed = node.ask("next", "error", 60)
        assert closed["type"] == "RendezvousClosedError", closed
        assert node.process.poll() is None
    assert not marker.exists()
    record(
        planted_bytes=len(value), error_after_s=errors[0]["elapsed"], force_close_s=force_seconds
    )


def test_after_a_forced_close_a_new_run_id_rendezvouses(target: Target, run_id: str) -> None:
    """Step 3 of the recovery: the job restarted with another run id meets at once."""
    target.plant(run_id, b"this is not base64!")
    assert target.rdzv("close", run_id, "--force").returncode == 0
    config = target.node_config(f"{run_id}-new")
    config.update(min_nodes=2, max_nodes=2)
    with Nodes(config) as nodes:
        assert_one_round(join(nodes.start(2)), 2)


def test_garbage_in_the_join_intents_log_is_skipped_and_the_rendezvous_completes(
    target: Target, run_id: str, tmp_path: Path
) -> None:
    """Join intents (docs/migrating.rst: ``<key>.intents/`` on etcd,
    ``rdzv.intents.<run_id>.<segment>`` in the store) are appended by any node: records
    that are not intents, a pickle, and a last line left without its end are skipped
    with a warning, and two nodes meet."""
    marker = tmp_path / "marker"
    planted = [
        b"not an intent\n",
        b'["127.0.0.1", "pid", 0, 1.0]\n',
        payload("pickle", marker)[0] + b"\n",
        b"[" * 10000 + b"\n",
        b'["127.0.0.1", 1, 0',  # no end of line: the next record continues it
    ]
    target.plant_intents(run_id, planted)
    config = target.node_config(run_id)
    config.update(min_nodes=2, max_nodes=2)
    with Nodes(config) as nodes:
        pair = nodes.start(2)
        assert_one_round(join(pair), 2)
        assert any("intent" in node.stderr() for node in pair), [n.stderr() for n in pair]
    assert not marker.exists()


def test_on_etcd_deleting_the_state_key_lets_the_run_id_rendezvous_again(
    etcd_server: EtcdServer, run_id: str
) -> None:
    """The etcd alternative of step 3: delete the key that `rdzv status` names (here with
    etcd's v2 HTTP API, as docs/operations.rst shows) and keep the run id."""
    client = etcd_server.get_client()
    key = EtcdRendezvousBackend(client, run_id).key
    client.write(key, base64.b64encode(b"garbage").decode())
    endpoint = etcd_server.get_endpoint()
    status = rdzv_cli("status", "--backend", "etcd-v2", "--endpoint", endpoint, "--run-id", run_id)
    assert status.returncode == 3 and key in status.stdout, status
    # What `curl -X DELETE http://HOST:PORT/v2/keys<key>` sends.
    request = urllib.request.Request(f"http://{endpoint}/v2/keys{key}", method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    config = {
        "backend": "etcd-v2",
        "endpoint": endpoint,
        "run_id": run_id,
        "min_nodes": 2,
        "max_nodes": 2,
        "options": {"join_timeout": 60, "last_call_timeout": 0.2},
    }
    with Nodes(config) as nodes:
        assert_one_round(join(nodes.start(2)), 2)
