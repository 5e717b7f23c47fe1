"""Every timing constant of the protocol, and the capped back-offs built from them.

The protocol (:mod:`rdzv.core.protocol`) waits, polls and backs off; how long is
decided here and nowhere else, so that one file says how fast a node moves and
how hard it presses the backend. A back-off grows by doubling, and the exponent is
capped *before* the power is computed: a node that lost ten thousand writes waits
as long as one that lost twenty, and never computes ``2 ** 10000``.

Randomness comes in as a *draw*, a number in ``[0, 1)`` that the caller passes
(the shell from :mod:`random`, the simulator from its seeded generator), so the
same inputs always give the same wait.
"""

from __future__ import annotations

__all__ = [
    "FIRST_MOVER_ROUND",
    "HOLD_POLL",
    "LEAVE_TIMEOUT",
    "LOST_WRITE_BACKOFF",
    "MAX_EXPONENT",
    "MAX_TAKEOVERS",
    "MAX_VIEW_AGE",
    "MAX_WAIT",
    "OUTAGE_PAUSE",
    "PATIENCE",
    "STEWARD_POLL",
    "TAKEOVERS",
    "WAKE_MARGIN",
    "doubling",
    "first_heartbeat",
    "heartbeat_delay",
    "heartbeat_lag",
    "heartbeat_retry",
    "lost_write_backoff",
    "outage_pause",
    "patience",
    "steward_poll",
    "takeovers",
]

MAX_WAIT = 2.0
"""Longest single wait for a change of the state: a safety net should a backend miss
a notification."""

MAX_VIEW_AGE = 1.0
"""Oldest state a node decides on: older, it reads the state again first (a read that
asks only whether it changed). A node refreshes its view at every wait; on a host so
loaded that each step takes a large part of a second, every step finds other work due
(a heartbeat, an intent to post again, a board record to read) and the node never
waits: it went on deciding on a state 10 s old, long after its round had formed."""

WAKE_MARGIN = 0.005
"""A node wakes this much after a deadline: the decisions compare strictly
(``now > deadline``), so waking exactly at it would change nothing."""

FIRST_MOVER_ROUND = 16
"""Largest ``min_nodes`` at which, with no steward named, every pending node reads the
log and the first pending intent's node admits them all in one write. Above it, a
node places itself instead: N nodes each reading N records would cost more than
the write that self-placement adds."""

TAKEOVERS = 8
"""About how many of the nodes a round lacks take over from a steward that kept them
waiting past their patience; twice as many after each further patience."""

MAX_TAKEOVERS = 64
"""At most about this many take over per patience, however many patiences passed. A
steward that is slow, not dead (a dead one is dropped when its heartbeat expires),
is slow because the backend or its host is loaded: doubling without end would have
every pending node of a large round write at once, loading them further."""

PATIENCE = 1.0
"""Longest wait (drawn between half and all of it) for the steward's write before a
node writes itself. It bounds what a dead or stalled steward costs."""

STEWARD_POLL = 0.002
"""First interval at which a steward reads the intent log after a change; it doubles
while nothing happens (the nodes of a small job arrive together)."""

HOLD_POLL = 0.1
"""Longest interval between two reads of the intent log by a steward."""

LOST_WRITE_BACKOFF = (0.002, 0.1)
"""After the n-th lost compare-and-set in a row a node waits up to
``min(first * 2**(n-1), last)`` (drawn uniformly) for the winner's write."""

OUTAGE_PAUSE = (0.05, 1.0)
"""After the n-th failed request in an outage a node pauses ``min(first * 2**(n-1),
last)``, scaled by a draw between one half and one, before it tries again."""

LEAVE_TIMEOUT = 5.0
"""Seconds a node whose join failed after it was placed (its rank 0 never published
the round's address, an interrupt) tries to take itself out of the rendezvous."""

MAX_EXPONENT = 32
"""Doublings stop counting here: ``2.0 ** 32`` is far past every cap above."""


def doubling(first: float, attempt: int, last: float) -> float:
    """``first * 2 ** (attempt - 1)``, at most ``last``; attempt 1 gives ``first``.

    The exponent is clamped to ``0..MAX_EXPONENT`` before the power is taken, so any
    attempt count, however large, gives a finite number.
    """
    exponent = min(max(attempt - 1, 0), MAX_EXPONENT)
    return min(first * 2.0**exponent, last)


