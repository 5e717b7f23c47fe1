"""A watcher meets no state, an unreachable backend and a corrupt state: it says so, and recovers.

The backend is a real TCP store (c10d) that the test starts, stops and writes to
directly. The watcher's refresh period is 60 s here, so each recovery seen within
a few seconds was woken by the store's change notification, not by a timer.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from _cli import start_rdzv, stopped_by_ctrl_c
from _nodes import wait_until
from _ports import free_port

import rdzv
from rdzv import RendezvousParameters
from rdzv.backends.c10d import C10dRendezvousBackend
from rdzv.core import NodeDesc, RendezvousState, encode_state
from rdzv.core.events import NodeDeclaredDead, NodeJoined, NodeLeft, RoundCompleted
from rdzv.core.intents import encode_beat
from rdzv.store.tcp import TCPStore, TCPStoreServer
from rdzv.watching import Snapshot, Watcher, WatchStatus, watch_settings, watcher
from rdzv.watching.source import Source, open_source

A = NodeDesc("10.0.0.1", 100, 0)


def _state(now: float) -> RendezvousState:
    return RendezvousState(participants={A: 0}, last_heartbeats={A: now})


class Items:
    def __init__(self, params: RendezvousParameters) -> None:
        self.watcher = rdzv.watch(params, refresh=60)
        self.items: list[Any] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for item in self.watcher:
            self.items.append(item)

    def status(self, status: str, timeout: float = 15) -> WatchStatus:
        found: list[WatchStatus] = []

        def seen() -> bool:
            found[:] = [i for i in self.items if isinstance(i, WatchStatus) and i.status == status]
            return bool(found)

        wait_until(seen, timeout, f"the watcher to report {status}")
        return found[-1]

    def stop(self) -> None:
        self.watcher.stop()
        self._thread.join(timeout=10)
        self.watcher.close()


@pytest.fixture
def run_id() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def port() -> int:
    return free_port()


def _params(port: int, run_id: str) -> RendezvousParameters:
    return RendezvousParameters(
        "c10d", f"127.0.0.1:{port}", run_id, 1, 1, read_timeout=2, keep_alive_interval=1
    )


def _write(port: int, run_id: str, value: bytes | None, *, raw: bytes | None = None) -> None:
    with TCPStore("127.0.0.1", port) as store:
        if raw is not None:
            store.set(f"rdzv.rendezvous.{run_id}", raw)
            return
        backend = C10dRendezvousBackend(store, run_id)
        current = store.get_if_exists(backend.key)
        assert value is not None
        backend.set_state(value, current)


@pytest.fixture
def items(port: int, run_id: str) -> Iterator[Items]:
    watching = Items(_params(port, run_id))
    yield watching
    watching.stop()


def test_an_unreachable_backend_is_reported_and_the_watcher_recovers(
    port: int, run_id: str, items: Items
) -> None:
    unreachable = items.status("unreachable")
    assert f"127.0.0.1:{port}" in (unreachable.message or "")
    assert "tries again" in (unreachable.message or "")
    with TCPStoreServer("127.0.0.1", port):
        no_state = items.status("no_state", timeout=30)
        assert f"run id '{run_id}'" in (no_state.message or "")
        assert "Check the run id and the endpoint" in (no_state.message or "")
        _write(port, run_id, encode_state(_state(time.time())))
        items.status("ok")
        wait_until(
            lambda: any(isinstance(i, NodeJoined) and i.node == A for i in items.items),
            10,
            "the node's join",
        )


def test_a_corrupt_state_is_reported_and_a_good_one_is_seen_at_once(
    port: int, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watcher, "LONGEST_WAIT", 60.0)  # no wake-up but the store's
    with TCPStoreServer("127.0.0.1", port):
        _write(port, run_id, None, raw=b"bm90IGEgc3RhdGU=")  # base64 of "not a state"
        watching = Items(_params(port, run_id))
        try:
            corrupt = watching.status("corrupt")
            assert f"key rdzv.rendezvous.{run_id}: " in (corrupt.message or "")
            assert "rdzv close --force" in (corrupt.message or "")
            written = time.monotonic()
            _write(port, run_id, encode_state(_state(time.time())))
            watching.status("ok", timeout=10)
            assert time.monotonic() - written < 5  # woken by the store: the refresh is 60 s
            snapshot = [i for i in watching.items if isinstance(i, Snapshot)][-1]
            assert snapshot.state is not None
            assert A in snapshot.state.participants
        finally:
            watching.watcher.stop()
    watching.stop()  # after the store: its end ends the wait in flight


def test_a_node_that_left_while_the_backend_was_unreachable_is_not_called_dead(
    port: int, run_id: str
) -> None:
    """B's heartbeat was fresh on the board when last read; it is gone once the store is back.

    The state's own heartbeats are those of the admission, long expired; the board's
    reading, taken before the outage, must be kept. The outage lasts longer than the
    expiry (1 s), so the watcher cannot tell whether B left or was dropped.
    """
    b = NodeDesc("10.0.0.2", 200, 0)
    admitted = time.time() - 60
    params = RendezvousParameters(
        "c10d", f"127.0.0.1:{port}", run_id, 1, 2,
        read_timeout=1, keep_alive_interval=0.5, keep_alive_max_attempt=2,
    )  # fmt: skip
    watching = rdzv.watch(params, refresh=0.5)
    items: list[Any] = []
    thread = threading.Thread(target=lambda: items.extend(watching), daemon=True)

    def write(state: RendezvousState, beats: dict[NodeDesc, float]) -> None:
        _write(port, run_id, encode_state(state))
        with TCPStore("127.0.0.1", port) as store:
            backend = C10dRendezvousBackend(store, run_id)
            for node, beat in beats.items():
                backend.beat(str(node), encode_beat(beat), 60)

    try:
        with TCPStoreServer("127.0.0.1", port):
            both = RendezvousState(
                complete=True, world_size=2, participants={A: 0, b: 1},
                last_heartbeats={A: admitted, b: admitted},
            )  # fmt: skip
            write(both, {A: time.time(), b: time.time()})
            thread.start()
            wait_until(lambda: any(isinstance(i, RoundCompleted) for i in items), 15, "round 0")
        wait_until(
            lambda: any(isinstance(i, WatchStatus) and i.status == "unreachable" for i in items),
            15,
            "the watcher to find the store gone",
        )
        time.sleep(1.5)  # longer than the expiry: B's fate is unknown
        with TCPStoreServer("127.0.0.1", port):
            write(attrs.evolve(both, participants={A: 0}), {A: time.time()})
            wait_until(
                lambda: any(isinstance(i, NodeLeft | NodeDeclaredDead) for i in items),
                15,
                "B's departure",
            )
            watching.stop()
            thread.join(timeout=10)
    finally:
        watching.close()
    gone = [i for i in items if isinstance(i, NodeLeft | NodeDeclaredDead)]
    assert len(gone) == 1 and isinstance(gone[0], NodeLeft), gone
    assert gone[0].node == b and not gone[0].certain
    assert gone[0].last_heartbeat is not None and gone[0].last_heartbeat > admitted


class Counted:
    """An opener of the run's real source that counts the sources opened and closed."""

    def __init__(self, params: RendezvousParameters) -> None:
        self.params, self.opened, self.closed = params, 0, 0

    def __call__(self) -> Source:
        source = open_source(self.params)
        self.opened += 1
        release = source.close

        def close() -> None:
            self.closed += 1
            release()

        source.close = close  # type: ignore[method-assign]
        return source


