"""A TCPStoreServer alone in a process, for tests that measure what the server costs.

Prints ``{"port": N}`` once listening, then answers commands on stdin, one JSON
line each: ``connections`` (open connections), ``memory`` (``VmRSS`` and ``VmHWM``
in KiB). Stops when stdin closes. The auth token comes from ``$RDZV_AUTH_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import sys

from rdzv.store.tcp import TCPStoreServer


def _memory() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    args = parser.parse_args()
    with TCPStoreServer("127.0.0.1", 0, handshake_timeout=args.handshake_timeout) as server:
        print(json.dumps({"port": server.port}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "connections":
                answer: dict[str, object] = {"connections": server.num_connections}
            elif command == "memory":
                answer = dict(_memory())
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
