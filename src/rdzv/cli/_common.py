"""What every command shares: exit statuses, the error a user can meet, argument types."""

from __future__ import annotations

import argparse
import enum
import math
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TextIO

__all__ = [
    "CommandError",
    "ExitStatus",
    "Output",
    "add_common_arguments",
    "free_port",
    "non_negative_float",
    "non_negative_int",
    "port_number",
    "positive_float",
    "positive_int",
    "read_secret_file",
    "run_id",
    "sigterm_interrupts",
    "stdout_writer",
]


class ExitStatus(enum.IntEnum):
    """The exit statuses of ``rdzv`` (documented in docs/operations.rst)."""

    OK = 0
    ERROR = 1
    """The command could not do its job: unreachable endpoint, server failure, ..."""
    USAGE = 2
    """A mistake on the command line (argparse's status)."""
    CORRUPT_STATE = 3
    """The rendezvous state exists but does not decode."""
    NO_STATE = 4
    """``rdzv status``: the backend holds no state for this run id."""
    INTERRUPTED = 130
    """Ctrl-C stopped a command that was not meant to run until interrupted (128 + SIGINT)."""


class CommandError(Exception):
    """A failure the user can act on: printed as one ``rdzv <command>: error: ...`` line.

    Attributes:
        status: the process exit status (an :class:`ExitStatus`).
    """

    def __init__(self, message: str, status: ExitStatus = ExitStatus.ERROR) -> None:
        super().__init__(message)
        self.status = status


Output = Callable[[str], None]
"""Where a command writes its lines (one call, one whole line)."""


def stdout_writer(stream: TextIO | None = None) -> Output:
    """An :data:`Output` that writes whole lines to ``stream`` (default stdout) and flushes."""

    def write(line: str) -> None:
        target = stream or sys.stdout
        target.write(line + "\n")
        target.flush()

    return write


def _number(text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: seconds (or any quantity) > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0: any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, got {value}")
    return value


def run_id(text: str) -> str:
    """argparse type: a run id, non-empty and without whitespace or control characters.

    Such a run id could not be typed the same way on every node, and would make
    etcd keys that are hard to inspect.
    """
    if not text:
        raise argparse.ArgumentTypeError("the run id must not be empty")
    bad = [c for c in text if c.isspace() or not c.isprintable()]
    if bad:
        raise argparse.ArgumentTypeError(
            f"the run id {text!r} contains whitespace or control characters"
        )
    return text


def read_secret_file(path: str, what: str) -> str:
    """Read a secret (token, password) from ``path``, without its trailing newline.

    Raises:
        CommandError: the file cannot be read, or is empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CommandError(f"cannot read the {what} file {path!r}: {reason}") from e
    if not secret:
        raise CommandError(f"the {what} file {path!r} is empty; write the secret in it")
    return secret


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--verbose``, accepted after the command name too (``rdzv status -v ...``)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what rdzv does (on standard error)",
    )


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt``, as Ctrl-C does.

    ``kill``, systemd and container runtimes stop a program with SIGTERM; the
    commands then clean up (stop their servers and nodes) exactly as on Ctrl-C.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
