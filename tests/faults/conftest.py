"""Fixtures of the fault suite, and the record of each scenario's figures.

A test calls ``record(key=value, ...)`` with what it measured (seconds to recover,
peak memory, operations served). The figures are printed at the end of the run
and, when ``$RDZV_FAULTS_RESULTS`` names a file, written there as JSON with each
test's outcome: ``benchmarks/faults.py`` runs this suite and prints the table.

``$RDZV_FAULTS_LOAD_SECONDS`` sets how long the load tests run (default 10 s, the
CI setting; the report runs them for 60 s).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rdzv.etcd_server import EtcdServer

RESULTS_ENV = "RDZV_FAULTS_RESULTS"
LOAD_SECONDS_ENV = "RDZV_FAULTS_LOAD_SECONDS"
DEFAULT_LOAD_SECONDS = 10.0

_figures: dict[str, dict[str, Any]] = {}
_outcomes: dict[str, dict[str, Any]] = {}


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record figures of this test's scenario (numbers are rounded for the table)."""
    figures = _figures.setdefault(request.node.nodeid, {})

    def add(**values: Any) -> None:
        for key, value in values.items():
            figures[key] = round(value, 3) if isinstance(value, float) else value

    return add


@pytest.fixture
def load_seconds() -> float:
    """How long each load test runs."""
    return float(os.environ.get(LOAD_SECONDS_ENV, DEFAULT_LOAD_SECONDS))


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run id unique to this test."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """An etcd for the tests that do not stop it (those start their own)."""
    server = EtcdServer()
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of this test alone, which it may stop and start again."""
    server = EtcdServer()
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[item.nodeid] = {
            "outcome": report.outcome,
            "seconds": round(report.duration, 2),
            "doc": (getattr(item, "obj", None).__doc__ or "").strip().split("\n")[0]
            if getattr(item, "obj", None) is not None
            else "",
        }
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _figures:
        return
    terminalreporter.section("fault scenarios: figures")
    for nodeid, figures in _figures.items():
        name = nodeid.split("::", 1)[-1]
        shown = ", ".join(f"{k}={v}" for k, v in figures.items())
        terminalreporter.write_line(f"{name}: {shown}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    results = [
        {"test": nodeid, **_outcomes.get(nodeid, {}), "figures": _figures.get(nodeid, {})}
        for nodeid in dict.fromkeys([*_outcomes, *_figures])
    ]
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
