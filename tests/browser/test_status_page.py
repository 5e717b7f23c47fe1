"""The status page in a real browser: 4 nodes form a round, one is killed, the next round forms.

The page (``rdzv status --serve --token``) is opened once, with its token, before
the store is up, and never reloaded: it shows the backend unreachable, then the
four nodes of round 0; after one is SIGKILLed its row turns dead within the
heartbeat expiry, and round 1 of the three survivors appears. Screenshots go to
the test's directory; with ``$RDZV_DOCS_SCREENSHOT`` set, the one taken while the
killed node shows dead is copied there too (docs/_static/status-serve.png was
made so).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _nodes import Node
from _ports import free_port
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

INTERVAL, ATTEMPTS = 0.5, 3
EXPIRY = INTERVAL * ATTEMPTS
KILLED = 2
TOKEN = "page-token"  # the page must load its script and stream with it


@pytest.fixture
def job() -> Iterator[dict[str, Any]]:
    port = free_port()
    where = {
        "backend": "c10d",
        "endpoint": f"127.0.0.1:{port}",
        "run_id": f"page-{uuid.uuid4().hex[:6]}",
    }
    started: list[Node] = []
    page = subprocess.Popen(
        [
            sys.executable, "-m", "rdzv", "status", "--backend", "c10d",
            "--endpoint", where["endpoint"], "--run-id", where["run_id"],
            "--keep-alive-interval", str(INTERVAL), "--keep-alive-max-attempt", str(ATTEMPTS),
            "--read-timeout", "1", "--serve", "--port", "0", "--token", TOKEN,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def start_nodes(count: int) -> list[Node]:
        config = {
            **where,
            "min_nodes": 3,
            "max_nodes": 4,
            "options": {
                "last_call_timeout": 0.5,
                "join_timeout": 60,
                "keep_alive_interval": INTERVAL,
                "keep_alive_max_attempt": ATTEMPTS,
            },
        }
        for _ in range(count):
            node = Node(config)
            node.expect("ready")  # node 0 hosts the store
            started.append(node)
        return started

    try:
        assert page.stdout is not None
        line = page.stdout.readline()
        assert " on http://" in line, page.stderr.read() if page.stderr else line
        url = line.split(" on ")[1].split()[0].replace("?token=...", f"?token={TOKEN}")
        yield {"url": url, "start_nodes": start_nodes, "page": page}
    finally:
        for node in reversed(started):
            node.close()
        page.send_signal(signal.SIGTERM)
        _, err = page.communicate(timeout=15)
        assert page.returncode == 0, err


def _text(driver: webdriver.Chrome, selector: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, selector).text)


def _rows(driver: webdriver.Chrome) -> dict[str, str]:
    """node -> its status cell, as the page shows them now."""
    found: dict[str, str] = driver.execute_script(
        "const out = {};"
        "for (const tr of document.querySelectorAll('#nodes tbody tr'))"
        "  out[tr.dataset.node] = tr.querySelector('td.status').textContent;"
        "return out;"
    )
    return found


def _until(driver: webdriver.Chrome, timeout: float, what: str, check: Callable[[], bool]) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _: check(), message=what)


def test_the_page_follows_a_kill_and_the_next_round_without_a_reload(
    browser: webdriver.Chrome, job: dict[str, Any], tmp_path: Path
) -> None:
    browser.get(job["url"])
    browser.execute_script("window.rdzvNotReloaded = true;")
    _until(browser, 30, "the page to say the store is unreachable",
           lambda: "unreachable" in _text(browser, "#problem"))  # fmt: skip
    browser.save_screenshot(str(tmp_path / "0-unreachable.png"))

    nodes: list[Node] = job["start_nodes"](4)
    for node in nodes:
        node.send("next")
    ranks = {f"127.0.0.1_{n.process.pid}_0": n.expect("round")["rank"] for n in nodes}
    _until(browser, 15, "round 0 of four nodes",
           lambda: _text(browser, "#round").startswith("Round 0 — complete, world size 4")
           and set(_rows(browser).values()) == {"alive"})  # fmt: skip
    assert set(_rows(browser)) == set(ranks)
    assert not browser.find_element(By.ID, "problem").is_displayed()
    browser.save_screenshot(str(tmp_path / "1-round-0.png"))

    killed = f"127.0.0.1_{nodes[KILLED].process.pid}_0"
    nodes[KILLED].kill()
    killed_at = time.monotonic()
    _until(browser, EXPIRY + 3, "the killed node's row to turn dead",
           lambda: _rows(browser).get(killed) == "dead")  # fmt: skip
    took = time.monotonic() - killed_at
    # Its last heartbeat was at most an interval before the kill, so the row must not turn
    # dead sooner than that before the expiry; the wait's deadline bounds it from above.
    assert took >= EXPIRY - INTERVAL - 0.5, f"the row turned dead {took:.2f} s after the kill"
    others = {n: s for n, s in _rows(browser).items() if n != killed}
    assert "dead" not in others.values(), others
    mid = tmp_path / "2-killed.png"
    browser.save_screenshot(str(mid))

    survivors = [n for i, n in enumerate(nodes) if i != KILLED]
    deadline = time.monotonic() + 30
    while survivors[0].ask("waiting", "waiting")["count"] == 0:
        assert time.monotonic() < deadline, "the survivors never saw the node missing"
        time.sleep(0.1)
    for node in survivors:
        node.send("next")
    for node in survivors:
        assert node.expect("round")["world_size"] == 3
    round_1 = "Round 1 — complete, world size 3"
    _until(browser, 15, "round 1 of the three survivors",
           lambda: _text(browser, "#round").startswith(round_1))  # fmt: skip
    rows = _rows(browser)
    assert killed not in rows and len(rows) == 3 and "dead" not in rows.values(), rows
    timeline = _text(browser, "#timeline")
    assert f"{killed} declared dead" in timeline
    assert "round 1: completed, world size 3" in timeline
    assert browser.execute_script("return window.rdzvNotReloaded === true;")
    browser.save_screenshot(str(tmp_path / "3-round-1.png"))

    docs = os.environ.get("RDZV_DOCS_SCREENSHOT")
    if docs:
        shutil.copyfile(mid, docs)
