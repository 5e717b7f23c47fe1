"""The page's HTTP server on real sockets: who may read what, and that no wait is unbounded.

The server runs in this process with a :class:`Hub` the test publishes to; no
backend is involved (``test_watch_trouble.py`` runs the whole command).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from rdzv.cli.status_page import Hub, PageServer, _asset

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
