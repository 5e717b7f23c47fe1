"""Machinery of the rendezvous benchmarks: counting backends, worker processes, servers.

The parent process hosts the backend servers (an etcd it starts, or a TCP store
master) and spreads the N nodes of a run over a few worker processes, threads
inside each, so that a thousand nodes fit on two cores. Every node has its own
handler and its own backend client, as a separate machine would. The parent
drives the workers through pipes: each operation names a start time on the
system-wide monotonic clock, so nodes in different processes start together, and
each worker answers with its nodes' timings and the backend traffic it counted.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from rdzv import RendezvousBackend, RendezvousParameters
from rdzv.backends.base import UNCHANGED, HeartbeatBoard, IntentLog

IMPLS = ("rdzv", "torch")
BACKENDS = ("etcd-v2", "etcd-v3", "c10d")


class Counter:
    """Backend operations, writes and bytes of the nodes of one worker process.

    Bytes are those handed to or returned by the backend object: the encoded state
    before base64 (for both implementations), intent and heartbeat records.

    Each thread counts in a tally of its own, with no lock: a thousand node threads
    queueing on one lock per request measured the benchmark's own hand-offs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._tallies: list[_Tally] = []

    def _tally(self) -> _Tally:
        tally: _Tally | None = getattr(self._local, "tally", None)
        if tally is None:
            tally = self._local.tally = _Tally()
            with self._lock:
                self._tallies.append(tally)
        return tally

    def count(self, op: str, written: bytes | None = None, read: int = 0) -> None:
        tally = self._tally()
        tally.requests += 1
        tally.ops[op] = tally.ops.get(op, 0) + 1
        tally.bytes_read += read
        if written is not None:
            tally.writes += 1
            tally.bytes_written += len(written)

    def add(self, what: str, number: int) -> None:
        """Add ``number`` to the count ``what`` among the ops, not as a request."""
        tally = self._tally()
        tally.ops[what] = tally.ops.get(what, 0) + number

    def snapshot(self) -> dict[str, Any]:
        """The totals so far, as plain data."""
        with self._lock:
            tallies = list(self._tallies)
        ops: dict[str, int] = {}
        for tally in tallies:
            for op, n in list(tally.ops.items()):
                ops[op] = ops.get(op, 0) + n
        return {
            "requests": sum(t.requests for t in tallies),
            "writes": sum(t.writes for t in tallies),
            "bytes_written": sum(t.bytes_written for t in tallies),
            "bytes_read": sum(t.bytes_read for t in tallies),
            "ops": ops,
        }


class _Tally:
    """One thread's counts."""

    def __init__(self) -> None:
        self.requests = 0
        self.writes = 0
        self.bytes_written = 0
        self.bytes_read = 0
        self.ops: dict[str, int] = {}


