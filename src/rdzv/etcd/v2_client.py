"""python-etcd clients that make one attempt per member: for one etcd, and for a cluster.

python-etcd hands requests to urllib3, whose default retry policy repeats a
request that timed out three more times, and its own reconnection (a list of
hosts with ``allow_reconnect``) asks etcd for its members when the client is
built, swaps the client's one base URL under every thread that shares it, and
tries members without bound in time. The clients here send a request once to a
member, and :class:`ClusterClient` moves it to the next member through a
:class:`~rdzv.etcd.members.MemberPool`, within the same ``read_timeout``.

A write sent to a follower is a proposal that the follower forwards to the
leader. When the leader dies, the proposal dies with it, but etcd's v2 API says
so only when its own request timeout runs out (5 s plus two election timeouts),
where the v3 API answers "leader changed" at once. So a write that has not
answered after :data:`LEADER_CHECK_SECONDS` asks its member, every as long, who
leads and since when; once the member has no leader, or a leader it took after
the write was sent (the write may have been forwarded to the one before), the
write is given up as a failure of that member and sent to the next. That is what
a timeout did already, only sooner: the write may have been applied all the same, so every
write of rdzv must be safe to repeat (a compare-and-set that lost re-reads; a
join intent posted twice is admitted once; a heartbeat is overwritten; a delete
tolerates a key already gone).
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import etcd
import urllib3
from urllib3.exceptions import HTTPError, ReadTimeoutError

from rdzv.etcd.members import MemberPool

__all__ = [
    "LEADER_CHECK_SECONDS",
    "ClusterClient",
    "Leadership",
    "OneAttemptClient",
    "go_duration",
    "is_member_failure",
    "write_lost",
]

LEADER_CHECK_SECONDS = 0.5
"""How long a write waits before, and between, asking its member who leads."""

_SETTLED_STATES = ("StateFollower", "StateLeader")
"""Raft states of a member with a leader (``/v2/stats/self``'s ``state``)."""

_RAFT_INTERNAL, _LEADER_ELECTION = 300, 301
"""etcd v2 error codes of a member that cannot serve a write now (no leader, a timeout)."""


class Leadership(NamedTuple):
    """A member's view of its leader, as ``/v2/stats/self`` gives it."""

    state: str
    """The member's raft state (``StateFollower``, ``StateLeader``, ...)."""
    leader: str
    """The id of the member it follows; empty or ``0`` without a leader."""
    uptime: float
    """Seconds since the member took this leader (or, a leader, since it was elected)."""


def write_lost(first: Leadership, seen: Leadership, waited: float) -> bool:
    """Whether a write that has waited ``waited`` seconds on a member may have been dropped.

    ``first`` is the member's first answer while the write waited, ``seen`` its
    latest. The write may have been forwarded to a leader that is gone when the
    member has no leader now, when it follows another than at first, or when it
    took its leader less than ``waited`` ago: the election ended between the
    write's arrival and the first answer.
    """
    settled = seen.state in _SETTLED_STATES and seen.leader not in ("", "0")
    return not settled or seen.leader != first.leader or seen.uptime < waited


_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|us|µs|ns|h|m|s)")


def go_duration(text: str) -> float:
    """Seconds of a Go ``time.Duration`` string (``1h2m3.5s``, ``250ms``, ``0s``).

    Raises:
        ValueError: ``text`` is not such a string.
    """
    body = text[1:] if text.startswith("-") else text
    parts = _GO_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        raise ValueError(f"not a Go duration: {text!r}")
    seconds = sum(float(number) * _GO_UNITS[unit] for number, unit in parts)
    return -seconds if text.startswith("-") else seconds


class _MemberDown(etcd.EtcdConnectionFailed):
    """A member did not answer (refused, reset, timed out)."""


class _LeaderLost(_MemberDown):
    """A member lost or changed its leader while a write of ours waited on it."""


def is_member_failure(error: BaseException) -> bool:
    """Whether ``error`` says the member failed, so another member should be asked.

    A connection that failed, and etcd's own "cannot serve this now" answers:
    errors 300 (``etcdserver: request timed out``, leader lost) and 301 (during an
    election), and any HTTP 5xx.
    """
    if isinstance(error, etcd.EtcdWatchTimedOut):
        return False  # the watch's own timeout: nothing changed
    if isinstance(error, _MemberDown):
        return True
    if not isinstance(error, etcd.EtcdException) or not isinstance(error.payload, dict):
        return False
    status = error.payload.get("status")
    code = error.payload.get("errorCode")
    return code in (_RAFT_INTERNAL, _LEADER_ELECTION) or (isinstance(status, int) and status >= 500)