def patience(draw: float) -> float:
    """Seconds to wait for the steward's write: between ``PATIENCE / 2`` and ``PATIENCE``."""
    return PATIENCE * (0.5 + 0.5 * draw)


def steward_poll(polls: int) -> float:
    """Seconds between a steward's reads of the log after ``polls`` quiet reads in a row."""
    return doubling(STEWARD_POLL, polls + 1, HOLD_POLL)


def takeovers(passed: int) -> float:
    """About how many nodes take over from the steward after ``passed`` fruitless patiences."""
    return doubling(TAKEOVERS, passed + 1, MAX_TAKEOVERS)


def lost_write_backoff(lost: int, draw: float) -> float:
    """Seconds to wait for the winner's write after ``lost`` lost compare-and-sets in a row."""
    first, last = LOST_WRITE_BACKOFF
    return draw * doubling(first, lost, last)


def outage_pause(failures: int, draw: float) -> float:
    """Seconds to pause after the ``failures``-th failed request of an outage.

    Drawn between one half and all of the doubling step, so that the nodes of a job
    do not all come back at the same instant.
    """
    first, last = OUTAGE_PAUSE
    return (0.5 + 0.5 * draw) * doubling(first, failures, last)


def heartbeat_delay(last: float | None, now: float, interval: float) -> float:
    """Seconds until the next heartbeat: one interval after the last one sent.

    Timed from the last heartbeat (the join wrote one), not from now: otherwise a
    heartbeat could be almost two intervals old. At least 10 ms, at most an interval.
    """
    if last is None:
        return interval
    return min(max(last + interval - now, 0.01), interval)


def heartbeat_lag(lag: float, interval: float) -> float:
    """How much earlier a node judges heartbeats, given the longest its requests took
    lately (``lag``): all of it from one keep-alive interval up, none below.

    A request quicker than an interval holds a heartbeat back by less than the slack
    the expiry leaves for one missed beat; counted, every sub-second request of a
    loaded host would put off the deaths its node finds by as much. A backend that
    stalls for seconds holds every heartbeat that long.
    """
    return lag if lag >= interval else 0.0


def intent_refresh_age(expiry: float, interval: float) -> float:
    """Age at which a pending node posts its intent again, before it would expire; its
    keep-alive beats from then on too, should it be admitted from an intent that old."""
    return max(expiry - interval, expiry / 2)


def late_beat(expiry: float, interval: float) -> float:
    """Age of its last heartbeat at which a joining node beats: halfway from due (an
    interval) to dead (the expiry). Beating every interval, the 1,023 survivors of a
    failure on etcd-v2 beat 8,900 to 10,200 times while they re-formed, in 11 to 13 s;
    once late, 4,700 to 5,100 times, in 7 to 8.5 s."""
    return interval + (expiry - interval) / 2


def beat_due(
    last: float | None, joining_since: float | None, known: bool, expiry: float, interval: float
) -> float | None:
    """When a node's next heartbeat is due (``None``: it has none to send yet).

    ``last``: its last heartbeat known; ``joining_since``: when its join under way
    started (``None``: not joining); ``known``: the state holds it. An interval after
    the last; while it joins, once late (:func:`late_beat`); and joining but not yet in
    the state, from when it would post its intent again (:func:`intent_refresh_age`),
    its intent's time being its heartbeat until then. The shell's keep-alive and the
    simulator's both time their beats by it.
    """
    if joining_since is None:
        return None if last is None else last + interval
    due = None if last is None else last + late_beat(expiry, interval)
    if known:
        return due
    pending = joining_since + intent_refresh_age(expiry, interval)
    return pending if due is None else max(due, pending)


def first_heartbeat(delay: float, draw: float) -> float:
    """The first heartbeat after a join comes at a random point of ``delay``: the nodes of
    a round all joined at one instant and would otherwise beat together for good."""
    return delay * (0.5 + 0.5 * draw)


def heartbeat_retry(interval: float, draw: float) -> float:
    """After a failed heartbeat, try again a random quarter to whole interval later, not at
    once: every node retrying in a tight loop would press a backend that is coming back."""
    return interval * (0.25 + 0.75 * draw)
