"""What one etcd request costs the client: wall and CPU microseconds, per client, on one etcd.

Starts its own etcd on loopback (:class:`rdzv.etcd.server.EtcdServer`, v2 API on,
so that the v2 and v3 clients meet the same server) and times, side by side:

- ``v2 python-etcd``: ``etcd.Client`` (urllib3), a read and a compare-and-swap;
- ``v2 rdzv``: the same through rdzv's v2 client as it is installed
  (:func:`rdzv.etcd_client.create_etcd_client`, its own HTTP on kept connections);
- ``v3 rdzv``: rdzv's :class:`~rdzv.etcd.v3_client.EtcdV3Client` as it is
  installed, ``get``, ``put`` and ``put_if`` (a transaction);
- ``v3 etcd3gw``: the same JSON gateway requests through ``etcd3gw.Etcd3Client``
  (on requests), where installed: the transport of rdzv's client before it
  moved to urllib3;
- ``v3 requests``: the same requests on a bare ``requests.Session``, where installed;
- ``v3 urllib3``: the same requests on a bare ``urllib3.HTTPConnectionPool``;
- ``v3 gRPC``: etcd's native gRPC API (range, put, txn), in another interpreter
  given with ``--grpc-python``, where a gRPC client of etcd is installed (this
  script runs itself there with only the standard library and that client).
  ``etcd-sdk-python`` (module ``pyetcd``, plus ``protobuf``) is timed through its
  generated stubs (``grpc raw``) and through its client (``grpc pyetcd``);
  ``etcd3`` (module ``etcd3``) where it imports; what fails to import is printed.

Each cell runs ``--ops`` operations: from one thread, then spread over
``--threads`` threads (each with its own client, as each node of a rendezvous
has its own). Columns: wall microseconds per operation (elapsed / operations;
with many threads the inverse of the throughput), CPU microseconds of this
process per operation (``time.process_time``, every thread), and etcd's CPU per
operation (from ``/proc``, at 10 ms granularity). Every write is fsynced by etcd,
so the wall time of writes is mostly the disk's; the client's cost is the CPU
column. Nothing is asserted.

    python benchmarks/etcd_client_cost.py
    python benchmarks/etcd_client_cost.py --ops 500 --threads 1 16
    python -m venv /tmp/grpcvenv && /tmp/grpcvenv/bin/pip install etcd-sdk-python protobuf
    python benchmarks/etcd_client_cost.py --grpc-python /tmp/grpcvenv/bin/python
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Op = Callable[[], object]
"""One timed operation of one client, with its state bound (key, last revision)."""
Setup = Callable[[str], Op]
"""Builds a client (and whatever it writes first) for the key given; returns the operation."""

WARMUP = 20
"""Untimed operations of each client before the clock starts: connections, first token."""


def etcd_cpu_seconds(pid: int) -> float:
    """User plus system CPU of process ``pid`` so far (0 where /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(setup: Setup, ops: int, threads: int, etcd_pid: int) -> dict[str, float]:
    """Run ``ops`` operations over ``threads`` threads, one client each; per-op microseconds."""
    share = [ops // threads + (1 if i < ops % threads else 0) for i in range(threads)]
    ready = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            op = setup(f"/bench/cost/{index}")
            for _ in range(WARMUP):
                op()
        except BaseException as e:
            errors.append(e)
            op = None
        ready.wait()
        try:
            if op is not None:
                for _ in range(share[index]):
                    op()
        except BaseException as e:
            errors.append(e)
        done.wait()

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    wall, cpu, server = time.perf_counter(), time.process_time(), etcd_cpu_seconds(etcd_pid)
    done.wait()
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    server = etcd_cpu_seconds(etcd_pid) - server
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError(f"{len(errors)} thread(s) failed; first: {errors[0]!r}")
    return {"wall": wall / ops * 1e6, "cpu": cpu / ops * 1e6, "etcd": server / ops * 1e6}


# -- v2 and v3 over HTTP, in this interpreter --------------------------------------------


def v2_setups(host: str, port: int, *, ours: bool = False) -> dict[str, Setup]:
    """A read and a compare-and-swap through python-etcd's ``etcd.Client``, or rdzv's."""
    import etcd

    from rdzv import RendezvousParameters
    from rdzv.etcd_client import create_etcd_client

    def client() -> etcd.Client:
        if ours:
            endpoint = f"{host}:{port}"
            params = RendezvousParameters("etcd-v2", endpoint, "cost", 1, 1, read_timeout=10)
            return create_etcd_client(params)
        return etcd.Client(host=host, port=port, read_timeout=10)

    def read(key: str) -> Op:
        c = client()
        c.write(key, "value")
        return lambda: c.read(key)

    def cas(key: str) -> Op:
        c = client()
        index = [c.write(key, "value").modifiedIndex]

        def op() -> None:
            index[0] = c.write(key, "value", prevIndex=index[0]).modifiedIndex

        return op

    return {"read": read, "cas": cas}


def rdzv_setups(host: str, port: int) -> dict[str, Setup]:
    from rdzv.etcd.v3_client import EtcdV3Client

    def get(key: str) -> Op:
        c = EtcdV3Client(host, port, read_timeout=10)
        c.put(key.encode(), b"value")
        return lambda: c.get(key.encode())

    def put(key: str) -> Op:
        c = EtcdV3Client(host, port, read_timeout=10)
        return lambda: c.put(key.encode(), b"value")

    def put_if(key: str) -> Op:
        c = EtcdV3Client(host, port, read_timeout=10)
        revision = [c.put(key.encode(), b"value")]

        def op() -> None:
            won, revision[0], _ = c.put_if(key.encode(), b"value", revision[0])
            if not won:
                raise RuntimeError("put_if lost on a key nobody else writes")

        return op

    return {"range": get, "put": put, "txn": put_if}


def gateway_bodies(key: str) -> tuple[dict[str, Any], dict[str, Any], Callable[[int], Any]]:
    """The range and put bodies for ``key``, and the txn body that swaps it at a revision."""
    k, v = base64.b64encode(key.encode()).decode(), base64.b64encode(b"value").decode()

    def txn(revision: int) -> dict[str, Any]:
        return {
            "compare": [{"key": k, "result": "EQUAL", "target": "MOD", "mod_revision": revision}],
            "success": [{"request_put": {"key": k, "value": v}}],
            "failure": [{"request_range": {"key": k}}],
        }

    return {"key": k}, {"key": k, "value": v}, txn


def gateway_setups(post_factory: Callable[[], Callable[[str, Any], Any]]) -> dict[str, Setup]:
    """range, put and txn through ``post(path, body) -> decoded JSON`` of a fresh client."""

    def revision(answer: Any) -> int:
        return int(answer["header"]["revision"])

    def get(key: str) -> Op:
        post = post_factory()
        ranged, put_body, _ = gateway_bodies(key)
        post("kv/put", put_body)
        return lambda: post("kv/range", ranged)

    def put(key: str) -> Op:
        post = post_factory()
        _, put_body, _ = gateway_bodies(key)
        return lambda: revision(post("kv/put", put_body))

    def txn(key: str) -> Op:
        post = post_factory()
        _, put_body, swap = gateway_bodies(key)
        last = [revision(post("kv/put", put_body))]

        def op() -> None:
            answer = post("kv/txn", swap(last[0]))
            if not answer.get("succeeded"):
                raise RuntimeError("txn lost on a key nobody else writes")
            last[0] = revision(answer)

        return op

    return {"range": get, "put": put, "txn": txn}


def requests_post(host: str, port: int) -> Callable[[], Callable[[str, Any], Any]] | None:
    try:
        import requests
    except ImportError:
        return None

    def factory() -> Callable[[str, Any], Any]:
        session = requests.Session()
        session.trust_env = False
        base = f"http://{host}:{port}/v3/"

        def post(path: str, body: Any) -> Any:
            response = session.post(base + path, json=body, timeout=10)
            response.raise_for_status()
            return response.json()

        return post

    return factory


def etcd3gw_post(host: str, port: int) -> Callable[[], Callable[[str, Any], Any]] | None:
    try:
        import etcd3gw
    except ImportError:
        return None

    def factory() -> Callable[[str, Any], Any]:
        client = etcd3gw.Etcd3Client(host=host, port=port, timeout=10, api_path="/v3/")
        client.session.trust_env = False
        return lambda path, body: client.post(client.get_url(path), json=body)

    return factory


def urllib3_post(host: str, port: int) -> Callable[[], Callable[[str, Any], Any]]:
    import urllib3

    headers = {"Content-Type": "application/json"}

    def factory() -> Callable[[str, Any], Any]:
        pool = urllib3.HTTPConnectionPool(host, port, maxsize=4, retries=False)
        timeout = urllib3.Timeout(connect=10, read=10)

        def post(path: str, body: Any) -> Any:
            response = pool.urlopen(
                "POST", "/v3/" + path, body=json.dumps(body), headers=headers, timeout=timeout
            )
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {response.data[:200]!r}")
            return json.loads(response.data)

        return post

    return factory


# -- gRPC, in another interpreter ---------------------------------------------------------


def grpc_setups(target: str) -> tuple[dict[str, dict[str, Setup]], dict[str, str]]:
    """Setups of the gRPC clients that import here, and why the others did not."""
    setups: dict[str, dict[str, Setup]] = {}
    failed: dict[str, str] = {}
    try:
        import grpc
        import pyetcd
        from pyetcd import etcdrpc
    except Exception as e:
        failed["etcd-sdk-python"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    else:
        setups["grpc raw"] = grpc_raw_setups(grpc, etcdrpc, target)
        setups["grpc pyetcd"] = pyetcd_setups(pyetcd, target)
    try:
        import etcd3
    except Exception as e:
        failed["etcd3"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    else:
        setups["grpc etcd3"] = pyetcd_setups(etcd3, target)
    return setups, failed


def grpc_raw_setups(grpc: Any, rpc: Any, target: str) -> dict[str, Setup]:
    def stub() -> Any:
        return rpc.KVStub(grpc.insecure_channel(target))

    def get(key: str) -> Op:
        kv = stub()
        kv.Put(rpc.PutRequest(key=key.encode(), value=b"value"), timeout=10)
        request = rpc.RangeRequest(key=key.encode())
        return lambda: kv.Range(request, timeout=10)

    def put(key: str) -> Op:
        kv = stub()
        request = rpc.PutRequest(key=key.encode(), value=b"value")
        return lambda: kv.Put(request, timeout=10).header.revision

    def txn(key: str) -> Op:
        kv = stub()
        k = key.encode()
        last = [kv.Put(rpc.PutRequest(key=k, value=b"value"), timeout=10).header.revision]

        def op() -> None:
            compare = rpc.Compare(
                key=k,
                result=rpc.Compare.EQUAL,
                target=rpc.Compare.MOD,
                mod_revision=last[0],
            )
            answer = kv.Txn(
                rpc.TxnRequest(
                    compare=[compare],
                    success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=b"value"))],
                    failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))],
                ),
                timeout=10,
            )
            if not answer.succeeded:
                raise RuntimeError("txn lost on a key nobody else writes")
            last[0] = answer.header.revision

        return op

    return {"range": get, "put": put, "txn": txn}


