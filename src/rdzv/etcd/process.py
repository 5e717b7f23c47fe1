"""Helpers for etcd child processes, shared by :class:`~rdzv.etcd.server.EtcdServer` and
:class:`~rdzv.etcd.member.EtcdMember`: a free port, the child's environment and its
death with this process, and etcd's log lines made short.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

__all__ = ["child_environment", "die_with_parent_hook", "free_port", "summarize_log_line"]


def free_port() -> int:
    """Return a port that is free on loopback now (another process may take it before etcd)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