def counts_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What was counted from snapshot ``before`` to snapshot ``after``."""
    delta: dict[str, Any] = {k: after[k] - before[k] for k in after if k != "ops"}
    ops = {op: n - before["ops"].get(op, 0) for op, n in after["ops"].items()}
    delta["ops"] = {op: n for op, n in ops.items() if n}
    return delta


def add_counts(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """The sum of two count records (from two workers)."""
    result: dict[str, Any] = {k: total.get(k, 0) + more[k] for k in more if k != "ops"}
    ops = dict(total.get("ops", {}))
    for op, n in more["ops"].items():
        ops[op] = ops.get(op, 0) + n
    result["ops"] = ops
    return result


def _state_size(result: Any) -> int:
    return len(result[0]) if result else 0


class CountingBackend(RendezvousBackend):
    """rdzv backend wrapper that counts what goes to the real backend."""

    def __init__(self, inner: RendezvousBackend, counter: Counter) -> None:
        self._inner, self._counter = inner, counter

    @property
    def name(self) -> str:
        return self._inner.name

    def get_state(self) -> Any:
        result = self._inner.get_state()
        self._counter.count("get_state", read=_state_size(result))
        return result

    def get_state_if_changed(self, token: Any) -> Any:
        result = self._inner.get_state_if_changed(token)
        self._counter.count("get_state", read=_state_size(result) if result is not UNCHANGED else 0)
        return result

    def set_state(self, state: bytes, token: Any = None) -> Any:
        result = self._inner.set_state(state, token)
        lost = result is None or not result[2]
        op = "set_state_lost" if lost else "set_state"
        self._counter.count(op, state, read=_state_size(result) if lost else 0)
        return result

    @property
    def reconnect_window(self) -> float:
        return self._inner.reconnect_window

    def wait_for_change(self, token: Any, timeout: float) -> Any:
        result = self._inner.wait_for_change(token, timeout)
        self._counter.count("wait_for_change", read=_state_size(result))
        return result

    def release_waits(self) -> None:
        self._inner.release_waits()


class CountingSideChannels(CountingBackend, IntentLog, HeartbeatBoard):
    """Counting wrapper for backends with join intents and heartbeat records."""

    _inner: Any

    def post_intent(self, record: bytes, cursor: int) -> None:
        self._counter.count("post_intent", record)
        self._inner.post_intent(record, cursor)

    def read_intents(self, cursor: int) -> tuple[list[bytes], int]:
        result: tuple[list[bytes], int] = self._inner.read_intents(cursor)
        self._counter.count("read_intents", read=sum(map(len, result[0])))
        return result

    def beat(self, name: str, record: bytes, ttl: float) -> None:
        self._counter.count("beat", record)
        self._inner.beat(name, record, ttl)

    def read_beats(self, names: Sequence[str]) -> dict[str, bytes]:
        result: dict[str, bytes] = self._inner.read_beats(names)
        self._counter.count("read_beats", read=sum(map(len, result.values())))
        self._counter.add("beat_records_asked", len(names))
        return result


def counting(inner: RendezvousBackend, counter: Counter) -> CountingBackend:
    """Wrap ``inner``, keeping the side channels it offers."""
    if isinstance(inner, IntentLog) and isinstance(inner, HeartbeatBoard):
        return CountingSideChannels(inner, counter)
    return CountingBackend(inner, counter)


def torch_counting(inner: Any, counter: Counter) -> Any:
    """The same counting for a backend of torch's dynamic rendezvous (imports torch)."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        RendezvousBackend as TorchBackend,
    )

    class TorchCounting(TorchBackend):
        @property
        def name(self) -> str:
            return str(inner.name)

        def get_state(self) -> Any:
            result = inner.get_state()
            counter.count("get_state", read=_state_size(result))
            return result

        def set_state(self, state: bytes, token: Any = None) -> Any:
            result = inner.set_state(state, token)
            lost = result is None or not result[2]
            op = "set_state_lost" if lost else "set_state"
            counter.count(op, state, read=_state_size(result) if lost else 0)
            return result

    return TorchCounting()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class CellConfig:
    """What every node of one run is built with."""

    impl: str
    backend: str
    endpoint: str
    run_id: str
    min_nodes: int
    max_nodes: int
    keep_alive_interval: float = 5.0
    keep_alive_max_attempt: int = 3
    last_call: float = 30.0
    join_timeout: float = 600.0
    read_timeout: int = 60
    torch_store_sharing: bool = True
    """False sets TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torch's workers."""

    @property
    def heartbeat_expiry(self) -> float:
        return self.keep_alive_interval * self.keep_alive_max_attempt


