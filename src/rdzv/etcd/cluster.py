"""``EtcdCluster``: several etcd members on loopback, one cluster, for tests and for trying.

Production etcd runs as 3 or 5 members, and rdzv's etcd clients move a request
to another member when one fails. This is where that is checked: the members run
from the binary :class:`~rdzv.etcd.server.EtcdServer` finds, on free loopback
ports, and the cluster knows its leader and can kill (SIGKILL), pause (SIGSTOP),
resume (SIGCONT) and restart any member. Every process it starts it also stops:
on :meth:`EtcdCluster.stop`, when the object is collected, at interpreter exit,
and (on Linux, started from the main thread) when the starting process dies.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

from rdzv._reaper import track
from rdzv.etcd.binary import find_etcd_binary
from rdzv.etcd.member import EtcdMember
from rdzv.etcd.process import EtcdServerError, EtcdServerTimeoutError, free_port

__all__ = ["EtcdCluster"]

_POLL = 0.05


class _Resources:
    """The members' processes and the directory they live in; released without the cluster."""

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.members: list[EtcdMember] = []
        self.root: str | None = None

    def release(self) -> None:
        if os.getpid() != self.owner_pid:
            return  # a forked child: only the starting process stops the members
        for member in self.members:
            member.kill()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


class EtcdCluster:
    """``size`` etcd 3.5 members on ``127.0.0.1`` forming one cluster (v2 API on by default).

    Usage::

        with EtcdCluster(3) as cluster:
            params = RendezvousParameters("etcd-v3", cluster.endpoint, ...)
            cluster.kill(cluster.leader())

    Args:
        size: how many members (1 to 9; 3 or 5 is what production runs).
        enable_v2: serve the v2 API too (``etcd-v2``, ``etcd`` and ``EtcdStore``
            need it); ``False`` starts etcd as 3.6 would, v3 only.
        binary_path: the etcd binary; default: :func:`~rdzv.etcd.binary.find_etcd_binary`.
        heartbeat_ms, election_ms: raft's heartbeat interval and election timeout
            (etcd's defaults): a leader lost is replaced about ``election_ms`` later.

    The members' data lives in a temporary directory, removed by :meth:`stop`.
    Not thread-safe: one thread drives a cluster.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        enable_v2: bool = True,
        binary_path: str | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
    ) -> None:
        if not 1 <= size <= 9:
            raise ValueError(f"An etcd cluster of {size} members: give 1 to 9.")
        if not 0 < heartbeat_ms * 5 <= election_ms:
            raise ValueError("election_ms must be at least five times heartbeat_ms (etcd's rule).")
        self._size = size
        self._enable_v2 = enable_v2
        self._binary_path = binary_path
        self._flags = (
            *(["--enable-v2=true"] if enable_v2 else []),
            f"--heartbeat-interval={heartbeat_ms}",
            f"--election-timeout={election_ms}",
        )
        self._resources = _Resources()
        self._release = track(self, self._resources.release, "EtcdCluster")

    @property
    def members(self) -> tuple[EtcdMember, ...]:
        """The members, in the order of :attr:`endpoint` (empty before :meth:`start`)."""
        return tuple(self._resources.members)

    @property
    def endpoint(self) -> str:
        """Every member's ``host:port``, comma-separated: a rendezvous endpoint."""
        return ",".join(member.endpoint for member in self._resources.members)

    @property
    def enable_v2(self) -> bool:
        """Whether the members serve the v2 API."""
        return self._enable_v2

    def start(self, timeout: float = 60, num_retries: int = 3) -> None:
        """Start every member and return once the cluster has a leader and all answer.

        An attempt that fails (another process took a port between its pick and
        etcd binding it, a member crashed) is retried on new ports and data.

        Raises:
            EtcdBinaryNotFoundError: no etcd binary.
            EtcdServerTimeoutError: the cluster was not ready within ``timeout``.
            EtcdServerError: already started, or a member exited on every
                attempt; the message has the end of its log.
        """
        if self._resources.members:
            raise EtcdServerError("The etcd cluster is already started; call stop() first.")
        binary = self._binary_path or find_etcd_binary()
        for attempt in range(1, num_retries + 1):
            try:
                self._start_once(binary, timeout)
                return
            except EtcdServerError:
                if attempt == num_retries:
                    raise

    def _start_once(self, binary: str, timeout: float) -> None:
        root = tempfile.mkdtemp(prefix="rdzv-etcd-cluster-")
        self._resources.root = root
        for index in range(self._size):
            self._resources.members.append(
                EtcdMember(
                    index,
                    free_port(),
                    free_port(),
                    os.path.join(root, f"m{index}"),
                    os.path.join(root, f"m{index}.log"),
                )
            )
        try:
            for member in self._resources.members:
                member.launch(_command(binary, member, self._resources.members, self._flags))
            self.wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every member (SIGKILL: the data is thrown away) and remove their directory."""
        self._release()
        self._resources = _Resources()
        self._release = track(self, self._resources.release, "EtcdCluster")

    def kill(self, index: int) -> None:
        """SIGKILL member ``index``: a crash. Its data and ports stay for :meth:`restart`."""
        self._member(index).kill()

    def pause(self, index: int) -> None:
        """SIGSTOP member ``index``: it hangs with its sockets open."""
        self._member(index).pause()

    def resume(self, index: int) -> None:
        """SIGCONT member ``index`` after :meth:`pause`."""
        self._member(index).resume()

    def restart(self, index: int, timeout: float = 30) -> None:
        """Start member ``index`` again on its data and ports; return once it answers.

        A running member is stopped first (SIGTERM), as in a rolling restart.

        Raises:
            EtcdServerTimeoutError: it did not answer within ``timeout``.
        """
        member = self._member(index)
        member.stop()
        member.launch(
            _command(
                self._binary_path or find_etcd_binary(),
                member,
                self._resources.members,
                self._flags,
            )
        )
        _wait_for(
            self._resources.members,
            lambda: member.answers(0.5),
            timeout,
            f"member {member.name} to rejoin",
        )

    def leader(self, timeout: float = 10) -> int:
        """The index of the member that leads now (waiting up to ``timeout`` for one).

        Raises:
            EtcdServerTimeoutError: no running member reports a leader within ``timeout``.
        """
        found: list[int] = []

        def known() -> bool:
            found[:] = [i for i in self._leaders() if i is not None][:1]
            return bool(found)

        _wait_for(self._resources.members, known, timeout, "a leader")
        return found[0]

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Return once every running, unpaused member serves linearizable reads."""

        def ready() -> bool:
            return all(m.answers(0.5) for m in self._resources.members if self._live(m))

        _wait_for(self._resources.members, ready, timeout, "every member to answer")

    def __enter__(self) -> EtcdCluster:
        if not self._resources.members:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EtcdCluster({self.endpoint or 'stopped'})"

    def _member(self, index: int) -> EtcdMember:
        members = self._resources.members
        if not 0 <= index < len(members):
            raise IndexError(f"No etcd member {index}: the cluster has {len(members)}.")
        return members[index]

    @staticmethod
    def _live(member: EtcdMember) -> bool:
        return member.is_running() and not member.paused

    def _leaders(self) -> list[int | None]:
        """For each live member, the index of the member it reports as leader."""
        ids: dict[str, int] = {}
        leaders: list[str] = []
        for member in self._resources.members:
            if not self._live(member):
                continue
            status = member.post("/v3/maintenance/status", {}, 0.5)
            header = (status or {}).get("header") or {}
            if status is not None and "member_id" in header:
                ids[str(header["member_id"])] = member.index
                leaders.append(str(status.get("leader", "0")))
        return [ids.get(leader) for leader in leaders]


