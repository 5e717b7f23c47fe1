"""The page's HTTP server on real sockets: who may read what, and that no wait is unbounded.

The server runs in this process with a :class:`Hub` the test publishes to; no
backend is involved (``test_watch_trouble.py`` runs the whole command).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from _nodes import wait_until

from rdzv.cli import status_page
from rdzv.cli._common import CommandError
from rdzv.cli.status_page import Hub, PageServer, _asset, _Handler
from rdzv.core import RendezvousSettings

TOKEN = "s3cret"


class Page:
    """A :class:`PageServer` serving in a thread, stopped by :meth:`stop`."""

    def __init__(self, host: str = "127.0.0.1", token: str | None = None) -> None:
        self.hub = Hub()
        self.server = PageServer(host, 0, self.hub, token)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.hub.close()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def page() -> Iterator[Page]:
    serving = Page(token=TOKEN)
    yield serving
    serving.stop()


def _status(url: str, **headers: str) -> int:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read(1)
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_a_page_opened_with_its_token_loads_its_script_and_style(page: Page) -> None:
    assert _status(page.url(f"/?token={TOKEN}")) == 200
    assert _status(page.url("/status.js")) == 200  # as the page asks: no token
    assert _status(page.url("/status.css")) == 200


def test_the_data_needs_the_token(page: Page) -> None:
    assert _status(page.url("/events")) == 403
    assert _status(page.url("/snapshot")) == 403
    assert _status(page.url("/snapshot?token=wrong")) == 403
    assert _status(page.url(f"/snapshot?token={TOKEN}")) == 200


def test_the_page_script_passes_its_token_to_the_stream() -> None:
    script = _asset("status.js").decode()
    assert 'new URLSearchParams(location.search).get("token")' in script
    assert '"events" + (token ? "?token=" + encodeURIComponent(token)' in script
    assert "fetch(" not in script  # /events is its only request for data


def test_on_loopback_every_path_refuses_another_host() -> None:
    serving = Page()
    try:
        for path in ("/", "/status.js", "/status.css", "/snapshot", "/events"):
            assert _status(serving.url(path), Host="attacker.example") == 403, path
    finally:
        serving.stop()


# -- bounded waits -----------------------------------------------------------------------


def _open_stream(port: int, **options: int) -> socket.socket:
    """A connection that asked for /events and got its headers, and now reads nothing."""
    sock = socket.socket()
    for option, value in options.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"the server closed the stream: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_an_idle_connection_is_closed_by_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _Handler.timeout is not None  # an idle connection must not hold a thread for ever
    monkeypatch.setattr(_Handler, "timeout", 0.5)
    serving = Page()
    try:
        with socket.create_connection(("127.0.0.1", serving.port), timeout=10) as sock:
            assert sock.recv(1) == b""  # closed by the server, well before 10 s
    finally:
        serving.stop()


def test_streams_beyond_the_cap_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_page, "MAX_STREAMS", 2, raising=False)
    serving = Page()
    streams = [_open_stream(serving.port) for _ in range(2)]
    try:
        assert _status(serving.url("/events")) == 503
        assert _status(serving.url("/snapshot")) == 200  # only streams are capped
        streams.pop().close()

        def free() -> bool:
            serving.hub.publish("rdzv", {})  # a write finds the closed page
            return _status(serving.url("/events")) == 200

        wait_until(free, 10, "a free place")
    finally:
        for sock in streams:
            sock.close()
        serving.stop()


def test_a_stream_whose_reader_stops_reading_ends_and_frees_its_place(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(status_page, "MAX_STREAMS", 1, raising=False)
    monkeypatch.setattr(_Handler, "timeout", 0.5)
    serving = Page()
    stuck = _open_stream(serving.port, SO_RCVBUF=4096)
    try:
        big = {"padding": "x" * 65536}
        for _ in range(400):  # far more than the socket buffers hold
            serving.hub.publish("rdzv", big)
        wait_until(lambda: _status(serving.url("/events")) == 200, 15, "the stuck stream to end")
        while stuck.recv(1 << 20):  # what the server sent before it gave up, then its close
            pass
    finally:
        stuck.close()
        serving.stop()
    assert "Traceback" not in capfd.readouterr().err


# -- a watcher that fails ------------------------------------------------------------


class _BrokenWatcher:
    """A watcher whose iteration fails with a bug."""

    def __iter__(self) -> Iterator[object]:
        raise RuntimeError("a bug in the watcher")

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_page_stops_with_an_error_when_its_watcher_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page that went on would show the last snapshot as live."""
    published: list[tuple[str, dict[str, Any]]] = []
    publish = Hub.publish

    def spy(hub: Hub, kind: str, document: dict[str, Any]) -> None:
        published.append((kind, document))
        publish(hub, kind, document)

    monkeypatch.setattr(Hub, "publish", spy)
    monkeypatch.setattr(status_page, "watcher_for", lambda args, settings: _BrokenWatcher())
    args = argparse.Namespace(host="127.0.0.1", port=0, token=None, run_id="run")
    # run_page handles signals, so it runs in this (the main) thread; a hang ends by SIGINT.
    guard = threading.Timer(15, os.kill, (os.getpid(), signal.SIGINT))
    guard.start()
    try:
        with pytest.raises(CommandError) as failed:
            status_page.run_page(args, RendezvousSettings("run", 1, 1), print)
    finally:
        guard.cancel()
    assert failed.value.status != 0
    assert "RuntimeError: a bug in the watcher" in str(failed.value)
    statuses = [d for kind, d in published if d.get("type") == "watch_status"]
    assert statuses and "a bug in the watcher" in statuses[-1]["message"]


# -- headers and addresses -------------------------------------------------------------


def test_no_other_site_may_frame_the_page(page: Page) -> None:
    with urllib.request.urlopen(page.url("/"), timeout=10) as response:
        policy = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _page_args(host: str, port: int) -> argparse.Namespace:
    return argparse.Namespace(host=host, port=port, token=None, run_id="run")


def test_the_page_serves_on_ipv6_loopback() -> None:
    if not _ipv6_loopback():  # no ::1 here: then the failure must say what to do
        with pytest.raises(CommandError, match="--host"):
            status_page.run_page(_page_args("::1", 0), RendezvousSettings("run", 1, 1), print)
        return
    hub = Hub()
    server = PageServer("::1", 0, hub, None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        url = f"http://[::1]:{server.server_address[1]}/snapshot"
        assert _status(url) == 200
    finally:
        hub.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_port_in_use_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError) as failed:
            status_page.run_page(
                _page_args("127.0.0.1", port), RendezvousSettings("run", 1, 1), print
            )
    message = str(failed.value)
    assert f"cannot serve the page on 127.0.0.1:{port}" in message
    assert "--port 0" in message and "--host" in message
