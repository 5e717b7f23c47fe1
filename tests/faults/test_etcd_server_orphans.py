"""An EtcdServer's etcd dies with the Python process that started it, however that ends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable

import pytest
from _faults import process_gone, wait_until

from rdzv.etcd_server import EtcdServer

OWNER = textwrap.dedent(
    """
    import json, time
    from rdzv.etcd_server import EtcdServer

    server = EtcdServer()
    server.start(timeout=30)
    print(json.dumps({"pid": server.pid, "data_dir": server.data_dir}), flush=True)
    time.sleep(600)
    """
)


def _is_our_etcd(pid: int, data_dir: str) -> bool:
    """Whether ``pid`` is still the etcd started on ``data_dir`` (not a recycled pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"--data-dir={data_dir}".encode() in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_etcd_exits_when_the_process_that_started_it_is_killed(
    sig: signal.Signals, record: Callable[..., None]
) -> None:
    """A Python process starts an EtcdServer and is killed (no finalizer runs): its etcd
    is gone within a few seconds instead of living on as an orphan."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    etcd_pid, data_dir = None, ""
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the owner process did not start etcd"
        started = json.loads(line)
        etcd_pid, data_dir = started["pid"], started["data_dir"]
        assert not process_gone(etcd_pid)

        owner.send_signal(sig)
        owner.wait(timeout=30)
        gone_after = wait_until(lambda: process_gone(etcd_pid), 10, "etcd to exit")
        record(signal=sig.name, etcd_gone_after_s=gone_after)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
        # Clean up after a failure: only the etcd that this test's owner started.
        if etcd_pid is not None and _is_our_etcd(etcd_pid, data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(etcd_pid, signal.SIGKILL)
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def test_etcd_started_from_a_thread_outlives_that_thread() -> None:
    """The parent-death signal fires when the *thread* that started etcd ends, so it is
    not used for a server started from a worker thread: that etcd keeps serving."""
    server = EtcdServer()
    failures: list[BaseException] = []

    def start() -> None:
        try:
            server.start(timeout=30)
        except BaseException as e:
            failures.append(e)

    try:
        worker = threading.Thread(target=start)
        worker.start()
        worker.join(60)
        assert not worker.is_alive() and not failures, failures
        time.sleep(1)  # a parent-death signal would have killed it by now
        assert server.is_running()
        client = server.get_client()
        client.write("/outlives-thread", "yes")
        assert client.read("/outlives-thread").value == "yes"
    finally:
        server.stop()