def make_handler(config: CellConfig, counter: Counter) -> Any:
    """A new node: its own backend client and handler, the backend counted.

    c10d nodes connect to the store the parent hosts (``is_host=false``).
    """
    options: dict[str, Any] = {"read_timeout": config.read_timeout}
    if config.backend == "c10d":
        options["is_host"] = "false"
    timeouts = {
        "join": timedelta(seconds=config.join_timeout),
        "last_call": timedelta(seconds=config.last_call),
    }
    args = (config.backend, config.endpoint, config.run_id, config.min_nodes, config.max_nodes)
    if config.impl == "rdzv":
        from rdzv import DynamicRendezvousHandler, RendezvousTimeout
        from rdzv.backends import c10d, etcd

        params = RendezvousParameters(*args, "127.0.0.1", **options)
        module: Any = {"etcd-v2": etcd, "c10d": c10d}.get(config.backend)
        if module is None:
            from rdzv.backends import etcd_v3 as module
        inner, store = module.create_backend(params)
        backend: Any = counting(inner, counter)
        handler_type: Any = DynamicRendezvousHandler
        timeout: Any = RendezvousTimeout(**timeouts)
    else:
        from torch.distributed.elastic.rendezvous import RendezvousParameters as TorchParams
        from torch.distributed.elastic.rendezvous import (
            c10d_rendezvous_backend,
            etcd_rendezvous_backend,
        )
        from torch.distributed.elastic.rendezvous import dynamic_rendezvous as torch_dynamic

        if not config.torch_store_sharing:
            os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"  # a worker runs one run
        module = etcd_rendezvous_backend if config.backend == "etcd-v2" else c10d_rendezvous_backend
        inner, store = module.create_backend(TorchParams(*args, "127.0.0.1", **options))
        backend = torch_counting(inner, counter)
        handler_type = torch_dynamic.DynamicRendezvousHandler
        timeout = torch_dynamic.RendezvousTimeout(**timeouts)
    return handler_type.from_backend(
        config.run_id,
        store,
        backend,
        config.min_nodes,
        config.max_nodes,
        "127.0.0.1",
        timeout,
        keep_alive_interval=config.keep_alive_interval,
        keep_alive_max_attempt=config.keep_alive_max_attempt,
    )


def round_of(handler: Any) -> int:
    """The round a handler saw last (rdzv: ``round``; torch: its state holder's)."""
    if hasattr(handler, "round"):
        return int(handler.round)
    return int(handler._state_holder.state.round)


def stop_heartbeats(handler: Any) -> None:
    """Stop a node's keep-alive for good: rdzv's thread, torch's timer (both private)."""
    handler._stop_heartbeats()


def stuck_nodes(handlers: Mapping[int, Any]) -> list[dict[str, Any]]:
    """For each node thread still running: its innermost frames, and the last state it saw.

    Read from the outside when a run passes its limit, so it costs the run nothing:
    the stacks say which call a node is blocked in, the state (rdzv's handlers only)
    whether it was in the round, on the wait list, or unknown to it.
    """
    frames = sys._current_frames()
    stuck = []
    for thread in threading.enumerate():
        if not thread.name.startswith("node-") or thread.ident not in frames:
            continue
        index = int(thread.name.removeprefix("node-"))
        # No source lines: reading them releases the GIL, which a worker of a thousand
        # busy threads gives back only seconds later, once per file.
        walked = traceback.walk_stack(frames[thread.ident])
        stack = traceback.StackSummary.extract(walked, limit=STUCK_FRAMES, lookup_lines=False)
        stack.reverse()
        entry: dict[str, Any] = {
            "node": index,
            "stack": [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in stack],
        }
        executor = getattr(handlers.get(index), "_executor", None)
        if executor is not None:
            state = executor.state
            node = handlers[index]._node
            entry["seen"] = {
                "round": state.round,
                "complete": state.complete,
                "closed": state.closed,
                "participants": len(state.participants),
                "wait_list": len(state.wait_list),
                "is_participant": node in state.participants,
                "is_waiting": node in state.wait_list,
                "has_heartbeat": node in state.last_heartbeats,
            }
        stuck.append(entry)
    return stuck


