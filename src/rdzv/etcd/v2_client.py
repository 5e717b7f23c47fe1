"""The v2 client of rdzv: python-etcd's ``etcd.Client``, with requests of our own making.

python-etcd hands requests to urllib3, whose default retry policy repeats a
request that timed out three more times, and its own reconnection (a list of
hosts with ``allow_reconnect``) asks etcd for its members when the client is
built, swaps the client's one base URL under every thread that shares it, and
tries members without bound in time. :class:`ClusterClient` keeps python-etcd's
API, requests and results, but sends each request itself, once to a member, on
connections kept open (:class:`~rdzv.etcd.connection.MemberSession`, at a third
of urllib3's client CPU), and moves it to the next member through a
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

import http.client
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import etcd
import urllib3
from urllib3.exceptions import HTTPError

from rdzv.etcd.connection import WAITING_CHECK_SECONDS, MemberConnection, MemberSession
from rdzv.etcd.members import MemberPool

__all__ = [
    "LEADER_CHECK_SECONDS",
    "WATCH_SEND_SECONDS",
    "ClusterClient",
    "Leadership",
    "OneAttemptClient",
    "go_duration",
    "is_member_failure",
    "write_lost",
]

LEADER_CHECK_SECONDS = WAITING_CHECK_SECONDS
"""How long a write waits before, and between, asking its member who leads."""

WATCH_SEND_SECONDS = 5.0
"""Longest time :meth:`ClusterClient.send_watch` takes to connect and send."""

_TRANSPORT_ERRORS = (HTTPError, http.client.HTTPException, OSError)
"""What connecting to a member, or talking to it, raises when it fails (timeouts among them)."""

_PATH_SAFE = "/:@!$&'()*+,;=~"
"""Characters a key's path keeps as they are; the others are percent-encoded. A key is
the key itself: ``%``, ``?`` and ``#`` in it are escaped too (urllib3, under
python-etcd, takes ``%41`` for ``A`` and cuts a key at ``?`` or ``#``)."""

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
    """An ``etcd.Client`` whose HTTP pool never repeats a request on its own.

    :class:`ClusterClient` sends rdzv's requests itself; this pool serves what
    python-etcd sends on its own (``machines``, ``leader``, ``stats``).
    """

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


class _Answer:
    """An answer of etcd as python-etcd reads one (status, body, lower-case headers)."""

    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.data = data
        self._headers = headers

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name.lower(), default)

    def getheaders(self) -> dict[str, str]:
        return self._headers


