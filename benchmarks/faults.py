"""Report of the fault and hostile-input suite: every scenario, its outcome and its figures.

    python benchmarks/faults.py                      # everything, load tests for 60 s
    python benchmarks/faults.py --load-seconds 10    # the CI setting
    python benchmarks/faults.py -k outage            # some scenarios (pytest's -k)

The scenarios are the tests of ``tests/faults`` (one code for CI and for this
report): this script runs them with pytest, has them write their outcome and
figures to a JSON file (``$RDZV_FAULTS_RESULTS``), and prints a table of scenario,
outcome, duration and figures (time to recover, peak memory of the store server,
operations served). The JSON is kept with ``--json PATH``. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "faults"


def run_suite(load_seconds: float, results: Path, extra: list[str]) -> int:
    """Run tests/faults with pytest; return its exit status."""
    env = dict(os.environ)
    env["RDZV_FAULTS_RESULTS"] = str(results)
    env["RDZV_FAULTS_LOAD_SECONDS"] = str(load_seconds)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SUITE)]
    return subprocess.run([*command, *extra], cwd=ROOT, env=env, check=False).returncode


def scenario_name(test: str) -> str:
    """``tests/faults/test_x.py::test_does_y[param]`` -> ``does y [param]``."""
    name = test.split("::", 1)[-1]
    base, _, param = name.partition("[")
    base = base.removeprefix("test_").replace("_", " ")
    return f"{base} [{param}" if param else base


def table(results: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| scenario | outcome | s | figures |",
        "|---|---|---:|---|",
    ]
    for result in results:
        figures = "; ".join(f"{k}={v}" for k, v in result.get("figures", {}).items())
        lines.append(
            f"| {scenario_name(result['test'])} | {result.get('outcome', '?')} | "
            f"{result.get('seconds', '')} | {figures} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-seconds", type=float, default=60.0, help="load test duration")
    parser.add_argument("--json", type=Path, help="keep the results here")
    parser.add_argument("-k", dest="keyword", help="only the scenarios pytest's -k selects")
    args = parser.parse_args()
    extra = ["-k", args.keyword] if args.keyword else []
    with tempfile.TemporaryDirectory(prefix="rdzv-faults-") as tmp:
        path = args.json or Path(tmp, "results.json")
        started = time.monotonic()
        status = run_suite(args.load_seconds, path, extra)
        elapsed = time.monotonic() - started
        results = json.loads(path.read_text()) if path.exists() else []
    print()
    print(
        f"fault suite: {len(results)} scenario(s) in {elapsed:.0f} s, load tests "
        f"{args.load_seconds:g} s, pytest exit status {status}"
    )
    print()
    print(table(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