STUCK_FRAMES = 6
"""Frames of a stuck node's stack that a status reports, innermost last."""


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class NodeGroup:
    """The nodes one worker process runs, and the operations the parent asks of them.

    Every operation returns plain data: per-node timestamps on the monotonic clock
    (the same clock in every process of the machine), errors, and the backend
    traffic of this worker's nodes during the operation.
    """

    def __init__(self) -> None:
        self.counter = Counter()
        self.handlers: dict[int, Any] = {}
        self.config: CellConfig | None = None
        self.completed = 0
        self._lock = threading.Lock()
        self._begin = self.counter.snapshot()

    def begin(self) -> None:
        """An operation starts: reset what :meth:`status` reports."""
        with self._lock:
            self.completed = 0
        self._begin = self.counter.snapshot()

    def status(self) -> dict[str, Any]:
        """Nodes through a rendezvous, and the traffic, since the operation began;
        ``stuck``: what each node thread still running is doing (see :func:`stuck_nodes`)."""
        with self._lock:
            completed = self.completed
        counts = counts_between(self._begin, self.counter.snapshot())
        stuck = stuck_nodes(self.handlers)
        return {"status": True, "completed": completed, "counts": counts, "stuck": stuck}

    def setup(self, config: CellConfig, indices: list[int]) -> dict[str, Any]:
        """Build the handlers of nodes ``indices``."""
        self.config = config
        for index in indices:
            self.handlers[index] = make_handler(config, self.counter)
        return {"pid": os.getpid()}

    def _run_threads(
        self, at: float, targets: Mapping[int, Callable[[], dict[str, Any]]], until: float | None
    ) -> dict[str, Any]:
        """Run each target in its own thread from ``at``; collect results and traffic."""
        results: dict[int, dict[str, Any]] = {}
        lock = threading.Lock()

        def run(index: int, target: Callable[[], dict[str, Any]]) -> None:
            _sleep_until(at)
            try:
                result = target()
            except Exception as e:  # reported to the parent, which fails the cell
                result = {"error": _error(e)}
            with lock:
                results[index] = result

        threads = [
            threading.Thread(target=run, args=item, daemon=True, name=f"node-{item[0]}")
            for item in targets.items()
        ]
        for thread in threads:
            thread.start()
        _sleep_until(at)
        before = self.counter.snapshot()
        for thread in threads:
            thread.join()
        if until is not None:
            _sleep_until(until)
        return {"nodes": results, "counts": counts_between(before, self.counter.snapshot())}

    def _join_now(self, handler: Any) -> dict[str, Any]:
        info = handler.next_rendezvous()
        with self._lock:
            self.completed += 1
        return {
            "done": time.monotonic(),
            "rank": info.rank,
            "world": info.world_size,
            "round": round_of(handler),
        }

    def join(self, at: float, indices: list[int] | None = None) -> dict[str, Any]:
        """Nodes ``indices`` (default all) call ``next_rendezvous`` at ``at``."""
        chosen = self.handlers if indices is None else {i: self.handlers[i] for i in indices}
        targets = {i: partial(self._join_now, h) for i, h in chosen.items()}
        return self._run_threads(at, targets, None)

    def agents(
        self,
        at: float,
        poll: float,
        limit: float,
        victims: list[int],
        newcomers: list[int],
        world: int,
    ) -> dict[str, Any]:
        """From ``at``: victims stop their heartbeats, newcomers join, the rest act as agents.

        An agent polls ``num_nodes_waiting()`` every ``poll`` seconds (from a random
        phase, as independent launchers would) and calls ``next_rendezvous`` when
        it is above 0, as torchrun's agent does, until it is in a round of
        ``world`` nodes. Agents not there by ``at + limit`` report ``done: None``;
        ``seen`` is when an agent first saw a waiting node.
        """
        for index in victims:
            if index in self.handlers:
                stop_heartbeats(self.handlers.pop(index))

        def agent(handler: Any, join_first: bool) -> dict[str, Any]:
            seen: float | None = None
            if join_first:
                result = self._join_now(handler)
                if result["world"] == world:
                    return {"seen": None, **result}
            time.sleep(random.uniform(0, poll))
            while time.monotonic() < at + limit:
                if handler.num_nodes_waiting() > 0:
                    seen = seen or time.monotonic()
                    result = self._join_now(handler)
                    if result["world"] == world:
                        return {"seen": seen, **result}
                time.sleep(poll)
            return {"seen": seen, "done": None}

        targets = {i: partial(agent, h, i in newcomers) for i, h in self.handlers.items()}
        return self._run_threads(at, targets, None)

    def steady(self, at: float, duration: float, poll: float) -> dict[str, Any]:
        """Keep-alives run on their own; each node polls ``num_nodes_waiting`` every ``poll`` s."""

        def agent(handler: Any) -> dict[str, Any]:
            time.sleep(random.uniform(0, poll))
            polls = waiting = 0
            while time.monotonic() < at + duration:
                polls += 1
                waiting += handler.num_nodes_waiting() > 0
                time.sleep(min(poll, max(at + duration - time.monotonic(), 0)))
            return {"polls": polls, "saw_waiting": waiting}

        targets = {i: partial(agent, h) for i, h in self.handlers.items()}
        return self._run_threads(at, targets, at + duration)