def test_breaking_out_of_the_iteration_closes_the_connection(port: int, run_id: str) -> None:
    params = _params(port, run_id)
    opener = Counted(params)
    with TCPStoreServer("127.0.0.1", port):
        _write(port, run_id, encode_state(_state(time.time())))
        watching = Watcher(opener, watch_settings(params), "test", refresh=60)
        for item in watching:
            if isinstance(item, Snapshot):
                break  # no `with`, no close()
        assert (opener.opened, opener.closed) == (1, 1)


def test_a_close_from_another_thread_never_reopens_the_connection(port: int, run_id: str) -> None:
    """close() lands between the loop's check and the next open (here: in the clock)."""
    params = _params(port, run_id)
    opener = Counted(params)
    armed = threading.Event()

    def clock() -> float:
        if armed.is_set() and sys._getframe(1).f_code.co_name == "_look":
            armed.clear()
            watching.close()  # as another thread would, just before the next open
        return time.time()

    with TCPStoreServer("127.0.0.1", port):
        _write(port, run_id, encode_state(_state(time.time())))
        watching = Watcher(opener, watch_settings(params), "test", refresh=0.1, clock=clock)
        items = iter(watching)
        for item in items:
            if isinstance(item, Snapshot):
                armed.set()
                break
        list(items)  # runs until the close ends it
        assert (opener.opened, opener.closed) == (1, 1)