def _wait_for(
    members: list[EtcdMember], done: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``done`` until it holds; fail early, with its log, if a member exits."""
    deadline = time.monotonic() + timeout
    while not done():
        for member in members:
            process = member.process
            if process is not None and process.poll() is not None:
                raise EtcdServerError(
                    f"etcd member {member.name} exited with code {process.returncode} while "
                    f"waiting for {what}; its log ({member.log_path}) ends:\n" + member.log_tail()
                )
        if time.monotonic() >= deadline:
            endpoint = ",".join(member.endpoint for member in members)
            raise EtcdServerTimeoutError(
                f"The etcd cluster {endpoint} did not have {what} within {timeout:g} s."
            )
        time.sleep(_POLL)


def _command(
    binary: str, member: EtcdMember, members: list[EtcdMember], flags: tuple[str, ...]
) -> list[str]:
    """The etcd command line of ``member`` in a cluster of ``members``."""
    peers = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        binary,
        f"--name={member.name}",
        f"--data-dir={member.data_dir}",
        f"--listen-client-urls={member.client_url}",
        f"--advertise-client-urls={member.client_url}",
        f"--listen-peer-urls={member.peer_url}",
        f"--initial-advertise-peer-urls={member.peer_url}",
        f"--initial-cluster={peers}",
        "--initial-cluster-token=rdzv-local",
        *flags,
    ]
