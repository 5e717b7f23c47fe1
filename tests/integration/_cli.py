"""Running ``python -m rdzv`` as a user would, for the tests of its commands."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

RDZV = [sys.executable, "-X", "faulthandler", "-m", "rdzv"]
"""faulthandler on: a command that hangs can be made to print its threads' stacks."""


def rdzv(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rdzv ARGS`` to completion."""
    return subprocess.run(
        [*RDZV, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _default_sigint() -> None:
    # A shell that runs this suite in the background makes its children ignore
    # SIGINT (POSIX), and Python then raises no KeyboardInterrupt: the command
    # under test must see Ctrl-C as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_rdzv(*args: str, new_group: bool = False) -> subprocess.Popen[str]:
    """Start ``python -m rdzv ARGS`` in the background, stdout piped."""
    return subprocess.Popen(
        [*RDZV, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509 - no threads run rdzv code in this child yet
        start_new_session=new_group,
    )


def stopped_by_ctrl_c(process: subprocess.Popen[str], within: float = 15) -> str:
    """Send Ctrl-C and return the process's stderr once it ended.

    One that has not ended ``within`` seconds is made to print every thread's stack
    (SIGABRT; :data:`RDZV` turns faulthandler on) and the test fails with them.
    """
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=within)[1]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        stacks = process.communicate(timeout=within)[1]
        pytest.fail(f"not stopped {within:.0f} s after Ctrl-C; its threads:\n{stacks}")
