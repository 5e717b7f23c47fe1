"""Reaching the state of a running rendezvous from outside it, without joining.

``rdzv status`` and ``rdzv close`` take the same options as a node (backend,
endpoint, run id, TLS and auth) and build the same backend a node builds, except
that on ``c10d`` they connect as a client only (``is_host=false``): a command
that inspects a job must never start a store of its own.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rdzv.api import RendezvousConnectionError, RendezvousParameters
from rdzv.backends.base import RendezvousBackend, Token
from rdzv.cli._common import (
    CommandError,
    ExitStatus,
    positive_float,
    positive_int,
    read_secret_file,
    run_id,
)
from rdzv.core import RendezvousSettings

__all__ = [
    "BACKENDS",
    "Target",
    "add_keep_alive_arguments",
    "add_target_arguments",
    "keep_alive_settings",
    "open_target",
]

BACKENDS = ("c10d", "tcp", "etcd-v2", "etcd-v3")
"""The backends whose state these commands read: those of the dynamic handler."""

DEFAULT_READ_TIMEOUT = 10.0


class Target:
    """The backend that holds one run's state, and what the commands need besides.

    Attributes:
        backend: the run's :class:`RendezvousBackend`.
        where: the backend, endpoint and key, for messages.
    """

    def __init__(
        self,
        backend: RendezvousBackend,
        where: str,
        raw_token: Callable[[], Token | None],
        release: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.where = where
        self._raw_token = raw_token
        self._release = release

    def raw_token(self) -> Token | None:
        """The fencing token of the stored value, read even when that value does not decode.

        ``rdzv close --force`` overwrites a corrupt state with it, and only if no
        one wrote in between.

        Raises:
            CommandError: the backend cannot be reached.
        """
        return self._raw_token()

    def close(self) -> None:
        """Release the connection (idempotent)."""
        self._release()


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


def open_target(args: argparse.Namespace) -> Target:
    """Connect to the backend that the command line names.

    Raises:
        CommandError: an invalid option (status USAGE), or the backend cannot be
            reached (status ERROR).
    """
    options = _options(args)
    params = RendezvousParameters(args.backend, args.endpoint, args.run_id, 1, 1, **options)
    try:
        if args.backend == "etcd-v2":
            return _open_etcd(params)
        if args.backend == "etcd-v3":
            return _open_etcd_v3(params)
        if args.store_type == "file" and not args.endpoint.strip():
            raise ValueError("with --store-type file, --endpoint is the path of the store file")
        return _open_c10d(params)
    except ValueError as e:
        raise CommandError(str(e), ExitStatus.USAGE) from e
    except (RendezvousConnectionError, ImportError) as e:
        # ImportError: etcd-v3 without its extra; the message says what to install.
        raise CommandError(str(e)) from e


def _open_c10d(params: RendezvousParameters) -> Target:
    from rdzv.backends.c10d import create_backend  # noqa: PLC0415 - only the backend asked for
    from rdzv.store.base import StoreError  # noqa: PLC0415

    backend, store = create_backend(params)

    def raw_token() -> Token | None:
        # c10d's fencing token is the stored value itself.
        try:
            return store.get_if_exists(backend.key)
        except StoreError as e:
            raise CommandError(f"the rendezvous store failed: {e}") from e

    where = f"{params.backend} store at {params.endpoint}, key {backend.key}"
    return Target(backend, where, raw_token, store.close)


def _open_etcd(params: RendezvousParameters) -> Target:
    import etcd  # noqa: PLC0415 - python-etcd costs ~0.1 s to import

    from rdzv.backends.etcd import create_backend  # noqa: PLC0415
    from rdzv.etcd.v2_connect import (  # noqa: PLC0415
        ETCD_ERRORS,
        connection_error,
        create_etcd_client,
    )

    backend, _ = create_backend(params)
    # The backend keeps its client private; a second client with the same options
    # reads the raw key (no connection is opened until a request).
    client = create_etcd_client(params)

    def raw_token() -> Token | None:
        # etcd's fencing token is the key's modifiedIndex, whatever its value.
        try:
            index: int = client.read(backend.key).modifiedIndex
        except etcd.EtcdKeyNotFound:
            return None
        except ETCD_ERRORS as e:
            raise CommandError(str(connection_error(params.endpoint, e))) from e
        return index

    where = f"etcd-v2 at {params.endpoint}, key {backend.key}"
    return Target(backend, where, raw_token, lambda: None)


def _open_etcd_v3(params: RendezvousParameters) -> Target:
    from rdzv.backends.etcd_v3 import create_backend  # noqa: PLC0415
    from rdzv.etcd.v3_client import EtcdV3Error  # noqa: PLC0415

    backend, _ = create_backend(params)

    def raw_token() -> Token | None:
        # The fencing token is the key's mod revision, whatever its value.
        try:
            kv, _ = backend.client.get(backend.key.encode("utf-8"))
        except EtcdV3Error as e:
            raise CommandError(f"etcd (v3 API) at {params.endpoint} failed: {e}") from e
        return None if kv is None else kv.mod_revision

    where = f"etcd-v3 at {params.endpoint}, key {backend.key}"
    return Target(backend, where, raw_token, backend.client.close)
