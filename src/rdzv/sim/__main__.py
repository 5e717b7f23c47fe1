"""``python -m rdzv.sim``: run simulator seeds; a failing seed prints its job and its trace."""

from __future__ import annotations

import argparse
import sys
import time

from rdzv.sim import check_seed

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run seeds; exit 1 when any run breaks an invariant."""
    parser = argparse.ArgumentParser(prog="python -m rdzv.sim", description=__doc__)
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run this seed only, and print its trace")
    parser.add_argument("--max-nodes", type=int, default=64, help="largest job drawn")
    parser.add_argument("--trace", action="store_true", help="print the trace of every run")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.first, args.first + args.seeds)
    started = time.monotonic()
    failed = nodes = steps = unchecked = 0
    for seed in seeds:
        scenario, result = check_seed(seed, args.max_nodes)
        nodes += scenario.total_nodes
        steps += result.steps
        unchecked += result.unchecked
        if result.violations or args.trace or args.seed is not None:
            print(f"seed {seed}: {scenario}")
            print(result.trace)
            print(f"seed {seed}: converged after {result.converged_at} s, {result.rounds} rounds")
        for violation in result.violations:
            print(f"seed {seed}: VIOLATION: {violation}")
        failed += bool(result.violations)
    elapsed = time.monotonic() - started
    print(
        f"{len(seeds)} seed(s), {nodes} node-runs, {steps} protocol steps in {elapsed:.1f} s: "
        f"{failed} failed, {unchecked} with too few live nodes to check liveness"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