def pyetcd_setups(module: Any, target: str) -> dict[str, Setup]:
    """python-etcd3's client API, which etcd-sdk-python (pyetcd) keeps."""
    host, port = target.rsplit(":", 1)

    def client() -> Any:
        return module.client(host=host, port=int(port), timeout=10)

    def get(key: str) -> Op:
        c = client()
        c.put(key, b"value")
        return lambda: c.get(key)

    def put(key: str) -> Op:
        c = client()
        return lambda: c.put(key, b"value")

    def txn(key: str) -> Op:
        c = client()
        c.put(key, b"value")
        last = [c.get(key)[1].mod_revision]

        def op() -> None:
            ok, responses = c.transaction(
                compare=[c.transactions.mod(key) == last[0]],
                success=[c.transactions.put(key, b"value")],
                failure=[c.transactions.get(key)],
            )
            if not ok:
                raise RuntimeError("txn lost on a key nobody else writes")
            last[0] = responses[0].response_put.header.revision

        return op

    return {"range": get, "put": put, "txn": txn}


def grpc_child(target: str, pid: int, ops: int, threads: list[int]) -> None:
    """Time the gRPC clients of this interpreter; one JSON line a cell on stdout."""
    setups, failed = grpc_setups(target)
    for name, reason in failed.items():
        print(json.dumps({"failed": name, "reason": reason}), flush=True)
    for client, ops_of in setups.items():
        for op, setup in ops_of.items():
            for count in threads:
                try:
                    cell: dict[str, Any] = measure(setup, ops, count, pid)
                except Exception as e:
                    cell = {"error": f"{type(e).__name__}: {e}"[:200]}
                cell.update(client=client, op=op, threads=count)
                print(json.dumps(cell), flush=True)


