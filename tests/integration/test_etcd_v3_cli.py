"""``rdzv demo --backend etcd-v3`` and command-line errors of etcd-v3.

``rdzv status`` and ``rdzv close`` on live etcd-v3 nodes run in test_cli.py (its
``target`` fixture covers etcd-v3).
"""

from __future__ import annotations

import re

from test_cli import assert_one_line_error, free_port, rdzv


def test_demo_on_etcd_v3_shows_the_survivors_of_a_kill_meet_again() -> None:
    result = rdzv("demo", "--backend", "etcd-v3", "--nodes", "3", "--kill", "1", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"on etcd-v3: etcd at 127\.0\.0\.1:\d+", out)
    assert "round 0 complete: 3 node(s)" in out
    assert re.search(r"node \d \(pid \d+\) killed with SIGKILL", out)
    assert re.search(r"round \d+ complete: 2 node\(s\)", out)
    assert "every node shut down" in out
    assert result.stderr == ""


def test_demo_on_etcd_v3_admits_a_late_node() -> None:
    result = rdzv("demo", "--backend", "etcd-v3", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "round 0 complete: 3 node(s)" in result.stdout
    assert re.search(r"round \d+ complete: 4 node\(s\)", result.stdout)


def test_an_unreachable_etcd_v3_is_one_line_on_stderr() -> None:
    port = free_port()
    result = rdzv(
        "status", "--backend", "etcd-v3", "--endpoint", f"127.0.0.1:{port}", "--run-id", "j",
        "--read-timeout", "3",
    )  # fmt: skip
    line = assert_one_line_error(result, 1)
    assert f"etcd at http://127.0.0.1:{port} did not answer" in line


def test_an_invalid_etcd_v3_option_exits_2_naming_it() -> None:
    result = rdzv(
        "close", "--backend", "etcd-v3", "--endpoint", "h", "--run-id", "j",
        "--ca-cert", "/nonexistent/ca.pem",
    )  # fmt: skip
    line = assert_one_line_error(result, 2)
    assert "ca_cert" in line and "must be the path of a file" in line
