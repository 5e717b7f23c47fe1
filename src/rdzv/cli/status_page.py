"""``rdzv status --serve``: a read-only page of one rendezvous, updated live in the browser.

The standard library only: a :class:`~http.server.ThreadingHTTPServer` serves the
page (``index.html``, ``status.js``, ``status.css``, shipped in the package under
``rdzv/cli/page``) and one stream of server-sent events (``/events``): the
watcher's events as they happen and a snapshot document after each change (that
of ``rdzv status --watch``, :func:`rdzv.cli.status_watch.describe_snapshot`).
``/snapshot`` answers the latest document as JSON. The page computes heartbeat
ages itself between snapshots, so no request is made to age a row.

It binds 127.0.0.1 unless ``--host`` says otherwise; any other address needs a
token, which every request for data (``/snapshot``, ``/events``) must carry
(``?token=`` or ``Authorization: Bearer``), compared in constant time; the page
passes on the token of its own address. The assets hold no data and need none.
On loopback, requests naming another host are refused, so that a web page
elsewhere cannot read this one through DNS rebinding.

Every wait is bounded: a connection that sends nothing, or a page that takes
nothing, for 30 s is closed; at most :data:`MAX_STREAMS` streams are open at
once (one more is answered 503); a stream sends a comment every 15 s and ends
within half a second of the server stopping; stopping (Ctrl-C, SIGTERM) stops the
watcher and the server, then gives the watcher's thread one second.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rdzv.cli._common import CommandError, ExitStatus, Output, sigterm_interrupts
from rdzv.cli.status_watch import describe_snapshot, watcher_for
from rdzv.core import RendezvousSettings
from rdzv.store.tcp_server import is_loopback_host
from rdzv.watching import Snapshot, Watcher, WatchStatus, item_to_json

__all__ = ["ASSETS", "Hub", "PageServer", "run_page"]

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
}
"""Path -> (file under rdzv/cli/page, content type)."""

MAX_STREAMS = 32
"""Open ``/events`` streams at most; one more is answered 503."""
_IDLE = 30.0
"""Seconds a connection may send nothing, or a page take nothing, before it is closed."""
_HISTORY = 500
"""Events a page that connects late is sent (the timeline's length)."""
_PING = 15.0
_TICK = 0.5
_LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def _asset(name: str) -> bytes:
    return resources.files("rdzv.cli").joinpath("page").joinpath(name).read_bytes()


class Hub:
    """The latest snapshot document and the recent events, for every open stream.

    Messages get increasing numbers; a stream waits for numbers above the last it
    sent. :meth:`close` wakes every stream so that it ends.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=_HISTORY)
        self._snapshot: tuple[int, dict[str, Any]] | None = None
        self._sequence = 0
        self.closed = False

    def publish(self, kind: str, document: dict[str, Any]) -> None:
        """Add an event (``kind="rdzv"``) or replace the snapshot (``kind="snapshot"``)."""
        with self._changed:
            self._sequence += 1
            if kind == "snapshot":
                self._snapshot = (self._sequence, document)
            else:
                self._events.append((self._sequence, document))
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def snapshot(self) -> dict[str, Any] | None:
        with self._changed:
            return None if self._snapshot is None else self._snapshot[1]

    def after(self, seen: int, timeout: float) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """The messages numbered above ``seen`` (waiting up to ``timeout`` for one), and the
        number of the last; the snapshot comes last, and only the newest."""
        with self._changed:
            self._changed.wait_for(lambda: self.closed or self._sequence > seen, timeout)
            out: list[tuple[str, dict[str, Any]]] = [
                ("rdzv", doc) for number, doc in self._events if number > seen
            ]
            if self._snapshot is not None and self._snapshot[0] > seen:
                out.append(("snapshot", self._snapshot[1]))
            return self._sequence, out


class _Handler(BaseHTTPRequestHandler):
    """GET only: the assets, ``/snapshot`` and the ``/events`` stream."""

    server: PageServer
    protocol_version = "HTTP/1.1"
    timeout = _IDLE  # of every read and write: an idle or stuck page does not hold a thread

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a page polls nothing, but a log line per request is noise on a terminal."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        data = url.path not in ASSETS  # the assets hold no data: no token, so the page loads
        refusal = self.server.refusal(self.headers.get("Host", ""), self.headers, url.query, data)
        if refusal is not None:
            self._send(HTTPStatus.FORBIDDEN, refusal.encode(), "text/plain; charset=utf-8")
            return
        if url.path in ASSETS:
            name, kind = ASSETS[url.path]
            self._send(HTTPStatus.OK, _asset(name), kind)
        elif url.path == "/snapshot":
            body = json.dumps(self.server.hub.snapshot()).encode()
            self._send(HTTPStatus.OK, body, "application/json")
        elif url.path == "/events":
            self._stream()
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _headers(self, status: HTTPStatus, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self._headers(status, kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        if not self.server.streams.acquire(blocking=False):
            busy = f"this page serves at most {MAX_STREAMS} open pages: close one and reload\n"
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, busy.encode(), "text/plain; charset=utf-8")
            return
        try:
            self._headers(HTTPStatus.OK, "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 2000\n\n")
            for chunk in self._messages():
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            return  # the page was closed, or took nothing for the idle timeout
        finally:
            self.server.streams.release()

    def _messages(self) -> Iterator[bytes]:
        hub, seen, quiet = self.server.hub, 0, 0.0
        while not hub.closed:
            seen, messages = hub.after(seen, _TICK)
            for kind, document in messages:
                yield f"event: {kind}\ndata: {json.dumps(document)}\n\n".encode()
            quiet = 0.0 if messages else quiet + _TICK
            if quiet >= _PING:
                quiet = 0.0
                yield b": ping\n\n"  # finds a closed page, and keeps proxies from timing out


def _family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 literal (``::1``), else AF_INET (names resolve to IPv4)."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


class PageServer(ThreadingHTTPServer):
    """The HTTP server of the page; ``token`` (bytes) is required of every request if set."""

    daemon_threads = True

    def __init__(self, host: str, port: int, hub: Hub, token: str | None) -> None:
        self.hub = hub
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self._token = None if token is None else token.encode()
        self._loopback = is_loopback_host(host)
        self.address_family = _family(host)
        super().__init__((host, port), _Handler)

    def refusal(self, host: str, headers: Any, query: str, data: bool = True) -> str | None:
        """Why a request is refused, or ``None``; the token is asked only for ``data``."""
        if self._loopback and self._token is None:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in _LOCAL_NAMES:
                return f"this page answers only to 127.0.0.1 or localhost, not {host!r}\n"
        if self._token is None or not data:
            return None
        given = parse_qs(query).get("token", [""])[0]
        bearer = headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            given = bearer[len("Bearer ") :]
        if hmac.compare_digest(given.encode(), self._token):
            return None
        return "a valid token is required: open the page with ?token=TOKEN\n"


def _feed(watcher: Watcher, hub: Hub, args: argparse.Namespace, failed: list[Exception]) -> None:
    """The watcher's items into the hub, until the watcher stops.

    Any other failure is published and added to ``failed``: the page must then
    stop, or it would show the last snapshot as live.
    """
    try:
        for item in watcher:
            if isinstance(item, Snapshot):
                hub.publish("snapshot", describe_snapshot(item, args))
            else:
                hub.publish("rdzv", item_to_json(item))
    except CommandError as e:  # an invalid option: shown on the page, which stays up
        problem = WatchStatus(time.time(), "unreachable", str(e))
        hub.publish("rdzv", item_to_json(problem))
    except Exception as e:
        message = f"the watcher failed ({type(e).__name__}: {e}); the page stops"
        hub.publish("rdzv", item_to_json(WatchStatus(time.time(), "unreachable", message)))
        failed.append(e)


def run_page(args: argparse.Namespace, settings: RendezvousSettings, out: Output) -> int:
    """Serve the page until Ctrl-C or SIGTERM; exit status 0 then.

    Raises:
        CommandError: no token for an address off loopback (status USAGE), the
            port cannot be bound, or the watcher failed (the page then stops).
    """
    token = args.token or os.environ.get("RDZV_STATUS_TOKEN") or None
    if token is None and not is_loopback_host(args.host):
        raise CommandError(
            f"--host {args.host} makes the page reachable from other machines: give --token "
            "(or $RDZV_STATUS_TOKEN) too, or leave --host at 127.0.0.1",
            ExitStatus.USAGE,
        )
    hub = Hub()
    try:
        server = PageServer(args.host, args.port, hub, token)
    except OSError as e:
        raise CommandError(
            f"cannot serve the page on {args.host}:{args.port}: {e}. Give another --port "
            "(--port 0 picks a free one), or a --host this machine has (127.0.0.1, or ::1 "
            "for IPv6)"
        ) from e
    watcher = watcher_for(args, settings)
    failed: list[Exception] = []
    # Daemons: a watcher blocked in a request must not keep the process alive.
    feeding = threading.Thread(
        target=_feed, args=(watcher, hub, args, failed), name="rdzv-watch", daemon=True
    )
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": _TICK}, daemon=True
    )
    host, port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + ("?token=..." if token else "")
    try:
        with sigterm_interrupts():
            feeding.start()
            serving.start()
            out(f"rdzv status page of '{args.run_id}' on {url}  (Ctrl-C to stop)")
            while serving.is_alive() and not failed:
                serving.join(timeout=_TICK)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.stop()
        hub.close()
        if serving.is_alive():
            server.shutdown()  # (it waits for serve_forever, which must be running)
        server.server_close()
        # A watcher blocked in a request (a store that does not answer) is a daemon
        # that reads only: it is given a moment, not the request's whole timeout.
        feeding.join(timeout=1.0)
        watcher.close()
    if failed:
        error = failed[0]
        raise CommandError(
            f"the page stopped because its watcher failed ({type(error).__name__}: {error}); "
            "this is a bug in rdzv: please report it with this message"
        ) from error
    return ExitStatus.OK
