"""The ``rdzv`` command line, run as users run it: ``python -m rdzv ...`` in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from _cli import rdzv, start_rdzv
from _nodes import Node, process_gone, wait_until
from _ports import free_port

from rdzv.etcd_server import EtcdServer
from rdzv.store.tcp import TCPStore
from rdzv.store.tcp_protocol import StoreAuthenticationError
from rdzv.store.tcp_server import TCPStoreServer


def read_until(stream: IO[str] | None, pattern: str, timeout: float = 30) -> list[str]:
    """Read lines until one matches ``pattern``; return every line read."""
    assert stream is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(lines))


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("usage:")]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def stop_later() -> Iterator[Callable[[subprocess.Popen[str]], subprocess.Popen[str]]]:
    """Kill, at the end of the test, the processes handed to it (by their own pid)."""
    started: list[subprocess.Popen[str]] = []

    def track(process: subprocess.Popen[str]) -> subprocess.Popen[str]:
        started.append(process)
        return process

    yield track
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


# -- help and user mistakes --------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[], ["demo"], ["status"], ["close"], ["serve"], ["serve", "tcp"], ["serve", "etcd"]],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = rdzv(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: rdzv" in result.stdout
    if command not in ([], ["serve"]):
        assert "examples:" in result.stdout


def test_an_unreachable_c10d_endpoint_is_one_line_on_stderr() -> None:
    port = free_port()
    result = rdzv("status", "--backend", "c10d", "--endpoint", f"127.0.0.1:{port}", "--run-id", "j")
    line = assert_one_line_error(result, 1)
    assert line.startswith("rdzv status: error: Cannot reach the rendezvous store")
    assert f"127.0.0.1:{port}" in line


def test_an_unreachable_etcd_is_one_line_on_stderr() -> None:
    port = free_port()
    result = rdzv(
        "close", "--backend", "etcd-v2", "--endpoint", f"127.0.0.1:{port}", "--run-id", "j"
    )
    line = assert_one_line_error(result, 1)
    assert f"etcd at http://127.0.0.1:{port} failed" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["status", "--backend", "c10d", "--endpoint", "h:99999", "--run-id", "j"], "port"),
        (["status", "--backend", "c10d", "--endpoint", "h:1", "--run-id", "a b"], "run id"),
        (["close", "--backend", "zk", "--endpoint", "h:1", "--run-id", "j"], "invalid choice"),
        (["serve", "tcp", "--port", "65536"], "a port is between 0 and 65535"),
        (["serve", "tcp"], "--port"),
        (["demo", "--nodes", "0"], "at least 1"),
        (["demo", "--nodes", "3", "--kill", "3"], "would leave no node"),
        (
            [
                "status",
                "--backend",
                "etcd-v2",
                "--endpoint",
                "h",
                "--run-id",
                "j",
                "--ca-cert",
                "/nonexistent/ca.pem",
            ],
            "must be the path of a file",
        ),
    ],
)
def test_command_line_mistakes_exit_2_without_traceback(args: list[str], needle: str) -> None:
    line = assert_one_line_error(rdzv(*args), 2)
    assert needle in line


def test_a_missing_token_file_is_named() -> None:
    result = rdzv(
        "status", "--backend", "c10d", "--endpoint", "127.0.0.1:1", "--run-id", "j",
        "--auth-token-file", "/nonexistent/token",
    )  # fmt: skip
    line = assert_one_line_error(result, 1)
    assert "cannot read the auth token file '/nonexistent/token'" in line


# -- demo --------------------------------------------------------------------------


def test_demo_with_a_killed_node_shows_the_survivors_meet_again() -> None:
    result = rdzv("demo", "--nodes", "3", "--kill", "1", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "round 0 complete: 3 node(s)" in out
    assert re.search(r"node 2 \(pid \d+\) killed with SIGKILL", out)
    assert re.search(r"node [01] sees num_nodes_waiting\(\) = \d+", out)
    assert re.search(r"round \d+ complete: 2 node\(s\)", out)
    assert "every node shut down" in out
    assert result.stderr == ""


def _demo_pids(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(r"started: pid (\d+)", line))]


def test_ctrl_c_to_the_process_group_leaves_no_node(
    stop_later: Callable[[subprocess.Popen[str]], subprocess.Popen[str]],
) -> None:
    demo = stop_later(start_rdzv("demo", "--nodes", "3", "--keep-running", new_group=True))
    lines = read_until(demo.stdout, r"node 1 started")
    os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = demo.communicate(timeout=30)
    pids = _demo_pids(lines)
    assert len(pids) >= 2
    assert demo.returncode in (0, 130), err
    assert "Traceback" not in err
    wait_until(lambda: all(process_gone(pid) for pid in pids), 10, "the nodes to be gone")


def test_ctrl_c_to_the_parent_alone_stops_every_node(
    stop_later: Callable[[subprocess.Popen[str]], subprocess.Popen[str]],
) -> None:
    demo = stop_later(start_rdzv("demo", "--nodes", "3", "--keep-running"))
    lines = read_until(demo.stdout, r"Ctrl-C to stop them", timeout=60)
    pids = _demo_pids(lines)
    assert len(pids) == 3
    demo.send_signal(signal.SIGINT)
    rest, err = demo.communicate(timeout=30)
    assert demo.returncode == 0, err
    assert "every node shut down" in rest
    assert all(process_gone(pid) for pid in pids)


# -- status, close, on live nodes ----------------------------------------------------


@pytest.fixture(params=["c10d", "etcd-v2", "etcd-v3"])
def target(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Where the nodes of a test meet, and the ``rdzv`` options that name it."""
    run_id = f"cli-{uuid.uuid4().hex[:8]}"
    if request.param in ("etcd-v2", "etcd-v3"):
        # etcd-v3: an etcd without the v2 API, as etcd 3.6 is.
        fixture = "etcd_server" if request.param == "etcd-v2" else "etcd_v3_server"
        server: EtcdServer = request.getfixturevalue(fixture)
        prefix: str = request.getfixturevalue("etcd_prefix")
        endpoint = server.get_endpoint()
        options: dict[str, Any] = {"etcd_prefix": prefix}
        flags = ["--etcd-prefix", prefix]
    else:
        endpoint = f"127.0.0.1:{free_port()}"
        options, flags = {}, []
    return {
        "config": {"backend": request.param, "endpoint": endpoint, "run_id": run_id},
        "options": options,
        "args": ["--backend", request.param, "--endpoint", endpoint, "--run-id", run_id, *flags],
    }


