"""Helpers for etcd child processes, shared by :class:`~rdzv.etcd.server.EtcdServer` and
:class:`~rdzv.etcd.member.EtcdMember`: the errors of running etcd, free ports, starting
the child (its environment and its death with this process), and etcd's log lines
made short.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

__all__ = [
    "HOST",
    "EtcdServerError",
    "EtcdServerTimeoutError",
    "child_environment",
    "die_with_parent_hook",
    "free_port",
    "port_is_free",
    "spawn",
    "summarize_log_line",
]

HOST = "127.0.0.1"
"""The only address a local etcd listens on: loopback."""


class EtcdServerError(RuntimeError):
    """etcd could not be found, started or reached; the message says why and what to do."""


class EtcdServerTimeoutError(EtcdServerError, TimeoutError):
    """etcd did not answer within the start timeout, or did not exit when stopped."""


def free_port() -> int:
    """Return a port that is free on loopback now (another process may take it before etcd)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether etcd could bind ``port`` on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The same option etcd (Go) sets, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def spawn(
    command: list[str],
    log_path: str,
    stderr: int | IO[Any] | None = None,
    *,
    label: str = "",
    hint: str = "",
) -> tuple[subprocess.Popen[bytes], int]:
    """Start etcd with ``command``, its output appended to the file ``log_path``.

    Writes a header line ``--- rdzv: <label><command>`` to the log first; etcd's
    standard error goes there too unless ``stderr`` is given. Returns the process
    and the offset of the header, where this run's part of the log starts.

    The child runs in a session of its own: Ctrl-C in a terminal reaches only this
    process, which then stops etcd in order instead of both dying at once.

    Raises:
        EtcdServerError: the binary could not be run; ``hint`` ends the message.
    """
    # etcd keeps its own copy of the descriptor; this process needs none.
    with open(log_path, "ab") as log:
        offset = log.tell()
        log.write(f"--- rdzv: {label}{command}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log if stderr is None else stderr,
                env=child_environment(command),
                close_fds=True,
                start_new_session=True,
                # The hook only calls prctl and getppid: no lock a thread of this
                # process could hold at fork time.
                preexec_fn=die_with_parent_hook(),  # noqa: PLW1509
            )
        except OSError as e:
            ending = f" {hint}" if hint else ""
            raise EtcdServerError(
                f"Could not run the etcd binary {command[0]!r}: {e}.{ending}"
            ) from e
    return process, offset


def summarize_log_line(line: str) -> str:
    """One line of etcd's log, shortened for a message: level, message and error.

    etcd 3.5 logs one JSON object a line; the caller and stack trace do not help a reader.
    """
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:300]
    if not isinstance(entry, dict) or "msg" not in entry:
        return line[:300]
    error = f": {entry['error']}" if "error" in entry else ""
    return f"  {entry.get('level', '?')}: {entry['msg']}{error}"[:300]


_PR_SET_PDEATHSIG = 1


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes etcd receive SIGKILL when this process dies (Linux).

    The finalizer stops etcd when the interpreter exits normally; a process killed
    by SIGKILL or by an unhandled SIGTERM runs no finalizer, and its etcd would live
    on as an orphan holding its ports. The kernel's parent-death signal covers
    those. It fires when the *thread* that started etcd ends, so it is set only
    for etcd started from the main thread (which ends with the process); from
    another thread, etcd is stopped by :meth:`~rdzv.etcd.server.EtcdServer.stop` and the finalizer
    only. ``None`` where ``prctl`` is not available.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent, kill = os.getpid(), int(signal.SIGKILL)

    def die_with_parent() -> None:
        # Runs in the child between fork and exec: no allocation-heavy work, no logging.
        prctl(_PR_SET_PDEATHSIG, kill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call took effect
            os._exit(1)

    return die_with_parent


def child_environment(command: list[str]) -> dict[str, str]:
    """This process's environment without the ``ETCD_*`` variables that ``command`` sets.

    etcd refuses to start when an ETCD_* variable sets a flag that is also given
    on the command line; the command line is what the caller means.
    """
    shadowed = {
        "ETCD_" + arg[2:].split("=", 1)[0].replace("-", "_").upper()
        for arg in command[1:]
        if arg.startswith("--")
    }
    return {k: v for k, v in os.environ.items() if k not in shadowed}