def _yappi() -> Any:
    """yappi (``pip install yappi``): a profiler that sees every thread, used by --profile."""
    return importlib.import_module("yappi")


def _finish(profile: str | None) -> None:
    """End the worker: save its profile if one runs; skip interpreter teardown.

    Teardown is skipped because daemon threads may still be blocked in backend calls.
    """
    if profile is not None:
        yappi = _yappi()
        yappi.stop()
        path = os.path.join(profile, f"worker-{os.getpid()}.pstat")
        yappi.get_func_stats().save(path, type="pstat")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _watchdog(parent: int, stop: Any, profile: str | None) -> None:
    """End the worker when the parent asks (``stop``) or is gone, even mid-operation."""
    while not stop.wait(0.5):
        if os.getppid() != parent:
            break
    _finish(profile)


def worker_main(
    conn: Connection,
    stop: Any,
    parent: int,
    profile: str | None,
    switch_interval: float | None = None,
) -> None:
    """A worker process: carry out the parent's operations until told to stop.

    Operations run one at a time, each in a thread; meanwhile the worker answers
    ``status`` (what the operation under way has done so far). With ``profile``
    (a directory), yappi profiles every thread's CPU time and saves it there.
    ``switch_interval`` (seconds) replaces Python's GIL switch interval.
    """
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    logging.basicConfig(level=logging.ERROR, format=f"[worker {os.getpid()}] %(message)s")
    if profile is not None:
        yappi = _yappi()
        yappi.set_clock_type("cpu")
        yappi.start()
    threading.Thread(target=_watchdog, args=(parent, stop, profile), daemon=True).start()
    group = NodeGroup()
    send_lock = threading.Lock()

    def send(reply: dict[str, Any]) -> None:
        with send_lock:
            conn.send(reply)

    def carry_out(op: str, args: dict[str, Any]) -> None:
        try:
            reply = getattr(group, op)(**args)
        except Exception as e:
            reply = {"error": _error(e), "traceback": traceback.format_exc()}
        send(reply)

    send({"ready": os.getpid()})
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message["op"] == "exit":
            break
        if message["op"] == "status":
            send(group.status())
            continue
        group.begin()
        # In a thread, so that the parent can still ask for the status of a stuck operation.
        threading.Thread(
            target=carry_out, args=(message["op"], message["args"]), daemon=True
        ).start()
    for handler in group.handlers.values():
        with contextlib.suppress(Exception):
            stop_heartbeats(handler)
    _finish(profile)


STATUS_WAIT = 15.0
"""Seconds the parent waits for the workers' status after a cell ran out of time."""


class CellTimeout(Exception):
    """The run of a cell passed its time limit."""


class WorkerError(Exception):
    """A worker failed an operation; the message carries its error."""


