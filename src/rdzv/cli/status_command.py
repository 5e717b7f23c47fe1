"""``rdzv status``: once, with ``--watch``, or as a live page with ``--serve``.

Only the choice lives here, above the three modules it chooses between: the page
and the watch both build on :mod:`rdzv.cli.status`, which must not import them.
"""

from __future__ import annotations

import argparse

from rdzv.cli import status
from rdzv.cli._common import Output
from rdzv.cli._target import keep_alive_settings
from rdzv.cli.status_page import run_page
from rdzv.cli.status_watch import run_watch

__all__ = ["add_parser", "run"]

add_parser = status.add_parser


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``rdzv status``; return the exit status.

    Raises:
        CommandError: the backend cannot be reached or an option is invalid.
    """
    settings = keep_alive_settings(args)
    if args.serve:
        return run_page(args, settings, out)
    if args.watch is not None:
        return run_watch(args, settings, out)
    return status.run_once(args, settings, out)
