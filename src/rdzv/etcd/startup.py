"""One attempt at starting a one-member etcd, and the wait until it serves requests.

:class:`~rdzv.etcd.server.EtcdServer` describes each attempt as a :class:`Launch`
(binary, data, ports, TLS) and runs it: etcd is spawned, then
:func:`wait_until_ready` polls it with a request that succeeds only once the
member has elected itself, and watches the process, so that a crash ends the
wait at once. The error either way carries the end of etcd's log
(:func:`log_excerpt`), with a hint for the causes seen most often.
"""

from __future__ import annotations

import functools
import http.client
import json
import ssl
import subprocess
import time
from collections.abc import Callable
from typing import IO, Any

import attrs

from rdzv.etcd.binary import INSTALL_HINT
from rdzv.etcd.process import (
    HOST,
    EtcdServerError,
    EtcdServerTimeoutError,
    spawn,
    summarize_log_line,
)
from rdzv.etcd.server_resources import ServerResources
from rdzv.etcd.server_tls import ServerTLS

__all__ = ["Launch", "answers", "log_excerpt", "wait_until_ready"]

_POLL_INTERVAL = 0.02
_LOG_TAIL_LINES = 15

# A one-member cluster has nobody to hear from, so the only effect of the default
# 1 s election timeout is a ~1 s wait before the member elects itself at start.
_RAFT_FLAGS = ("--heartbeat-interval=10", "--election-timeout=100")


@attrs.frozen
class Launch:
    """One start of a one-member etcd named ``default`` on :data:`HOST`."""

    binary: str
    data_dir: str
    log_path: str
    client_port: int
    peer_port: int
    enable_v2: bool
    tls: ServerTLS

    @property
    def client_url(self) -> str:
        """``http(s)://host:port`` where etcd serves clients."""
        return f"{self.tls.protocol}://{HOST}:{self.client_port}"

    def command(self) -> list[str]:
        """etcd's command line."""
        client_url = self.client_url
        peer_url = f"http://{HOST}:{self.peer_port}"
        return [
            self.binary,
            "--name=default",
            *(["--enable-v2=true"] if self.enable_v2 else []),
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            *_RAFT_FLAGS,
            *self.tls.etcd_flags(),
        ]

    def run(
        self,
        resources: ServerResources,
        timeout: float,
        stderr: int | IO[Any] | None,
        label: str,
    ) -> None:
        """Spawn etcd (into ``resources.process``) and return once it serves requests.

        ``label`` starts the header of this attempt in the log; etcd's standard
        error goes to ``stderr`` when given, else to the log.

        Raises:
            EtcdServerError: the binary could not be run, or etcd exited first.
            EtcdServerTimeoutError: etcd did not answer within ``timeout``.
        """
        command = self.command()
        process, log_offset = spawn(command, self.log_path, stderr, label=label, hint=INSTALL_HINT)
        resources.process = process
        probe = functools.partial(
            answers,
            HOST,
            self.client_port,
            v2=self.enable_v2,
            context=self.tls.client_context(),
        )
        wait_until_ready(
            process,
            probe,
            timeout,
            url=self.client_url,
            command=command,
            excerpt=lambda: log_excerpt(self.log_path, log_offset, stderr is not None),
        )


def wait_until_ready(
    process: subprocess.Popen[bytes],
    probe: Callable[[float], bool],
    timeout: float,
    *,
    url: str,
    command: list[str],
    excerpt: Callable[[], str],
) -> None:
    """Return once ``probe(seconds)`` succeeds while ``process`` runs.

    ``excerpt()`` says where etcd's log is and how it ends, for the error.

    Raises:
        EtcdServerError: etcd exited first.
        EtcdServerTimeoutError: etcd did not answer at ``url`` within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise EtcdServerError(
                f"etcd exited with code {code} before it was ready; command: {command}. "
                + excerpt()
            )
        remaining = deadline - time.monotonic()
        # Short probes: if another process won the port race, its listener
        # may never answer, and etcd's own exit is what this loop must see.
        # Polling the process again after a success keeps that listener's
        # answer from passing for etcd's.
        if probe(min(0.25, max(remaining, 0.05))) and process.poll() is None:
            return
        if remaining <= 0:
            raise EtcdServerTimeoutError(
                f"etcd (pid {process.pid}) did not answer at {url} within "
                f"{timeout:g} s. " + excerpt()
            )
        time.sleep(_POLL_INTERVAL)


def answers(
    host: str, port: int, timeout: float, *, v2: bool, context: ssl.SSLContext | None
) -> bool:
    """Whether etcd at ``host:port`` serves a linearizable read now (v2 with ``v2``, else v3).

    A read rather than ``/version``: it succeeds only once the member has elected
    itself and the store serves requests. ``context`` is for https, ``None`` for http.
    """
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        if v2:
            connection.request("GET", "/v2/keys/")
        else:
            # A linearizable v3 range of one key.
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


def log_excerpt(log_path: str, offset: int, custom_stderr: bool) -> str:
    """Where etcd's log is and its last lines written from ``offset`` on, with a hint.

    ``custom_stderr``: etcd's log went to a stream of the caller, and ``log_path``
    holds only its standard output.
    """
    where = (
        f"etcd's log went to the stderr passed to start(); its stdout is in {log_path}"
        if custom_stderr
        else f"etcd's log is in {log_path}"
    )
    try:
        with open(log_path, "rb") as f:
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
            f"backend, or use etcd 3.5. {INSTALL_HINT})"
        )
    return f"{where}{hint}; its last lines:\n{text}"