class OneAttemptClient(etcd.Client):
    """An ``etcd.Client`` whose HTTP pool never repeats a request on its own."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert self.http is not None  # python-etcd always makes one in __init__
        pool_options: dict[str, Any] = dict(self.http.connection_pool_kw)
        pool_options.pop("retries", None)
        self.http = urllib3.PoolManager(num_pools=10, retries=False, **pool_options)


def _exhausted(urls: str, failures: list[tuple[str, BaseException]]) -> etcd.EtcdConnectionFailed:
    detail = "; ".join(f"{url}: {type(e).__name__}: {e}" for url, e in failures)
    return etcd.EtcdConnectionFailed(
        f"no member of the etcd cluster {urls} answered ({detail})", cause=failures[-1][1]
    )


class ClusterClient(OneAttemptClient):
    """An ``etcd.Client`` for the members of one cluster: a failed request goes to the next.

    Each request is sent to one member at a time, in the order of a
    :class:`~rdzv.etcd.members.MemberPool`, all within the request's timeout
    (``read_timeout`` unless given). A watch that breaks resumes on the next
    member from the same ``waitIndex``: etcd v2's index is the cluster's, so no
    change is missed (an index etcd no longer holds raises
    ``EtcdEventIndexCleared``, as on one member). :attr:`base_uri` names every
    member, so that each message built from it does.

    Args:
        members: ``(host, port)`` of each member, in order; the first is asked first.
        **kwargs: the other ``etcd.Client`` arguments, which apply to every member.
    """

    def __init__(self, members: Sequence[tuple[str, int]], **kwargs: Any) -> None:
        host, port = members[0]
        protocol = kwargs.get("protocol", "http")
        urls = [f"{protocol}://{_url_host(h)}:{p}" for h, p in members]
        # Before the base constructor: it logs base_uri, which names the pool's members.
        self._pool = MemberPool(
            urls, is_member_failure, lambda failures: _exhausted(self._pool.describe(), failures)
        )
        super().__init__(host=host, port=port, **kwargs)
        # Writes wait in a worker so that the caller can ask who leads meanwhile;
        # workers are made on demand and an abandoned write ends at its own timeout.
        self._writes = concurrent.futures.ThreadPoolExecutor(
            max_workers=32, thread_name_prefix="rdzv-etcd-write"
        )

    @property
    def base_uri(self) -> str:
        """Every member's URL, joined by commas."""
        return self._pool.describe()

    @property
    def pool(self) -> MemberPool:
        """The members and their health."""
        return self._pool

    def api_execute(
        self,
        path: str,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request, to the members in turn until one answers (see the class)."""
        if not path.startswith("/"):
            raise ValueError("Path does not start with /")
        watch = (params or {}).get("wait") == "true"
        budget = self.read_timeout if timeout is None else timeout
        if not budget:
            budget = math.inf  # python-etcd: 0 waits without end

        def attempt(url: str, seconds: float) -> urllib3.BaseHTTPResponse:
            if watch or method == self._MGET:
                return self._send(url + path, method, params, seconds, watch)
            return self._write(url, path, method, params, seconds)

        return self._pool.call(attempt, budget, split=not watch)

    def _write(
        self, url: str, path: str, method: str, params: dict[str, Any] | None, seconds: float
    ) -> urllib3.BaseHTTPResponse:
        """Send a write to ``url``; give it up once the member's leader goes (see the module)."""
        sent = time.monotonic()
        pending = self._writes.submit(self._send, url + path, method, params, seconds, False)
        deadline = sent + seconds
        first: Leadership | None = None
        while True:
            remaining = deadline - time.monotonic()
            try:
                return pending.result(timeout=max(0.0, min(LEADER_CHECK_SECONDS, remaining)))
            except concurrent.futures.TimeoutError:
                if remaining <= LEADER_CHECK_SECONDS:
                    return pending.result()  # ends at the request's own timeout
            seen = self._leadership(url)
            if seen is None:
                continue  # the member does not say: the write's own timeout decides
            first = first or seen
            if write_lost(first, seen, time.monotonic() - sent):
                raise _LeaderLost(
                    f"{url} lost or changed its leader while a write waited on it "
                    f"({first.leader or 'none'} -> {seen.leader or 'none'}, {seen.state}, "
                    f"leading for {seen.uptime:.1f} s): etcd drops such a write"
                )

    def _leadership(self, url: str) -> Leadership | None:
        """The member's view of its leader, from ``/v2/stats/self``; ``None`` if unknown."""
        pool: Any = self.http
        try:
            response = pool.request(
                self._MGET,
                url + "/v2/stats/self",
                timeout=LEADER_CHECK_SECONDS,
                headers=self._get_headers(),
            )
            stats = json.loads(response.data)
            info = stats["leaderInfo"]
            return Leadership(
                str(stats["state"]), str(info["leader"]), go_duration(str(info["uptime"]))
            )
        except (HTTPError, http.client.HTTPException, OSError, ValueError, KeyError, TypeError):
            return None

    def _send(
        self, url: str, method: str, params: dict[str, Any] | None, seconds: float, watch: bool
    ) -> urllib3.BaseHTTPResponse:
        timeout = None if math.isinf(seconds) else seconds
        # urllib3's stubs type request_encode_body's keywords as str; the calls are
        # python-etcd's own (etcd.Client.api_execute).
        pool: Any = self.http
        try:
            if method in (self._MGET, self._MDELETE):
                response = pool.request(
                    method,
                    url,
                    timeout=timeout,
                    fields=params,
                    redirect=self.allow_redirect,
                    headers=self._get_headers(),
                    preload_content=False,
                )
            else:
                response = pool.request_encode_body(
                    method,
                    url,
                    fields=params,
                    timeout=timeout,
                    encode_multipart=False,
                    redirect=self.allow_redirect,
                    headers=self._get_headers(),
                    preload_content=False,
                )
            self._check_cluster_id(response)
            _ = response.data  # raise the I/O errors of the body here
        except (HTTPError, http.client.HTTPException, OSError) as e:
            if watch and isinstance(e, ReadTimeoutError):
                raise etcd.EtcdWatchTimedOut(f"Watch timed out: {e!r}", cause=e) from e
            raise _MemberDown(f"{url.split('/v2/', 1)[0]} did not answer: {e!r}", cause=e) from e
        return self._handle_server_response(response)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