@pytest.fixture
def nodes(target: dict[str, Any]) -> Iterator[Callable[..., list[Node]]]:
    started: list[Node] = []

    def start(count: int, min_nodes: int, max_nodes: int) -> list[Node]:
        config = {
            **target["config"],
            "min_nodes": min_nodes,
            "max_nodes": max_nodes,
            "options": {
                "last_call_timeout": 0.3,
                "join_timeout": 60,
                "keep_alive_interval": 1,
                "keep_alive_max_attempt": 5,
                **target["options"],
            },
        }
        for _ in range(count):
            node = Node(config)
            node.expect("ready")  # one at a time: on c10d the first one hosts the store
            started.append(node)
        return started[-count:]

    yield start
    for node in reversed(started):  # the c10d host last
        node.close()


def test_status_shows_a_live_round_of_three_nodes(
    target: dict[str, Any], nodes: Callable[..., list[Node]]
) -> None:
    three = nodes(3, 3, 3)
    for node in three:
        node.send("next")
    ranks = sorted(node.expect("round")["rank"] for node in three)
    assert ranks == [0, 1, 2]
    keep_alive = ["--keep-alive-interval", "1", "--keep-alive-max-attempt", "5"]
    # Past the first heartbeat (1 s): the ages shown must come from the nodes'
    # heartbeat records, not from the state written when they joined.
    time.sleep(1.6)

    result = rdzv("status", *target["args"], *keep_alive, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["result"] == "ok"
    state = doc["state"]
    assert (state["round"], state["complete"], state["closed"]) == (0, True, False)
    assert [p["rank"] for p in state["participants"]] == [0, 1, 2]
    assert {p["pid"] for p in state["participants"]} == {n.process.pid for n in three}
    assert all(0 <= p["heartbeat_age"] < 1.5 for p in state["participants"])
    assert (state["dead_nodes"], state["num_nodes_waiting"]) == ([], 0)

    text = rdzv("status", *target["args"], *keep_alive)
    assert text.returncode == 0, text.stderr
    assert "round 0: complete, world size 3; open" in text.stdout
    assert "participants (3):" in text.stdout
    assert "num_nodes_waiting: 0" in text.stdout


def test_close_makes_a_waiting_node_fail_with_rendezvous_closed(
    target: dict[str, Any], nodes: Callable[..., list[Node]]
) -> None:
    (waiting,) = nodes(1, 2, 2)
    waiting.send("next")  # blocks: the round needs 2 nodes

    def forming() -> bool:
        doc = json.loads(rdzv("status", *target["args"], "--json").stdout)
        return bool(doc["state"] and doc["state"]["participants"])

    # The first node admits itself at once and waits in the forming round.
    wait_until(forming, 30, "the node to join the forming round")
    shown = rdzv("status", *target["args"])
    assert "round 0: forming" in shown.stdout, shown.stdout

    closed = rdzv("close", *target["args"])
    assert closed.returncode == 0, closed.stderr
    assert "closed rendezvous" in closed.stdout

    error = waiting.expect("error")
    assert error["type"] == "RendezvousClosedError"
    again = rdzv("close", *target["args"])
    assert again.returncode == 0, again.stderr
    assert "already closed" in again.stdout
    status = rdzv("status", *target["args"])
    assert "CLOSED" in status.stdout


def test_status_of_an_unknown_run_id_says_no_state(target: dict[str, Any]) -> None:
    with contextlib.ExitStack() as stack:
        if target["config"]["backend"] == "c10d":
            # A store that serves no run yet: status must tell "no state" from "no store".
            host, port = target["config"]["endpoint"].rsplit(":", 1)
            stack.enter_context(TCPStoreServer(host, int(port)).start())
        result = rdzv("status", *target["args"])
    assert result.returncode == 4, result.stderr
    assert "no state" in result.stdout


# -- serve tcp, and a corrupt state ----------------------------------------------------


@pytest.fixture
def tcp_server(
    tmp_path: Path, stop_later: Callable[[subprocess.Popen[str]], subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], int, Path]:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = stop_later(start_rdzv("serve", "tcp", "--port", "0", "--auth-token-file", str(token)))
    first = read_until(server.stdout, r"listening on")[-1]
    port = int(first.rsplit(":", 1)[1])
    read_until(server.stdout, r"Ctrl-C to stop")
    return server, port, token


def test_serve_tcp_accepts_the_token_and_refuses_a_client_without_it(
    tcp_server: tuple[subprocess.Popen[str], int, Path],
) -> None:
    server, port, _ = tcp_server
    with TCPStore("127.0.0.1", port, auth_token="s3cret") as store:
        store.set("k", b"v")
        assert store.get("k") == b"v"
    with pytest.raises(StoreAuthenticationError):
        TCPStore("127.0.0.1", port, auth_token="")
    with pytest.raises(StoreAuthenticationError):
        TCPStore("127.0.0.1", port, auth_token="wrong")

    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert "stopped" in out


def test_serve_tcp_on_a_port_in_use_is_one_line(
    tcp_server: tuple[subprocess.Popen[str], int, Path],
) -> None:
    _, port, _ = tcp_server
    line = assert_one_line_error(rdzv("serve", "tcp", "--port", str(port)), 1)
    assert f"Cannot listen on 127.0.0.1:{port}" in line


def test_a_corrupt_state_is_reported_and_force_close_recovers(
    tcp_server: tuple[subprocess.Popen[str], int, Path],
) -> None:
    _, port, token = tcp_server
    with TCPStore("127.0.0.1", port, auth_token="s3cret") as store:
        store.set("rdzv.rendezvous.broken", b"bm90IGEgc3RhdGU=")  # base64 of "not a state"
    args = ["--backend", "c10d", "--endpoint", f"127.0.0.1:{port}", "--run-id", "broken"]
    args += ["--auth-token-file", str(token)]

    status = rdzv("status", *args)
    assert status.returncode == 3
    assert "the state does not decode" in status.stdout
    assert "was not written by rdzv" in status.stdout
    assert json.loads(rdzv("status", *args, "--json").stdout)["result"] == "corrupt"

    line = assert_one_line_error(rdzv("close", *args), 3)
    assert "--force" in line
    forced = rdzv("close", *args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(rdzv("status", *args, "--json").stdout)["state"]["closed"] is True


# -- serve etcd ----------------------------------------------------------------------


def test_serve_etcd_on_a_chosen_port_until_ctrl_c(
    stop_later: Callable[[subprocess.Popen[str]], subprocess.Popen[str]],
) -> None:
    port = free_port()
    server = stop_later(start_rdzv("serve", "etcd", "--port", str(port)))
    lines = read_until(server.stdout, r"Ctrl-C to stop", timeout=60)
    assert lines[0].startswith(f"etcd listening at http://127.0.0.1:{port} ")
    etcd_pid = int(lines[0].rsplit("pid ", 1)[1])
    status = rdzv("status", "--backend", "etcd-v2", "--endpoint", f"127.0.0.1:{port}",
                  "--run-id", "nobody", "--json")  # fmt: skip
    assert status.returncode == 4, status.stderr
    assert json.loads(status.stdout)["result"] == "no_state"

    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "stopped" in out
    assert process_gone(etcd_pid)


def test_serve_etcd_members_3_prints_the_endpoint_list_and_stops_every_member(
    stop_later: Callable[[subprocess.Popen[str]], subprocess.Popen[str]],
) -> None:
    server = stop_later(start_rdzv("serve", "etcd", "--members", "3", "--no-v2"))
    lines = read_until(server.stdout, r"Ctrl-C to stop", timeout=60)
    assert lines[0].startswith("etcd cluster of 3 members (v3 API only")
    pids = [int(line.rsplit("pid ", 1)[1]) for line in lines[1:4]]
    endpoint = lines[4].split("endpoint ", 1)[1]
    assert lines[4].startswith("nodes: backend etcd-v3,") and endpoint.count(",") == 2
    os.kill(pids[0], signal.SIGKILL)  # one member lost: the others still answer
    status = rdzv("status", "--backend", "etcd-v3", "--endpoint", endpoint,
                  "--run-id", "nobody", "--json")  # fmt: skip
    assert status.returncode == 4, status.stderr
    assert json.loads(status.stdout)["result"] == "no_state"

    server.send_signal(signal.SIGINT)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "stopped" in out
    assert all(process_gone(pid) for pid in pids)


def test_serve_etcd_members_refuses_a_port_or_a_data_dir() -> None:
    result = rdzv("serve", "etcd", "--members", "3", "--port", str(free_port()))
    assert result.returncode == 2
    assert "--port and --data-dir are for one member" in result.stderr


def test_status_watch_json_prints_a_line_per_change_of_status_until_ctrl_c(
    tcp_server: tuple[subprocess.Popen[str], int, Path],
    stop_later: Callable[[subprocess.Popen[str]], subprocess.Popen[str]],
) -> None:
    _, port, token = tcp_server
    args = ["--backend", "c10d", "--endpoint", f"127.0.0.1:{port}", "--run-id", "later"]
    args += ["--auth-token-file", str(token), "--json", "--watch", "0.3"]
    watch = stop_later(start_rdzv("status", *args))
    stdout = watch.stdout
    assert stdout is not None
    first = json.loads(stdout.readline())
    assert (first["type"], first["status"]) == ("watch_status", "no_state")
    with TCPStore("127.0.0.1", port, auth_token="s3cret") as store:
        store.set("rdzv.rendezvous.later", b"bm90IGEgc3RhdGU=")
    wait_until(
        lambda: json.loads(stdout.readline())["status"] == "corrupt",
        20,
        "the watch to see the new value",
    )
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=20)
    assert watch.returncode == 0, err