# -- the same on the command line and on the page ------------------------------------


def _target(port: int, run_id: str) -> list[str]:
    return ["--backend", "c10d", "--endpoint", f"127.0.0.1:{port}", "--run-id", run_id]


def test_watch_in_the_terminal_says_the_backend_is_unreachable_and_stops_on_ctrl_c(
    port: int, run_id: str
) -> None:
    watch = start_rdzv("status", *_target(port, run_id), "--read-timeout", "1", "--watch")
    try:
        assert watch.stdout is not None
        lines = [watch.stdout.readline() for _ in range(2)]
        assert lines[1].startswith("!! unreachable: "), lines
        assert f"127.0.0.1:{port}" in lines[1]
    finally:
        err = stopped_by_ctrl_c(watch)
    assert watch.returncode == 0, err


def _get(url: str, **headers: str) -> Any:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_the_page_shows_each_trouble_and_recovers(port: int, run_id: str) -> None:
    page = start_rdzv(
        "status", *_target(port, run_id), "--read-timeout", "1", "--serve", "--port", "0"
    )
    try:
        assert page.stdout is not None
        url = page.stdout.readline().split(" on ")[1].split()[0]
        result: dict[str, Any] = {}

        def shows(what: str) -> bool:
            result.clear()
            result.update(_get(url + "snapshot") or {})
            return result.get("result") == what

        wait_until(lambda: shows("unreachable"), 20, "the page to show the store unreachable")
        assert f"127.0.0.1:{port}" in result["error"]
        with TCPStoreServer("127.0.0.1", port):
            wait_until(lambda: shows("no_state"), 30, "the page to show no state")
            assert run_id in result["error"]
            _write(port, run_id, None, raw=b"bm90IGEgc3RhdGU=")
            wait_until(lambda: shows("corrupt"), 10, "the page to show the corrupt state")
            assert "rdzv close --force" in result["error"]
            _write(port, run_id, encode_state(_state(time.time())))
            wait_until(lambda: shows("ok"), 10, "the page to show the state")
            assert [p["node"] for p in result["state"]["participants"]] == [str(A)]
    finally:
        page.send_signal(signal.SIGTERM)
        _, err = page.communicate(timeout=15)
    assert page.returncode == 0, err


def test_the_page_off_loopback_needs_a_token_and_checks_it(port: int, run_id: str) -> None:
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "rdzv",
            "status",
            *_target(port, run_id),
            "--serve",
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2
    assert "--token" in refused.stderr
    page = start_rdzv(
        "status", *_target(port, run_id), "--serve", "--port", "0", "--host", "0.0.0.0",
        "--token", "s3cret",
    )  # fmt: skip
    try:
        assert page.stdout is not None
        line = page.stdout.readline()
        assert "s3cret" not in line
        base = f"http://127.0.0.1:{line.split(':')[-1].split('/')[0]}/"
        with pytest.raises(urllib.error.HTTPError) as refused_request:
            _get(base + "snapshot?token=wrong")
        assert refused_request.value.code == 403
        _get(base + "snapshot?token=s3cret")
        _get(base + "snapshot", Authorization="Bearer s3cret")
    finally:
        page.send_signal(signal.SIGTERM)
        _, err = page.communicate(timeout=15)
    assert page.returncode == 0, err


def test_the_page_on_loopback_refuses_a_request_for_another_host(port: int, run_id: str) -> None:
    page = start_rdzv("status", *_target(port, run_id), "--serve", "--port", "0")
    try:
        assert page.stdout is not None
        url = page.stdout.readline().split(" on ")[1].split()[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(url + "snapshot", Host="attacker.example")
        assert refused.value.code == 403
    finally:
        page.send_signal(signal.SIGTERM)
        page.communicate(timeout=15)
