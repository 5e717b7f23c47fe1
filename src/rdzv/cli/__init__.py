"""The ``rdzv`` command line: ``demo``, ``status``, ``close`` and ``serve``.

Each command lives in its own module with an ``add_parser`` and a ``run(args,
out) -> exit status``; this module only parses, sets up logging and turns the
errors a user can meet (:class:`CommandError`) into one line on standard error
and a non-zero status. Exit statuses are those of :class:`ExitStatus`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from rdzv.cli import close, demo, serve, status_command
from rdzv.cli._common import CommandError, ExitStatus, Output, stdout_writer

__all__ = ["CommandError", "ExitStatus", "build_parser", "main"]

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  rdzv demo                                 watch 4 local nodes rendezvous
  rdzv demo --nodes 3 --kill 1              ... and re-rendezvous when one dies
  rdzv status --backend c10d --endpoint node0:29400 --run-id job42
  rdzv close --backend etcd-v2 --endpoint etcd1:2379 --run-id job42
  rdzv serve tcp --port 29400 --host 0.0.0.0 --auth-token-file token.txt

`rdzv COMMAND --help` describes each command. `python -m rdzv` is the same program.
"""

_COMMANDS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "demo": demo.run,
    "status": status_command.run,
    "close": close.run,
    "serve": serve.run,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rdzv`` and its commands."""
    from rdzv import __version__  # noqa: PLC0415 - rdzv imports nothing from here

    parser = argparse.ArgumentParser(
        prog="rdzv",
        description="Elastic rendezvous for distributed training jobs: try it, inspect a "
        "running rendezvous, close one, or serve a backend.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rdzv {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what rdzv does (on standard error)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(commands)
    status_command.add_parser(commands)
    close.add_parser(commands)
    serve.add_parser(commands)
    return parser


def _command_name(args: argparse.Namespace) -> str:
    server = getattr(args, "server", None)
    return f"rdzv {args.command}" + (f" {server}" if server else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # python-etcd logs every failed request at ERROR before raising; the command
        # reports the failure itself, once.
        logging.getLogger("etcd").setLevel(logging.CRITICAL)
    name = _command_name(args)
    try:
        return _COMMANDS[args.command](args, stdout_writer())
    except CommandError as e:
        logger.debug("%s failed", name, exc_info=True)
        print(f"{name}: error: {e}", file=sys.stderr, flush=True)
        return e.status
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # `rdzv status ... | head`: the reader left; that is not an error of ours.
        # Point stdout at /dev/null so that the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitStatus.OK