@dataclass
class Workers:
    """Worker processes of one run, each owning a slice of the nodes.

    They are killed (by pid, they are this process's children) when the run ends,
    times out, or the benchmark is interrupted.
    """

    count: int
    profile: str | None = None
    """A directory: the workers profile themselves with yappi and save there."""
    switch_interval: float | None = None
    """The workers' GIL switch interval in seconds (``None``: Python's)."""
    processes: list[Any] = field(default_factory=list)
    conns: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._stop = self._ctx.Event()

    def start(self, deadline: float) -> None:
        for _ in range(self.count):
            parent, child = self._ctx.Pipe()
            args = (child, self._stop, os.getpid(), self.profile, self.switch_interval)
            process = self._ctx.Process(target=worker_main, args=args, daemon=True)
            process.start()
            child.close()
            self.processes.append(process)
            self.conns.append(parent)
        self._gather(deadline)

    def status(self) -> dict[str, Any]:
        """What the stuck operation did so far on every worker: completions, traffic, and
        what each node still running is doing (``stuck``).

        Workers that do not answer within :data:`STATUS_WAIT` seconds are left out, and
        ``answered`` says how many did: a worker of a thousand busy threads may wait
        that long for the GIL.
        """
        completed = answered = 0
        counts: dict[str, Any] = {}
        stuck: list[dict[str, Any]] = []
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send({"op": "status"})
        deadline = time.monotonic() + STATUS_WAIT
        for conn in self.conns:
            with contextlib.suppress(OSError, EOFError):
                while conn.poll(max(deadline - time.monotonic(), 0)):
                    reply = conn.recv()
                    if "status" in reply:
                        completed += reply["completed"]
                        counts = add_counts(counts, reply["counts"])
                        stuck.extend(reply["stuck"])
                        answered += 1
                        break
        return {"completed": completed, "counts": counts, "answered": answered, "stuck": stuck}

    def call(self, op: str, args: Sequence[dict[str, Any]], deadline: float) -> list[Any]:
        """Send worker ``i`` the operation with ``args[i]``; return the replies in order."""
        for conn, worker_args in zip(self.conns, args, strict=True):
            conn.send({"op": op, "args": worker_args})
        replies = self._gather(deadline)
        for reply in replies:
            if "error" in reply:
                raise WorkerError(reply["error"] + "\n" + reply.get("traceback", ""))
        return replies

    def broadcast(self, op: str, args: dict[str, Any], deadline: float) -> list[Any]:
        """The same operation, with the same arguments, on every worker."""
        return self.call(op, [args] * self.count, deadline)

    def _gather(self, deadline: float) -> list[Any]:
        replies: dict[int, Any] = {}
        pending = dict(enumerate(self.conns))
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CellTimeout
            for conn in wait(list(pending.values()), timeout=remaining):
                index = next(i for i, c in pending.items() if c is conn)
                try:
                    replies[index] = pending[index].recv()
                except EOFError as e:
                    raise WorkerError(f"worker {index} exited unexpectedly") from e
                del pending[index]
        return [replies[i] for i in range(len(self.conns))]

    def stop(self) -> None:
        """Ask the workers to exit, then kill whichever has not within a few seconds.

        Idempotent: a second call returns at once. It must not touch the stop event
        again, whose lock a worker killed by the first call may have died holding.
        """
        if not self.processes:
            return
        self._stop.set()
        end = time.monotonic() + (30.0 if self.profile else 3.0)
        for process in self.processes:
            process.join(max(end - time.monotonic(), 0))
            if process.is_alive():
                process.kill()
                process.join(5)
        for conn in self.conns:
            conn.close()
        self.processes.clear()
        self.conns.clear()


def split(n: int, parts: int) -> list[list[int]]:
    """Node indices ``0..n-1`` in ``parts`` contiguous slices of near-equal size."""
    size, extra = divmod(n, parts)
    slices, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        slices.append(list(range(start, end)))
        start = end
    return slices


@contextlib.contextmanager
def store_master(impl: str) -> Iterator[str]:
    """A TCP store master hosted by this process for one run; yields its endpoint."""
    if impl == "rdzv":
        from rdzv.store.tcp import TCPStore

        rdzv_store = TCPStore("127.0.0.1", 0, is_master=True, timeout=timedelta(seconds=60))
        try:
            yield f"127.0.0.1:{rdzv_store.port}"
        finally:
            rdzv_store.close()
    else:
        # torch.distributed does not declare TCPStore as an export.
        torch_tcp_store: Any = importlib.import_module("torch.distributed").TCPStore
        torch_store = torch_tcp_store(
            "127.0.0.1",
            0,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=60),
        )
        try:
            yield f"127.0.0.1:{torch_store.port}"
        finally:
            del torch_store
