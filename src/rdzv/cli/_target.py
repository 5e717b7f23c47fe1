"""Reaching the state of a running rendezvous from outside it, without joining.

``rdzv status`` and ``rdzv close`` take the same options as a node (backend,
endpoint, run id, TLS and auth) and open the backend as a watcher does
(:func:`rdzv.watching.source.open_source`): on ``c10d`` as a client only, since a
command that inspects a job must never start a store of its own.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.cli._common import (
    CommandError,
    ExitStatus,
    positive_float,
    positive_int,
    read_secret_file,
    run_id,
)
from rdzv.core import RendezvousSettings
from rdzv.watching.source import Source, open_source

__all__ = [
    "BACKENDS",
    "add_keep_alive_arguments",
    "add_target_arguments",
    "keep_alive_settings",
    "open_target",
]

BACKENDS = ("c10d", "tcp", "etcd-v2", "etcd-v3")
"""The backends whose state these commands read: those of the dynamic handler."""

DEFAULT_READ_TIMEOUT = 10.0


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that name a run's state: backend, endpoint, run id, security."""
    where = parser.add_argument_group("which rendezvous")
    where.add_argument(
        "--backend", required=True, choices=BACKENDS, help="the backend the nodes use"
    )
    where.add_argument(
        "--endpoint",
        required=True,
        metavar="HOST[:PORT]",
        help="the nodes' rendezvous endpoint (c10d: the store, default port 29400; "
        "etcd-v2, etcd-v3: etcd's client host, default port 2379, or every member of a "
        "cluster: h1:2379,h2:2379,h3:2379)",
    )
    where.add_argument("--run-id", required=True, type=run_id, help="the job's run id")
    where.add_argument(
        "--read-timeout",
        type=positive_float,
        default=DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help=f"how long one request may take (default {DEFAULT_READ_TIMEOUT:g})",
    )
    c10d = parser.add_argument_group("c10d / tcp options")
    c10d.add_argument(
        "--auth-token-file",
        metavar="FILE",
        help="file holding the TCP store's auth token (default: $RDZV_AUTH_TOKEN)",
    )
    c10d.add_argument(
        "--store-type",
        choices=("tcp", "file"),
        default="tcp",
        help="tcp (default), or file when the nodes use store_type=file "
        "(the endpoint is then the file's path)",
    )
    etcd = parser.add_argument_group("etcd-v2 and etcd-v3 options")
    etcd.add_argument(
        "--etcd-prefix",
        metavar="PATH",
        help="the nodes' etcd_prefix (default /rdzv: the state is at /rdzv/rendezvous/RUN_ID)",
    )
    etcd.add_argument(
        "--protocol", choices=("http", "https"), default="http", help="etcd's protocol"
    )
    etcd.add_argument("--ca-cert", metavar="FILE", help="CA that signed etcd's certificate")
    etcd.add_argument("--ssl-cert", metavar="FILE", help="client certificate for etcd")
    etcd.add_argument("--ssl-cert-key", metavar="FILE", help="key of the client certificate")
    etcd.add_argument("--username", metavar="NAME", help="etcd user (with --password-file)")
    etcd.add_argument(
        "--password-file", metavar="FILE", help="file holding the etcd user's password"
    )


def add_keep_alive_arguments(parser: argparse.ArgumentParser) -> None:
    """The nodes' keep-alive settings, which decide when a node counts as dead."""
    group = parser.add_argument_group(
        "liveness (use the nodes' values: a node is dead after interval x attempts)"
    )
    group.add_argument(
        "--keep-alive-interval",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="the nodes' keep_alive_interval (default 5, as torch)",
    )
    group.add_argument(
        "--keep-alive-max-attempt",
        type=positive_int,
        default=3,
        metavar="N",
        help="the nodes' keep_alive_max_attempt (default 3, as torch)",
    )


def keep_alive_settings(args: argparse.Namespace) -> RendezvousSettings:
    """Settings that carry the run id and the keep-alive options.

    ``min_nodes`` and ``max_nodes`` are unknown from outside the job and are set
    to 1: finding dead nodes and closing depend on neither.
    """
    return RendezvousSettings(
        run_id=args.run_id,
        min_nodes=1,
        max_nodes=1,
        keep_alive_interval=timedelta(seconds=args.keep_alive_interval),
        keep_alive_max_attempt=args.keep_alive_max_attempt,
    )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"read_timeout": args.read_timeout}
    if args.backend in ("c10d", "tcp"):
        options["is_host"] = False
        options["store_type"] = args.store_type
        if args.auth_token_file:
            options["auth_token"] = read_secret_file(args.auth_token_file, "auth token")
        return options
    options["protocol"] = args.protocol
    for name in ("etcd_prefix", "ca_cert", "ssl_cert", "ssl_cert_key", "username"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if args.password_file:
        options["password"] = read_secret_file(args.password_file, "password")
    return options


def open_target(args: argparse.Namespace) -> Source:
    """Connect to the backend that the command line names, as a watcher does.

    Raises:
        CommandError: an invalid option (status USAGE), or the backend cannot be
            reached (status ERROR).
    """
    options = _options(args)
    params = RendezvousParameters(args.backend, args.endpoint, args.run_id, 1, 1, **options)
    try:
        if (
            args.backend in ("c10d", "tcp")
            and args.store_type == "file"
            and not args.endpoint.strip()
        ):
            raise ValueError("with --store-type file, --endpoint is the path of the store file")
        return open_source(params)
    except ValueError as e:
        raise CommandError(str(e), ExitStatus.USAGE) from e
    except (RendezvousConnectionError, ImportError) as e:
        # ImportError: etcd-v3 without its extra; the message says what to install.
        raise CommandError(str(e)) from e