# -- the run -------------------------------------------------------------------------------


def print_row(cell: dict[str, Any]) -> None:
    name = f"{cell['client']:<14} {cell['op']:<6} {cell['threads']:>3}"
    if "error" in cell:
        print(f"{name}  {cell['error']}", flush=True)
        return
    print(f"{name}  {cell['wall']:>8.0f}  {cell['cpu']:>8.0f}  {cell['etcd']:>8.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="operations a cell (2000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--grpc-python",
        nargs="*",
        default=[],
        help="interpreters where a gRPC client of etcd is installed",
    )
    parser.add_argument("--grpc-child", nargs=2, metavar=("TARGET", "PID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.grpc_child:
        grpc_child(args.grpc_child[0], int(args.grpc_child[1]), args.ops, args.threads)
        return

    from rdzv.etcd.server import EtcdServer

    with EtcdServer() as server:
        host, port, pid = server.get_host(), server.get_port(), server.pid
        assert pid is not None
        print(f"etcd {host}:{port} (pid {pid}), {args.ops} ops a cell, threads {args.threads}")
        print(f"{'client':<14} {'op':<6} {'thr':>3}  {'wall us':>8}  {'cpu us':>8}  {'etcd us':>8}")
        clients: dict[str, dict[str, Setup]] = {
            "v2 python-etcd": v2_setups(host, port),
            "v2 rdzv": v2_setups(host, port, ours=True),
            "v3 rdzv": rdzv_setups(host, port),
        }
        for name, post in (
            ("v3 etcd3gw", etcd3gw_post(host, port)),
            ("v3 requests", requests_post(host, port)),
        ):
            if post is None:
                print(f"{name}: not installed here", flush=True)
            else:
                clients[name] = gateway_setups(post)
        clients["v3 urllib3"] = gateway_setups(urllib3_post(host, port))
        for client, ops_of in clients.items():
            for op, setup in ops_of.items():
                for count in args.threads:
                    try:
                        cell: dict[str, Any] = measure(setup, args.ops, count, pid)
                    except Exception as e:
                        cell = {"error": f"{type(e).__name__}: {e}"[:200]}
                    print_row({**cell, "client": client, "op": op, "threads": count})
        for python in args.grpc_python:
            command = [python, __file__, "--grpc-child", f"{host}:{port}", str(pid)]
            command += ["--ops", str(args.ops), "--threads", *map(str, args.threads)]
            child = subprocess.run(command, capture_output=True, text=True, check=False)
            for line in child.stdout.splitlines():
                cell = json.loads(line)
                if "failed" in cell:
                    print(f"{python}: {cell['failed']} not measured: {cell['reason']}")
                else:
                    print_row(cell)
            if child.returncode != 0:
                print(f"{python} failed ({child.returncode}): {child.stderr.strip()[-500:]}")


if __name__ == "__main__":
    sys.exit(main())
