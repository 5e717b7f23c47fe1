"""EtcdV3Client's HTTP transport: what a member that misbehaves looks like.

A stand-in gateway on loopback plays the misbehaving member (it answers 503, sends
no JSON, never answers, or splits a watch line across chunks); the real etcd of
the session plays the healthy one.
"""

from __future__ import annotations

import base64
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


def _event_line(value: bytes, revision: int) -> bytes:
    kv = {
        "key": base64.b64encode(b"/transport/watched").decode(),
        "value": base64.b64encode(value).decode(),
        "create_revision": "2",
        "mod_revision": str(revision),
    }
    return json.dumps({"result": {"events": [{"kv": kv}]}}).encode() + b"\n"


def _chunk(handler: http.server.BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def _stream_head(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    _chunk(handler, json.dumps({"result": {"created": True}}).encode() + b"\n")


def test_a_kept_watch_that_timed_out_mid_line_reads_on_from_there() -> None:
    """A wait that ends while half an event has come leaves the stream whole for the next."""
    sent = threading.Event()
    streams: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path.endswith("/kv/range"):  # the read once the watch is open: absent
            _reply(handler, 200, json.dumps({"header": {"revision": "1"}}).encode())
            return
        streams.append(handler.path)
        _stream_head(handler)
        line = _event_line(b"v", 8)
        _chunk(handler, line[:30])  # half a line: the first wait must end without it
        time.sleep(0.6)
        _chunk(handler, line[30:])
        sent.wait(10)

    with _serve(answer) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        try:
            assert client.watch(b"/transport/watched", None, 0.3, keep=True) is None
            event = client.watch(b"/transport/watched", None, 5, keep=True)
            assert event is not None and (event.kv.value, event.kv.mod_revision) == (b"v", 8)
            assert len(streams) == 1
        finally:
            sent.set()
            client.close()


def test_a_kept_watch_the_member_closed_is_opened_again() -> None:
    streams: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path.endswith("/kv/range"):
            _reply(handler, 200, json.dumps({"header": {"revision": "1"}}).encode())
            return
        streams.append(handler.path)
        _stream_head(handler)
        if len(streams) == 1:
            time.sleep(0.5)  # after the first wait returned, with the stream kept
            handler.wfile.write(b"0\r\n\r\n")
            handler.close_connection = True
            return
        _chunk(handler, _event_line(b"again", 9))
        time.sleep(1)

    with _serve(answer) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        try:
            assert client.watch(b"/transport/watched", None, 0.2, keep=True) is None
            time.sleep(0.5)
            # The kept stream has ended: the wait opens another rather than fail.
            event = client.watch(b"/transport/watched", None, 5, keep=True)
            assert event is not None and event.kv.value == b"again"
            assert len(streams) == 2
        finally:
            client.close()


def test_a_watch_stream_that_ends_is_a_connection_error() -> None:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path.endswith("/kv/range"):
            _reply(handler, 200, json.dumps({"header": {"revision": "1"}}).encode())
            return
        _stream_head(handler)
        handler.wfile.write(b"0\r\n\r\n")
        handler.close_connection = True

    with _serve(answer) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        with pytest.raises(EtcdV3ConnectionError, match="ended a watch stream"):
            client.watch(b"/transport/watched", None, 2)


def test_a_watch_refused_quotes_etcd() -> None:
    body = json.dumps({"error": "etcdserver: permission denied", "code": 7}).encode()
    with _serve(lambda handler: _reply(handler, 403, body)) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        with pytest.raises(EtcdV3Error, match="HTTP 403: etcdserver: permission denied") as error:
            client.watch(b"/transport/watched", None, 2)
        assert not isinstance(error.value, EtcdV3ConnectionError)


def test_a_watch_answer_that_is_no_stream_is_a_connection_error() -> None:
    with _serve(lambda handler: _reply(handler, 200, b"{}")) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        with pytest.raises(EtcdV3ConnectionError, match="not a stream"):
            client.watch(b"/transport/watched", None, 2)


def test_requests_share_a_connection_and_one_etcd_closed_is_not_an_error() -> None:
    peers: list[tuple[str, int]] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        peers.append(handler.client_address)
        body = json.dumps({"header": {"revision": "3"}}).encode()
        _reply(handler, 200, body)
        # The third answer ends its connection without saying so, as an idle
        # timeout of etcd would: the next request must not fail for it.
        handler.close_connection = len(peers) == 3

    with _serve(answer) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        for _ in range(3):
            assert client.get(b"/transport/k") == (None, 3)
        assert len(set(peers)) == 1  # one connection for three requests
        time.sleep(0.2)  # the close reaches the client
        assert client.get(b"/transport/k") == (None, 3)
        assert len(set(peers)) == 2
        client.close()


def test_a_chunked_answer_is_read_whole() -> None:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        text = json.dumps({"header": {"revision": "5"}, "count": "2"}).encode()
        for piece in (text[:7], text[7:]):
            _chunk(handler, piece)
            time.sleep(0.05)
        handler.wfile.write(b"0\r\n\r\n")

    with _serve(answer) as port:
        client = EtcdV3Client("127.0.0.1", port, read_timeout=5)
        assert client.count_prefix(b"/transport/") == 2
        assert client.count_prefix(b"/transport/") == 2  # the same connection, read to its end
        client.close()