class ClusterClient(OneAttemptClient):
    """An ``etcd.Client`` for the members of one cluster: a failed request goes to the next.

    Each request is sent to one member at a time, in the order of a
    :class:`~rdzv.etcd.members.MemberPool`, all within the request's timeout
    (``read_timeout`` unless given); with one member, that member gets it all. A
    watch that breaks resumes on the next member from the same ``waitIndex``:
    etcd v2's index is the cluster's, so no change is missed (an index etcd no
    longer holds raises ``EtcdEventIndexCleared``, as on one member).
    :attr:`base_uri` names every member, so that each message built from it does.

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
        self._session = MemberSession(urls, cert=kwargs.get("cert"), ca_cert=kwargs.get("ca_cert"))

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
    ) -> Any:
        """Send one request, to the members in turn until one answers (see the class).

        Returns the answer, which python-etcd reads as it reads urllib3's.
        """
        if not path.startswith("/"):
            raise ValueError("Path does not start with /")
        if method not in (self._MGET, self._MDELETE, self._MPUT, self._MPOST):
            raise etcd.EtcdException(f"HTTP method {method} not supported")
        watch = (params or {}).get("wait") == "true"
        budget = self.read_timeout if timeout is None else timeout
        if not budget:
            budget = math.inf  # python-etcd: 0 waits without end
        fields = urllib.parse.urlencode(params or {})
        target = urllib.parse.quote(path, safe=_PATH_SAFE)
        headers = dict(self._get_headers())
        if method in (self._MGET, self._MDELETE):
            target, body = (f"{target}?{fields}" if fields else target), b""
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = fields.encode()
        # A write to one of several members asks it who leads while it waits (module).
        check = method != self._MGET and not watch and len(self._pool.urls) > 1

        def attempt(url: str, seconds: float) -> Any:
            waiting = self._leader_check(url) if check else None
            try:
                status, answer, data = self._session.exchange(
                    url, target, body, seconds, method=method, headers=headers, waiting=waiting
                )
            except _TRANSPORT_ERRORS as e:
                if watch and isinstance(e, TimeoutError):
                    raise etcd.EtcdWatchTimedOut(f"Watch timed out: {e!r}", cause=e) from e
                raise _MemberDown(f"{url} did not answer: {e!r}", cause=e) from e
            # python-etcd reads it as it reads urllib3's answers (its stubs say so).
            response: Any = _Answer(status, answer, data)
            self._check_cluster_id(response)
            return self._handle_server_response(response)

        return self._pool.call(attempt, budget, split=not watch)

    def send_watch(self, key: str, index: int) -> MemberConnection:
        """Send a watch of ``key`` from etcd index ``index`` to the member that answered
        last, on a connection of its own, and return without its answer.

        etcd sends the head of its answer at once, and the body when the key changes
        (or the watch ends); the head is read here, so the connection turns readable
        (:meth:`MemberConnection.dropped`) when that body comes, or when the member
        goes away, which the caller checks without blocking. Closing the connection
        ends the watch.

        Raises:
            OSError, urllib3.exceptions.HTTPError: connecting or sending failed, or the
                head did not come in time.
            etcd.EtcdException: etcd refused the watch (its message says why).
        """
        url = self._pool.urls[self._pool.order()[0]]
        key = key if key.startswith("/") else f"/{key}"  # as python-etcd's read() makes it
        path = urllib.parse.quote(self.key_endpoint + key, safe=_PATH_SAFE)
        query = urllib.parse.urlencode({"wait": "true", "waitIndex": index})
        seconds = min(float(self.read_timeout or math.inf), WATCH_SEND_SECONDS)
        connection = self._session.connect(url, seconds)
        deadline = time.monotonic() + seconds
        try:
            connection.send(
                f"{path}?{query}", dict(self._get_headers()), b"", deadline, method=self._MGET
            )
            status, headers = connection.head(deadline)
            if status != 200:
                data = connection.body(headers, deadline)
                self._handle_server_response(_Answer(status, headers, data))  # type: ignore[arg-type]
                raise etcd.EtcdException(f"{url} answered a watch with HTTP {status}")
        except BaseException:
            connection.close()
            raise
        return connection

    def _leader_check(self, url: str) -> Callable[[], None]:
        """What a write to ``url`` does while it waits: give up once the leader went."""
        sent = time.monotonic()
        first: Leadership | None = None

        def waiting() -> None:
            nonlocal first
            seen = self._leadership(url)
            if seen is None:
                return  # the member does not say: the write's own timeout decides
            first = first or seen
            if write_lost(first, seen, time.monotonic() - sent):
                raise _LeaderLost(
                    f"{url} lost or changed its leader while a write waited on it "
                    f"({first.leader or 'none'} -> {seen.leader or 'none'}, {seen.state}, "
                    f"leading for {seen.uptime:.1f} s): etcd drops such a write"
                )

        return waiting

    def _leadership(self, url: str) -> Leadership | None:
        """The member's view of its leader, from ``/v2/stats/self``; ``None`` if unknown."""
        try:
            _, _, data = self._session.exchange(
                url,
                "/v2/stats/self",
                b"",
                LEADER_CHECK_SECONDS,
                method=self._MGET,
                headers=dict(self._get_headers()),
            )
            stats = json.loads(data)
            info = stats["leaderInfo"]
            return Leadership(
                str(stats["state"]), str(info["leader"]), go_duration(str(info["uptime"]))
            )
        except (*_TRANSPORT_ERRORS, ValueError, KeyError, TypeError):
            return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
