"""``rdzv close``: close a rendezvous from outside the job, without joining it.

The close goes through the same executor and the same pure decision
(:func:`rdzv.core.decide_close`) as a node's ``set_closed``: read, decide, write
by compare-and-set, so that a close never overwrites a concurrent join. The
command takes part under a node id of its own (``rdzv-close@<host>``) that it
never adds to the state.

``--force`` is the recovery procedure for a state that does not decode (written
by another program or another rdzv version): it replaces the value, whatever it
is, with a closed, empty state, still by compare-and-set against the value it read.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import attrs

from rdzv.api import (
    RendezvousConnectionError,
    RendezvousStateError,
    RendezvousTimeoutError,
)
from rdzv.cli._common import CommandError, ExitStatus, Output, add_common_arguments, positive_float
from rdzv.cli._target import (
    add_keep_alive_arguments,
    add_target_arguments,
    keep_alive_settings,
    open_target,
)
from rdzv.cli.status import read_state
from rdzv.core import (
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    encode_state,
    protocol,
)
from rdzv.dynamic.executor import RendezvousOpExecutor, wall_clock
from rdzv.watching.source import Source

__all__ = ["add_parser", "close_rendezvous", "force_close", "run"]

EPILOG = """\
examples:
  rdzv close --backend c10d --endpoint node0:29400 --run-id job42
  rdzv close --backend etcd-v2 --endpoint etcd1:2379 --run-id job42 --etcd-prefix /team-a

Every node's next next_rendezvous() raises RendezvousClosedError; nodes in a
complete round see it when their launcher next calls is_closed() or
next_rendezvous(). A closed rendezvous stays closed: start the next job with
another run id.

recovery of a corrupt state: when `rdzv status` reports that the state does not
decode, `rdzv close --force ...` replaces it with a closed, empty state (only if
nobody wrote in between), so that every node stops with RendezvousClosedError
instead of RendezvousStateError. --force also writes a closed state when there
is none, so that nodes started later with this run id fail at once.

exit status: 0 closed (or already closed), 3 the state does not decode (and no
--force), 4 no state for this run id (and no --force), 1 the backend cannot be
reached or the close timed out, 2 a mistake on the command line.
"""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``close`` to the ``rdzv`` sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "close",
        help="close a rendezvous from outside: nodes' next next_rendezvous() fails",
        description="Close a rendezvous without joining it, so that every node's next "
        "next_rendezvous() raises RendezvousClosedError.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_arguments(parser)
    add_common_arguments(parser)
    add_keep_alive_arguments(parser)
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long (default 30, torch's close_timeout)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write a closed, empty state even if the stored one does not decode or is absent",
    )
    return parser


def cli_node() -> NodeDesc:
    """The id under which this process runs operations: never a participant's."""
    return NodeDesc(f"rdzv-close@{socket.gethostname()}", os.getpid(), 0)


def close_rendezvous(target: Source, settings: RendezvousSettings) -> RendezvousState:
    """Run the close decision through the executor until the state is closed; return it.

    Raises:
        CommandError: the backend cannot be reached, the state does not decode
            (status CORRUPT_STATE) or the close timed out.
    """
    executor = RendezvousOpExecutor(cli_node(), target.backend, settings)
    deadline = wall_clock() + settings.timeout.close.total_seconds()
    try:
        return executor.run(protocol.close(deadline))
    except RendezvousStateError as e:
        raise CommandError(
            f"{e} Use --force to replace it with a closed state.", ExitStatus.CORRUPT_STATE
        ) from e
    except RendezvousTimeoutError as e:
        raise CommandError(
            f"the close did not complete within {settings.timeout.close.total_seconds():g} s "
            f"({e}); the backend is overloaded or another writer keeps winning. Run it again "
            "or raise --timeout."
        ) from e
    except RendezvousConnectionError as e:
        raise CommandError(str(e)) from e


def force_close(target: Source) -> None:
    """Replace whatever is stored, if unchanged since it was read, with a closed empty state.

    Raises:
        CommandError: the backend cannot be reached, or someone wrote in between.
    """
    try:
        token = target.raw_token()
        result = target.backend.set_state(encode_state(RendezvousState(closed=True)), token)
    except (RendezvousConnectionError, RendezvousStateError) as e:
        raise CommandError(f"--force failed: {e}") from e
    if result is None or not result[2]:
        raise CommandError(
            "--force wrote nothing: the stored value changed while the command ran. Look at "
            "it again with `rdzv status` and run the command again."
        )


def _describe(state: RendezvousState) -> str:
    waiting = len(state.wait_list) + len(state.redundancy_list)
    return (
        f"round {state.round}, {len(state.participants)} participant(s), "
        f"{waiting} waiting or redundant"
    )


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``rdzv close``; return the exit status.

    Raises:
        CommandError: see :func:`close_rendezvous`, plus a corrupt state, or an
            absent one with no pending join, without ``--force``.
    """
    settings = attrs.evolve(
        keep_alive_settings(args), timeout=RendezvousTimeout(close=args.timeout)
    )
    target = open_target(args)
    name = f"rendezvous '{args.run_id}' ({target.where})"
    consequence = "every node's next next_rendezvous() raises RendezvousClosedError"
    try:
        reading = read_state(target)
        if reading.result != "ok" and args.force:
            force_close(target)
            before = "a value that did not decode" if reading.error is not None else "no state"
            out(f"wrote a closed, empty state for {name}, where there was {before}")
            out(f"{consequence}.")
            return ExitStatus.OK
        if reading.result == "corrupt":
            raise CommandError(
                f"the state of {name} does not decode: {reading.error} To replace it with a "
                "closed state, run the command again with --force.",
                ExitStatus.CORRUPT_STATE,
            )
        if reading.result == "no_state" and not reading.pending:
            raise CommandError(
                f"{name} has no state: nothing to close. Check --run-id and --endpoint; with "
                "--force a closed state is written so that nodes started later fail at once.",
                ExitStatus.NO_STATE,
            )
        if reading.state is not None and reading.state.closed:
            out(f"{name} was already closed ({_describe(reading.state)}).")
            return ExitStatus.OK
        state = close_rendezvous(target, settings)
        out(f"closed {name}: {_describe(state)}.")
        out(f"{consequence}.")
        return ExitStatus.OK
    finally:
        target.close()
