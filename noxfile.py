"""Sessions: ``nox -s tests lint typecheck`` is what CI runs (see .ci/run and README)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite: unit tests of the core, integration tests on real backends."""
    session.install("-e", ".[test]")
    # tests/interop needs torch, tests/browser a browser: each runs in its own session.
    session.run(
        "pytest", "--ignore=tests/interop", "--ignore=tests/browser", *(session.posargs or ["-q"])
    )


@nox.session(python=PYTHON)
def sim(session: nox.Session) -> None:
    """The deterministic simulator over many seeds, for longer hunts than the tests' budget.

    ``nox -s sim -- --seeds 10000 --first 5000``; a failing seed prints its job and its
    trace, and ``python -m rdzv.sim --seed N`` replays it. Not run by CI.
    """
    session.install("-e", ".")
    session.run("python", "-m", "rdzv.sim", *(session.posargs or ["--seeds", "2000"]))


@nox.session(python=PYTHON)
def simulate(session: nox.Session) -> None:
    """Scale by simulation (benchmarks/simulate.py): 1,000 to 100,000 simulated nodes.

    ``nox -s simulate -- --nodes 1000 10000 --latency tcp``. Not run by CI.
    """
    session.install("-e", ".")
    session.run("python", "benchmarks/simulate.py", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    session.install("ruff>=0.4")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/, with the python-etcd stubs in typings/."""
    session.install("-e", ".", "mypy>=1.8")
    session.run("mypy", "--strict", "src")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The Sphinx documentation in docs/_build/html; any warning fails the build."""
    session.install("-e", ".", "sphinx>=7.2")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON)
def torch(session: nox.Session) -> None:
    """torchrun jobs on rdzv's rendezvous (tests/torch), with torch 2.13.0.

    The pin goes into the same install as the ``torch`` extra, so that pip cannot
    resolve the extra's floor to a newer torch (and its CUDA wheels).
    """
    session.install("torch==2.13.0", "-e", ".[test,torch]")
    session.run("pip", "show", "torch")
    version = session.run(
        "python", "-c", "import importlib.metadata as m; print(m.version('torch'))", silent=True
    )
    if not str(version).strip().startswith("2.13.0"):
        session.error(f"torch 2.13.0 is required, the session has {version!r}")
    session.run("pytest", *(session.posargs or ["-q", "tests/torch"]))


@nox.session(python=PYTHON)
def interop(session: nox.Session) -> None:
    """torch 2.13.0's and rdzv's legacy etcd rendezvous as nodes of one job (tests/interop).

    torch is pinned exactly, in the same install as rdzv, so nothing can pull another one.
    """
    session.install("torch==2.13.0", "-e", ".[test]")
    version = session.run(
        "python", "-c", "import importlib.metadata as m; print(m.version('torch'))", silent=True
    )
    if not str(version).strip().startswith("2.13.0"):
        session.error(f"torch 2.13.0 is required, the session has {version!r}")
    session.run("pytest", *(session.posargs or ["-q"]), "tests/interop")


@nox.session(python=PYTHON)
def browser(session: nox.Session) -> None:
    """``rdzv status --serve`` in a headless Chromium (tests/browser), driven by selenium.

    Needs Debian's ``chromium`` and ``chromium-driver`` (/usr/bin/chromium,
    /usr/bin/chromedriver), which ``.ci/run`` installs; nothing is downloaded.
    """
    session.install("-e", ".[test]", "selenium>=4.20")
    session.run("pytest", *(session.posargs or ["-q"]), "tests/browser")


@nox.session(python=PYTHON)
def faults(session: nox.Session) -> None:
    """Fault and hostile-input suite (tests/faults): real etcd, TCP store and node processes.

    The load tests run ``$RDZV_FAULTS_LOAD_SECONDS`` (default 10 s here; the report,
    ``python benchmarks/faults.py``, runs them for 60 s). About 4 minutes on 2 cores.
    """
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-q"]), "tests/faults")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Rendezvous benchmarks, rdzv against torch 2.13.0 (benchmarks/README.md); not run by CI.

    Arguments after ``--`` go to ``benchmarks/rendezvous.py``, e.g.
    ``nox -s bench -- --scenario first --nodes 8 256``, unless the first names another
    script of ``benchmarks/``: ``nox -s bench -- connect_storm.py --clients 4096``.
    torch is pinned exactly, in the same install as rdzv, so nothing can pull another one.
    """
    session.install("torch==2.13.0", "-e", ".[test]")
    version = session.run(
        "python", "-c", "import importlib.metadata as m; print(m.version('torch'))", silent=True
    )
    if not str(version).strip().startswith("2.13.0"):
        session.error(f"torch 2.13.0 is required, the session has {version!r}")
    args = list(session.posargs)
    script = args.pop(0) if args and args[0].endswith(".py") else "rendezvous.py"
    session.run("python", f"benchmarks/{script}", *args)
