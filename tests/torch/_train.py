"""The trainer that the torchrun tests launch: all-reduce of the ranks over gloo.

Each start writes ``pid-<pid>`` (so the test can kill it) before joining the process
group, and ``start-<pid>.json`` (rank, world size, sum, node, restart count) after
the all-reduce, in ``$RDZV_TEST_DIR``. ``$RDZV_TEST_NODE`` names the agent it runs
under.

With ``RDZV_TEST_ELASTIC=1`` it does not return at once, so that the elastic test
decides when each round ends:

- in a world of 2 it all-reduces until the collective fails (the other node died);
  the exception ends it with an error and its agent starts a new round;
- in a world of 1 it waits for the file ``finish``, which the test writes once the
  other node is dead. A world of 1 before that is the round formed before the
  second node arrived: its agent restarts it when that node shows up.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist


def hold(out: Path, world_size: int) -> None:
    while True:
        if world_size == 1:
            if (out / "finish").exists():
                return
        else:
            dist.all_reduce(torch.ones(1))
        time.sleep(0.1)


def main() -> None:
    out = Path(os.environ["RDZV_TEST_DIR"])
    (out / f"pid-{os.getpid()}").write_text(str(os.getpid()))
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    total = torch.tensor([rank])
    dist.all_reduce(total)
    print(f"rank={rank} world_size={world_size} sum={int(total.item())}", flush=True)
    record = {
        "node": os.environ.get("RDZV_TEST_NODE", ""),
        "rank": rank,
        "world_size": world_size,
        "sum": int(total.item()),
        "restart_count": int(os.environ["TORCHELASTIC_RESTART_COUNT"]),
        "pid": os.getpid(),
    }
    partial = out / f".start-{os.getpid()}"
    partial.write_text(json.dumps(record))
    partial.replace(out / f"start-{os.getpid()}.json")  # the test never reads half a file
    if os.environ.get("RDZV_TEST_ELASTIC") == "1":
        hold(out, world_size)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
