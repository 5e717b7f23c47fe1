"""Watching a rendezvous without joining it: :func:`watch` yields what happens to a run.

    import rdzv

    params = rdzv.RendezvousParameters("c10d", "node0:29400", "job42", 1, 1)
    with rdzv.watch(params) as watcher:
        for item in watcher:
            print(item)   # events, status changes and snapshots, until watcher.stop()

Items are the core's events (:mod:`rdzv.core.events`: a node joined, left, was
declared dead; a round completed, was abandoned, started; the rendezvous closed),
:class:`WatchStatus` when the watcher can read a state again or cannot, and a
:class:`Snapshot` after each change (and once per keep-alive interval). The
watcher is read-only, is driven by the backend's change notification, and
survives a corrupt state and an unreachable backend (see :mod:`rdzv.watching.watcher`).
"""

from __future__ import annotations

from datetime import timedelta

from rdzv.api import RendezvousParameters
from rdzv.core import RendezvousSettings
from rdzv.options import refuse_none
from rdzv.watching.records import Snapshot, Status, WatchItem, WatchStatus, item_to_json
from rdzv.watching.source import WATCHABLE, Source, open_source
from rdzv.watching.watcher import Watcher

__all__ = [
    "WATCHABLE",
    "Snapshot",
    "Source",
    "Status",
    "WatchItem",
    "WatchStatus",
    "Watcher",
    "item_to_json",
    "open_source",
    "watch",
    "watch_settings",
]


def watch_settings(params: RendezvousParameters) -> RendezvousSettings:
    """The run id and keep-alive settings of ``params``: what decides when a node is dead.

    ``keep_alive_interval`` (5) and ``keep_alive_max_attempt`` (3) are read as the
    nodes read them; give the watcher the nodes' values.

    Raises:
        ValueError: an invalid value (named in the message).
    """
    refuse_none(params, "keep_alive_interval", "keep_alive_max_attempt")
    interval = params.get_as_float("keep_alive_interval", 5.0)
    attempts = params.get_as_int("keep_alive_max_attempt", 3)
    return RendezvousSettings(
        run_id=params.run_id,
        min_nodes=1,
        max_nodes=1,
        keep_alive_interval=timedelta(seconds=5.0 if interval is None else interval),
        keep_alive_max_attempt=3 if attempts is None else attempts,
    )


def watch(params: RendezvousParameters, *, refresh: float | None = None) -> Watcher:
    """A :class:`Watcher` of the run that ``params`` names (``min_nodes``/``max_nodes`` unused).

    Nothing is opened until the iteration starts, so a backend that is not up yet
    is reported (and retried) by the watcher rather than raised here. ``refresh``
    (default: the keep-alive interval) is how often heartbeats and pending joins
    are read when the state does not change.

    Raises:
        ValueError: the backend cannot be watched, or an option is invalid.
    """
    if params.backend not in WATCHABLE:
        raise ValueError(
            f"The rendezvous backend {params.backend!r} cannot be watched: its state is not "
            f"one rdzv reads. Watch one of {', '.join(WATCHABLE)}."
        )
    if refresh is not None and refresh <= 0:
        raise ValueError(f"The refresh period ({refresh}) must be positive.")
    settings = watch_settings(params)
    where = (
        "memory (this process)"
        if params.backend == "memory"
        else f"{params.backend} at {params.endpoint}"
    )
    return Watcher(lambda: open_source(params), settings, where, refresh=refresh)
