"""Wall time of a two-node torchrun job: rdzv's plug-in (rdzv-c10d) vs torch's c10d.

Run: ``python benchmarks/torchrun_wall.py [--repeat 3]`` where torch and rdzv (with
its torchrun entry points: ``pip install -e .``) are installed. Each run starts two
``torchrun --nnodes=2 --nproc-per-node=1`` agents on 127.0.0.1 whose trainers join
a gloo process group and all-reduce their ranks; the time is from starting the
agents until both have exited. The backends alternate run by run, so that a
change in the machine's load hits both columns alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BACKENDS = ("rdzv-c10d", "c10d")

TRAINER = """\
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank()])
dist.all_reduce(total)
assert int(total.item()) == sum(range(dist.get_world_size())), total
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def stop(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM the agent's group (torchrun then stops its trainers), SIGKILL after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if agent.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.wait(timeout=15)


def run_job(backend: str, trainer: str, timeout: float) -> float:
    """Seconds from starting both agents to both exiting; raises if the job fails."""
    args = [
        *torchrun(),
        "--nnodes=2",
        "--nproc-per-node=1",
        f"--rdzv-backend={backend}",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        f"--rdzv-id=wall-{uuid.uuid4().hex[:12]}",
        "--local-addr=127.0.0.1",
        "--max-restarts=0",
        "--monitor-interval=0.1",
        trainer,
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    logs = [tempfile.TemporaryFile() for _ in range(2)]  # noqa: SIM115 - closed below
    started = time.perf_counter()
    agents = [
        subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        for log in logs
    ]
    try:
        for agent in agents:
            agent.wait(timeout=timeout)
        elapsed = time.perf_counter() - started
        for agent, log in zip(agents, logs, strict=True):
            if agent.returncode != 0:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"torchrun ({backend}) exited with {agent.returncode}:\n{tail}")
    finally:
        for agent, log in zip(agents, logs, strict=True):
            stop(agent)
            log.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend (default 3)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per job")
    options = parser.parse_args()

    times: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    with tempfile.TemporaryDirectory(prefix="rdzv-torchrun-wall-") as workdir:
        trainer = Path(workdir, "trainer.py")
        trainer.write_text(TRAINER)
        for run in range(options.repeat):
            for backend in BACKENDS:
                elapsed = run_job(backend, str(trainer), options.timeout)
                times[backend].append(elapsed)
                print(f"run {run + 1} {backend:>10}: {elapsed:6.2f} s", flush=True)

    print(f"\ntwo-node torchrun job, wall time in seconds ({options.repeat} runs each)")
    print(f"{'backend':>10} {'median':>8} {'min':>8} {'max':>8}")
    for backend in BACKENDS:
        values = times[backend]
        print(
            f"{backend:>10} {statistics.median(values):8.2f} {min(values):8.2f} {max(values):8.2f}"
        )


if __name__ == "__main__":
    main()
