"""The ``rdzv`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rdzv.demo import run_demo

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdzv",
        description="Elastic rendezvous for distributed training jobs.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log what rdzv does")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="watch nodes rendezvous, and meet again when a late node arrives",
        description="Start nodes that rendezvous in this process and show each step.",
        epilog="example: rdzv demo --nodes 4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--nodes", type=_positive, default=4, help="number of nodes (default 4)")
    demo.add_argument("--min", type=_positive, help="min_nodes (default: nodes - 1)")
    demo.add_argument("--max", type=_positive, help="max_nodes (default: nodes)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        nodes = args.nodes
        max_nodes = args.max or nodes
        min_nodes = args.min or max(1, nodes - 1)
        if not min_nodes <= max_nodes:
            parser.error(f"--min ({min_nodes}) must not exceed --max ({max_nodes})")
        return run_demo(nodes, min_nodes, max_nodes, lambda line: print(line, flush=True))
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
