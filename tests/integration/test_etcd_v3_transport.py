"""EtcdV3Client's HTTP transport (urllib3): what a member that misbehaves looks like.

A stand-in gateway on loopback plays the misbehaving member (it answers 503, sends
no JSON, never answers, or splits a watch line across chunks); the real etcd of
the session plays the healthy one.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from rdzv.etcd_server import EtcdServer
from rdzv.etcd_v3_client import EtcdV3Client, EtcdV3ConnectionError, EtcdV3Error

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class _Gateway(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextmanager
def _serve(answer: Handler) -> Iterator[int]:
    """A stand-in gateway on a free loopback port that answers every POST with ``answer``."""

    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = _Gateway(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def leaderless() -> Iterator[int]:
    """A member that answers every request as etcd's gateway does without a leader."""
    body = json.dumps({"error": "etcdserver: no leader", "code": 14}).encode()
    with _serve(lambda handler: _reply(handler, 503, body)) as port:
        yield port


@pytest.fixture
def hung() -> Iterator[int]:
    """A member that takes requests and never answers (a paused etcd)."""
    release = threading.Event()

    def never(_: http.server.BaseHTTPRequestHandler) -> None:
        release.wait(30)

    try:
        with _serve(never) as port:
            yield port
    finally:
        release.set()


def test_a_request_after_close_opens_a_new_connection(etcd_v3_server: EtcdServer) -> None:
    client = EtcdV3Client("127.0.0.1", etcd_v3_server.get_port(), read_timeout=10)
    revision = client.put(b"/transport/closed", b"one")
    client.close()
    kv, _ = client.get(b"/transport/closed")
    assert kv is not None and kv.value == b"one" and kv.mod_revision == revision


def test_a_member_without_a_leader_hands_the_request_to_the_next(
    leaderless: int, etcd_v3_server: EtcdServer
) -> None:
    client = EtcdV3Client(
        "127.0.0.1",
        leaderless,
        read_timeout=10,
        other_members=[("127.0.0.1", etcd_v3_server.get_port())],
    )
    client.put(b"/transport/next", b"served")
    kv, _ = client.get(b"/transport/next")
    assert kv is not None and kv.value == b"served"


def test_a_member_without_a_leader_alone_is_a_connection_error_quoting_etcd(
    leaderless: int,
) -> None:
    client = EtcdV3Client("127.0.0.1", leaderless, read_timeout=2)
    with pytest.raises(EtcdV3ConnectionError, match="HTTP 503: etcdserver: no leader"):
        client.get(b"/transport/any")


def test_an_answer_that_is_not_json_is_a_connection_error() -> None:
    with _serve(lambda handler: _reply(handler, 200, b"<html>proxy</html>")) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=2)
        with pytest.raises(EtcdV3ConnectionError, match="did not answer"):
            client.get(b"/transport/any")


def test_a_refusal_quotes_etcd_and_is_no_connection_error() -> None:
    body = json.dumps({"error": "etcdserver: permission denied", "code": 7}).encode()
    with _serve(lambda handler: _reply(handler, 403, body)) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=2)
        with pytest.raises(EtcdV3Error, match=r"refused kv/range: .*permission denied") as refused:
            client.get(b"/transport/any")
        assert not isinstance(refused.value, EtcdV3ConnectionError)


def test_a_member_that_never_answers_costs_its_share_of_read_timeout(
    hung: int, etcd_v3_server: EtcdServer
) -> None:
    client = EtcdV3Client(
        "127.0.0.1", hung, read_timeout=2, other_members=[("127.0.0.1", etcd_v3_server.get_port())]
    )
    started = time.monotonic()
    kv, _ = client.get(b"/transport/absent")
    assert kv is None
    assert 0.9 < time.monotonic() - started < 1.9  # half of read_timeout, then the next


def test_a_watch_on_a_member_that_never_answers_returns_at_its_timeout(hung: int) -> None:
    client = EtcdV3Client("127.0.0.1", hung, read_timeout=5)
    started = time.monotonic()
    assert client.watch(b"/transport/watched", None, 0.5) is None
    assert 0.4 < time.monotonic() - started < 2


def _chunked_watch(handler: http.server.BaseHTTPRequestHandler) -> None:
    if handler.path.endswith("/kv/range"):  # the read once the watch is open: absent
        _reply(handler, 200, json.dumps({"header": {"revision": "7"}}).encode())
        return
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    event = {
        "result": {
            "header": {"revision": "8"},
            "events": [
                {
                    "kv": {
                        "key": "L3RyYW5zcG9ydC93YXRjaGVk",
                        "value": "dg==",
                        "create_revision": "8",
                        "mod_revision": "8",
                    }
                }
            ],
        }
    }
    lines = json.dumps({"result": {"created": True}}) + "\n" + json.dumps(event) + "\n"
    cut = len(lines) - 40  # the event arrives in two chunks
    for piece in (lines[:cut], lines[cut:]):
        data = piece.encode()
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()
        time.sleep(0.05)
    handler.wfile.write(b"0\r\n\r\n")


def test_a_watch_reads_a_line_split_across_chunks() -> None:
    with _serve(_chunked_watch) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        event = client.watch(b"/transport/watched", None, 5)
        assert event is not None and not event.deleted
        assert (event.kv.key, event.kv.value, event.kv.mod_revision) == (
            b"/transport/watched",
            b"v",
            8,
        )
