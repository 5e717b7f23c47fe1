"""``EtcdRendezvous``: the phases of torch's legacy etcd rendezvous, run against etcd.

A node enters the barrier (:meth:`EtcdRendezvous.rendezvous_barrier`) and goes
through the phases named after the protocol (see :mod:`rdzv.legacy.protocol`
for the keys and documents):

- **init**: create a round (``setup`` -> ``joinable``) or look at the current one;
- **join**: add itself to a joinable round; the ``min_nodes``-th node waits out
  the **last call** and then freezes the round (``max_nodes`` freezes it at once);
- **confirm**: each participant of a frozen round writes its keep-alive key and
  adds it to the state; the last one makes the round ``final``;
- **existing round**: a node that finds a final round counts itself in
  ``num_workers_waiting`` and watches the round until a participant's keep-alive
  key disappears, then destroys the round so that a new one starts.

Every transition is a compare-and-swap on ``active_version`` against the text
just read, so nodes of torch and of rdzv can race on it safely. The keys and
documents are torch's; what rdzv does differently:

- a lost race is retried after a short jittered backoff, and a state already in
  hand is not read again (torch sleeps up to 0.1 s before every compare-and-swap
  and a whole second after some lost races);
- the last call ends at its deadline (torch oversleeps it by up to a second);
- entering the barrier again deletes this node's keep-alive key of its last
  round, which ends that round at once (torch lets the key expire: 10 s);
- ``set_closed`` on a run without state writes a closed state (torch raises);
- a missing round counter (the run directory expired) is laid out again (torch
  gives up with "worker needs to die");
- keep-alive keys are renewed through etcd errors (:mod:`rdzv.legacy.lease`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Final

import etcd

from rdzv.api import (
    RendezvousClosedError,
    RendezvousStateError,
    RendezvousTimeoutError,
)
from rdzv.etcd.v2_connect import ETCD_ERRORS, connection_error
from rdzv.legacy import protocol
from rdzv.legacy.lease import LeaseRenewal
from rdzv.legacy.protocol import LegacyPaths, LegacyState
from rdzv.store.etcd import EtcdStore

__all__ = [
    "EtcdRendezvous",
    "EtcdRendezvousRetryImmediately",
    "EtcdRendezvousRetryableFailure",
]

logger = logging.getLogger(__name__)

_RETRY_DELAY: Final = 0.25
"""Longest pause before re-entering after a lost race (torch sleeps a fixed second):
every such retry follows a change this node has already seen."""
_CAS_DELAY: Final = 0.1
"""Longest pause after a run of lost compare-and-swaps, as torch's ``cas_delay``."""
_FIRST_CAS_DELAY: Final = 0.01
"""Longest pause after the first lost compare-and-swap: losing means another node's
write went through, so the state is worth reading again almost at once."""

# What etcd answers when another node got there first, or when etcd itself is
# between two states: the barrier re-enters instead of failing.
_RACES: tuple[type[Exception], ...] = (
    etcd.EtcdKeyNotFound,
    etcd.EtcdCompareFailed,
    etcd.EtcdAlreadyExist,
    etcd.EtcdEventIndexCleared,
    etcd.EtcdWatcherCleared,
    etcd.EtcdLeaderElectionInProgress,
)


_Seen = tuple[etcd.EtcdResult, LegacyState]
"""A state as last read (or written) by this node: the etcd result and its document."""

# Why a state may not be readable for an error message.
_UNREADABLE: tuple[type[BaseException], ...] = (RendezvousStateError, *ETCD_ERRORS)


class EtcdRendezvousRetryableFailure(Exception):
    """Too late for the transition this node wanted: re-enter the barrier after a short pause."""


class EtcdRendezvousRetryImmediately(Exception):
    """The state moved on in a way that lets this node re-enter the barrier at once."""


def _pause(limit: float) -> None:
    time.sleep(random.uniform(0, limit))  # noqa: S311 - jitter, not secrecy


def _backoff(attempt: int) -> None:
    """Pause after the ``attempt``-th lost compare-and-swap in a row (0 for the first).

    Full jitter over a ceiling that doubles up to ``_CAS_DELAY``, so that nodes
    racing for one key spread out quickly.
    """
    _pause(min(_CAS_DELAY, _FIRST_CAS_DELAY * 2.0 ** min(attempt, 8)))


class EtcdRendezvous:
    """The legacy etcd rendezvous of one run, wire-compatible with torch's ``EtcdRendezvous``.

    Args (torch's):
        client: python-etcd client (v2 API).
        prefix: etcd directory of all runs (torch's ``etcd_prefix``).
        run_id: the job's id.
        num_min_workers, num_max_workers: bounds of a round.
        timeout: seconds :meth:`rendezvous_barrier` may take.
        last_call_timeout: seconds the round stays open after ``num_min_workers`` joined.
        lease_client: client of the keep-alive threads; give one whose
            ``read_timeout`` is well under the 10 s TTL of keep-alive keys
            (default: ``client``).

    Raises:
        ValueError: invalid bounds, timeouts or prefix.
        RendezvousConnectionError: etcd cannot be reached.
    """

    def __init__(
        self,
        client: etcd.Client,
        prefix: str,
        run_id: str,
        num_min_workers: int,
        num_max_workers: int,
        timeout: float,
        last_call_timeout: float,
        *,
        lease_client: etcd.Client | None = None,
    ) -> None:
        if not 1 <= num_min_workers <= num_max_workers:
            raise ValueError(
                f"The node bounds min_nodes={num_min_workers}, max_nodes={num_max_workers} must "
                "satisfy 1 <= min_nodes <= max_nodes."
            )
        if timeout <= 0 or last_call_timeout < 0:
            raise ValueError(
                f"The rendezvous option 'timeout' ({timeout}) must be positive and "
                f"'last_call_timeout' ({last_call_timeout}) must not be negative."
            )
        self.client = client
        self.paths = LegacyPaths(prefix, run_id)
        self._run_id = run_id
        self._num_min_workers = num_min_workers
        self._num_max_workers = num_max_workers
        self._timeout = timeout
        self._last_call_timeout = last_call_timeout
        self._lease_client = lease_client or client
        self._deadline = 0.0
        self._rank_lease: LeaseRenewal | None = None
        with self._etcd_errors():
            self._create_layout()
        self._run_lease = LeaseRenewal(
            self._lease_client, self.paths.run_dir, protocol.RUN_DIR_TTL, is_dir=True
        ).start()

    @property
    def run_id(self) -> str:
        """The job's run id."""
        return self._run_id

    # -- the barrier -------------------------------------------------------------

    def rendezvous_barrier(self) -> tuple[str, int, int]:
        """Block until this node is in a final round; return ``(version, rank, world_size)``.

        A node that was in a round leaves it first (its keep-alive key is deleted).

        Raises:
            RendezvousClosedError: the rendezvous is closed.
            RendezvousTimeoutError: no round completed within ``timeout``.
            RendezvousConnectionError: etcd failed or could not be reached.
            RendezvousStateError: the state in etcd is not a legacy rendezvous state.
        """
        self._deadline = time.monotonic() + self._timeout
        with self._etcd_errors():
            while True:
                self._check_deadline()
                # Also after a failed attempt: a round this node confirmed may
                # have ended before it became final.
                self._leave_round()
                try:
                    return self.init_phase()
                except EtcdRendezvousRetryImmediately:
                    continue
                except EtcdRendezvousRetryableFailure as e:
                    logger.debug("Re-entering the rendezvous: %s", e)
                    self._pause_before_retry()
                except _RACES as e:
                    logger.debug("Re-entering the rendezvous after %s: %s", type(e).__name__, e)
                    self._pause_before_retry()

    def init_phase(self) -> tuple[str, int, int]:
        """Create a round, or act on the current one: join it, wait for the next, or fail.

        Raises:
            RendezvousClosedError: the rendezvous is closed.
            EtcdRendezvousRetryImmediately, EtcdRendezvousRetryableFailure: re-enter.
        """
        try:
            active_version = self.try_create_rendezvous()
            state = self._decode(active_version)
            logger.info("Created round %s of rendezvous '%s'.", state.version, self._run_id)
        except etcd.EtcdAlreadyExist:
            active_version, state = self.get_rdzv_state()
        if state.status == "closed":
            raise self._closed_error()
        if state.status == "joinable":
            return self.join_phase(_version(state), seen=(active_version, state))
        if state.status == "final":
            self.handle_existing_rendezvous(_version(state), seen=(active_version, state))
            raise EtcdRendezvousRetryImmediately
        # setup or frozen: another node is in the middle of a transition.
        self.try_wait_for_state_change(active_version.etcd_index + 1)
        raise EtcdRendezvousRetryImmediately

    def try_create_rendezvous(self) -> etcd.EtcdResult:
        """Create a new joinable round, if there is no state at all.

        Raises:
            etcd.EtcdAlreadyExist: there is a state already.
            RendezvousStateError: the round counter is not a number.
        """
        # The placeholder has a short TTL: if this node dies before the round is
        # joinable, the key frees itself.
        setup = self.client.write(
            self.paths.active_version,
            protocol.encode_state(protocol.SETUP),
            prevExist=False,
            ttl=protocol.SETUP_TTL,
        )
        version = self._next_version()
        # It may exist if the counter was reset; whatever is in it is of no round now.
        self._create_dir(self.paths.round_dir(version))
        return self._swap(setup, protocol.joinable(version))

    def join_phase(self, expected_version: str, seen: _Seen | None = None) -> tuple[str, int, int]:
        """Join round ``expected_version``, wait for it to freeze, then confirm.

        ``seen``, here and in the other phases: the state this node read last,
        used instead of reading it again.
        """
        active_version, this_rank = self.join_rendezvous(expected_version, seen)
        state = self._decode(active_version)
        logger.info(
            "Joined round %s of rendezvous '%s' as rank %d.",
            expected_version,
            self._run_id,
            this_rank,
        )
        if this_rank == self._num_min_workers - 1 and state.status == "joinable":
            logger.info(
                "Rank %d waits out the last call of %g s.", this_rank, self._last_call_timeout
            )
            deadline = time.monotonic() + self._last_call_timeout
            self.handle_join_last_call(expected_version, deadline, (active_version, state))
            frozen = self.wait_for_peers(expected_version)
        else:
            frozen = self.wait_for_peers(expected_version, (active_version, state))
        return self.confirm_phase(expected_version, this_rank, (frozen, self._decode(frozen)))

    def join_rendezvous(
        self, expected_version: str, seen: _Seen | None = None
    ) -> tuple[etcd.EtcdResult, int]:
        """Add this node to round ``expected_version``; return the new state and its rank."""
        attempt = 0
        while True:
            active_version, state = seen or self.get_rdzv_state()
            seen = None
            if state.status != "joinable":
                raise EtcdRendezvousRetryableFailure("The round stopped being joinable.")
            if state.version != expected_version:
                raise EtcdRendezvousRetryImmediately("A new round replaced the one to join.")
            joined, rank, ttl = protocol.add_participant(
                state, self._num_min_workers, self._num_max_workers
            )
            with contextlib.suppress(etcd.EtcdCompareFailed):
                return self._swap(active_version, joined, ttl), rank
            self._after_lost_swap(attempt)
            attempt += 1

    def handle_join_last_call(
        self, expected_version: str, deadline: float, seen: _Seen | None = None
    ) -> None:
        """Keep the round joinable until ``deadline``, then freeze it.

        The state's TTL is renewed while waiting: if this node dies, the round
        expires and the others start again.
        """
        active_version, state = seen or self.get_rdzv_state()
        attempt = 0
        while True:
            if state.is_phase("frozen", expected_version):
                return  # max_nodes arrived before the deadline
            if not state.is_phase("joinable", expected_version):
                raise EtcdRendezvousRetryableFailure("The round changed during the last call.")
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    self._swap(active_version, protocol.freeze(state), protocol.FROZEN_TTL)
                    return
                active_version = self._swap(active_version, state, protocol.JOINABLE_TTL)
                active_version, state = self.try_wait_for_state_change(
                    active_version.etcd_index + 1,
                    timeout=min(protocol.JOINABLE_TTL / 2, remaining),
                )
            except etcd.EtcdCompareFailed:
                self._after_lost_swap(attempt)
                attempt += 1
                active_version, state = self.get_rdzv_state()

    def wait_for_peers(self, expected_version: str, seen: _Seen | None = None) -> etcd.EtcdResult:
        """Wait until round ``expected_version`` is frozen."""
        return self._wait_while("joinable", "frozen", expected_version, seen)

    def confirm_phase(
        self, expected_version: str, this_rank: int, seen: _Seen | None = None
    ) -> tuple[str, int, int]:
        """Confirm membership in the frozen round, then wait for it to be final."""
        confirmed = self.confirm_membership(expected_version, this_rank, seen)
        final = self.wait_for_final(expected_version, (confirmed, self._decode(confirmed)))
        state = self._decode(final)
        participants = state.participants or ()
        logger.info(
            "Round %s of rendezvous '%s' is complete: rank %d of %d.",
            expected_version,
            self._run_id,
            this_rank,
            len(participants),
        )
        return expected_version, this_rank, len(participants)

    def confirm_membership(
        self, expected_version: str, this_rank: int, seen: _Seen | None = None
    ) -> etcd.EtcdResult:
        """Write this node's keep-alive key, add it to the state, and keep it alive."""
        key = self.paths.rank_key(expected_version, this_rank)
        written = -math.inf
        attempt = 0
        while True:
            active_version, state = seen or self.get_rdzv_state()
            seen = None
            if not state.is_phase("frozen", expected_version):
                raise EtcdRendezvousRetryImmediately("The round ended before this node confirmed.")
            # Written again only when a long run of lost races makes it old:
            # torch writes it before every attempt.
            if time.monotonic() - written > protocol.KEEP_ALIVE_TTL / 2:
                self.client.write(key, None, ttl=protocol.KEEP_ALIVE_TTL)
                written = time.monotonic()
            confirmed = protocol.add_keep_alive(state, key)
            ttl = None if confirmed.status == "final" else protocol.FROZEN_TTL
            try:
                result = self._swap(active_version, confirmed, ttl)
            except etcd.EtcdCompareFailed:
                self._after_lost_swap(attempt)
                attempt += 1
                continue
            self._rank_lease = LeaseRenewal(
                self._lease_client, key, protocol.KEEP_ALIVE_TTL
            ).start()
            return result

    def wait_for_final(self, expected_version: str, seen: _Seen | None = None) -> etcd.EtcdResult:
        """Wait until every participant of round ``expected_version`` has confirmed."""
        return self._wait_while("frozen", "final", expected_version, seen)

    def handle_existing_rendezvous(self, expected_version: str, seen: _Seen | None = None) -> None:
        """Count this node as waiting for the next round, and wait until the round ends."""
        waiting = self.announce_self_waiting(expected_version, seen)
        self.wait_for_rendezvous_to_free(expected_version, (waiting, self._decode(waiting)))

    def announce_self_waiting(
        self, expected_version: str, seen: _Seen | None = None
    ) -> etcd.EtcdResult:
        """Add one to ``num_workers_waiting`` of the final round ``expected_version``."""
        attempt = 0
        while True:
            active_version, state = seen or self.get_rdzv_state()
            seen = None
            if not state.is_phase("final", expected_version):
                raise EtcdRendezvousRetryImmediately("The final round ended.")
            with contextlib.suppress(etcd.EtcdCompareFailed):
                return self._swap(active_version, protocol.add_waiting(state))
            self._after_lost_swap(attempt)
            attempt += 1

    def wait_for_rendezvous_to_free(self, expected_version: str, seen: _Seen | None = None) -> None:
        """Return once round ``expected_version`` is no longer final.

        While waiting, checks the participants' keep-alive keys: when one is
        missing, the round is over, and this node destroys it (compare-and-delete
        of the state, so only the round it saw) for a new one to start.
        """
        active_version, state = seen or self.get_rdzv_state()
        while state.is_phase("final", expected_version):
            missing = self._missing_keep_alives(expected_version, state)
            if missing:
                logger.info(
                    "Round %s of rendezvous '%s' lost participants (no keep-alive %s); ending it.",
                    expected_version,
                    self._run_id,
                    missing[0],
                )
                with contextlib.suppress(etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
                    self.client.delete(
                        self.paths.active_version, prevValue=active_version.value or ""
                    )
                return
            self._watch(self.paths.rdzv_dir, active_version.etcd_index + 1, recursive=True)
            self._check_deadline()
            active_version, state = self.get_rdzv_state()

    # -- closing -----------------------------------------------------------------

    def set_closed(self) -> None:
        """Mark the rendezvous closed, so that no node starts or joins a round.

        Works on a run that has no state yet too (torch raises there).

        Raises:
            RendezvousConnectionError: etcd failed or could not be reached.
            RendezvousStateError: the state in etcd is unreadable.
        """
        with self._etcd_errors():
            attempt = 0
            while True:
                try:
                    active_version, state = self.get_rdzv_state()
                except etcd.EtcdKeyNotFound:
                    with contextlib.suppress(etcd.EtcdAlreadyExist):
                        self.client.write(
                            self.paths.active_version,
                            protocol.encode_state(protocol.close(None)),
                            prevExist=False,
                        )
                        return
                    continue
                if state.status == "closed":
                    return
                try:
                    # No TTL: a closed state must outlive the round it closed.
                    self._swap(active_version, protocol.close(state))
                    return
                except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
                    _backoff(attempt)
                    attempt += 1

    def current_state(self) -> LegacyState | None:
        """The current state, or ``None`` when there is none.

        Raises:
            RendezvousConnectionError: etcd failed or could not be reached.
            RendezvousStateError: the state in etcd is unreadable.
        """
        with self._etcd_errors():
            try:
                return self.get_rdzv_state()[1]
            except etcd.EtcdKeyNotFound:
                return None

    # -- state and watches ---------------------------------------------------------

    def get_rdzv_state(self) -> tuple[etcd.EtcdResult, LegacyState]:
        """Read ``active_version``: the etcd result (for its index and text) and the state.

        Raises:
            etcd.EtcdKeyNotFound: there is no state.
            RendezvousStateError: the state is unreadable.
        """
        active_version = self.client.get(self.paths.active_version)
        return active_version, self._decode(active_version)

    def try_wait_for_state_change(
        self, etcd_index: int, timeout: float | None = None
    ) -> tuple[etcd.EtcdResult, LegacyState]:
        """Wait (at most ``timeout`` and the deadline) for a write to the state; re-read it.

        Raises:
            RendezvousTimeoutError: the deadline passed.
        """
        self._watch(self.paths.active_version, etcd_index, timeout=timeout)
        self._check_deadline()
        return self.get_rdzv_state()

    # -- extra data and the store ----------------------------------------------------

    def store_extra_data(self, rdzv_version: str, key: str, value: Any) -> None:
        """Add ``key: value`` (JSON) to the ``extra_data`` object of round ``rdzv_version``.

        Raises:
            RendezvousConnectionError: etcd failed or could not be reached.
            RendezvousStateError: ``extra_data`` holds something else than a JSON object.
        """
        node = self.paths.extra_data(rdzv_version)
        with self._etcd_errors():
            try:
                self.client.write(node, json.dumps({key: value}), prevExist=False)
                return
            except etcd.EtcdAlreadyExist:
                pass
            attempt = 0
            while True:
                current = self.client.get(node)
                data = self._extra_data(current.value, node)
                data[key] = value
                try:
                    self.client.test_and_set(node, json.dumps(data), current.value or "")
                    return
                except etcd.EtcdCompareFailed:
                    _backoff(attempt)
                    attempt += 1

    def load_extra_data(self, rdzv_version: str, key: str, timeout: float | None = None) -> Any:
        """Wait for ``key`` in the ``extra_data`` of round ``rdzv_version`` and return its value.

        Raises:
            RendezvousTimeoutError: it did not appear within ``timeout`` (default: the
                rendezvous timeout).
            RendezvousConnectionError: etcd failed or could not be reached.
            RendezvousStateError: ``extra_data`` holds something else than a JSON object.
        """
        node = self.paths.extra_data(rdzv_version)
        limit = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._etcd_errors():
            while True:
                try:
                    current = self.client.get(node)
                except etcd.EtcdKeyNotFound as e:
                    index = (e.payload or {}).get("index", 0)
                else:
                    data = self._extra_data(current.value, node)
                    if key in data:
                        return data[key]
                    index = current.etcd_index
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RendezvousTimeoutError(
                        f"The extra data '{key}' of round {rdzv_version} of rendezvous "
                        f"'{self._run_id}' did not appear within {limit:g} s at {node}. Check "
                        "that the node that stores it is running."
                    )
                with contextlib.suppress(etcd.EtcdWatchTimedOut, etcd.EtcdEventIndexCleared):
                    self.client.watch(node, index=index + 1, timeout=remaining)

    def setup_kv_store(self, rdzv_version: str) -> EtcdStore:
        """The ``EtcdStore`` of round ``rdzv_version`` (``v_<n>/kv``, torch's layout).

        Raises:
            RendezvousConnectionError: etcd failed or could not be reached.
        """
        path = self.paths.kv_dir(rdzv_version)
        with self._etcd_errors():
            self._create_dir(path)
        return EtcdStore(self.client, path)

    # -- leases ------------------------------------------------------------------------

    def stop_leases(self) -> None:
        """Stop renewing this node's keys (they expire one TTL later)."""
        if self._rank_lease is not None:
            self._rank_lease.stop()
        self._run_lease.stop()

    def _leave_round(self) -> None:
        """Stop keeping this node's key of the last round alive, and delete it.

        Deleting it ends that round for the nodes waiting on it now, rather than
        after the key's TTL (torch only stops renewing it).
        """
        lease, self._rank_lease = self._rank_lease, None
        if lease is None:
            return
        lease.stop()
        try:
            self.client.delete(lease.key)
        except etcd.EtcdKeyNotFound:
            pass
        except ETCD_ERRORS as e:
            logger.info(
                "Could not delete keep-alive key %s (%s); it expires on its own.", lease.key, e
            )

    # -- helpers -----------------------------------------------------------------------

    def _create_layout(self) -> None:
        if self.paths.prefix != "/":
            self._create_dir(self.paths.prefix)
        self._create_dir(self.paths.run_dir, ttl=protocol.RUN_DIR_TTL)
        self._create_dir(self.paths.rdzv_dir)
        with contextlib.suppress(etcd.EtcdAlreadyExist):
            self.client.write(self.paths.version_counter, "0", prevExist=False)

    def _create_dir(self, path: str, ttl: int | None = None) -> None:
        with contextlib.suppress(etcd.EtcdAlreadyExist):
            self.client.write(path, None, ttl=ttl, dir=True, prevExist=False)

    def _next_version(self) -> str:
        try:
            counter = self.client.get(self.paths.version_counter)
        except etcd.EtcdKeyNotFound:
            # The run directory expired (etcd 3.5 cannot renew its TTL, so a job
            # that outlives it loses it): lay the run out again. torch's nodes
            # give up here ("worker needs to die").
            self._create_layout()
            counter = self.client.get(self.paths.version_counter)
        value = counter.value or ""
        if not value.isdigit():
            raise RendezvousStateError(
                f"The round counter {self.paths.version_counter} holds {value[:40]!r}, not a "
                "number. Delete the key (or give this job another etcd_prefix or run id) and "
                "restart the nodes."
            )
        version = str(int(value) + 1)
        # Only the node holding the setup placeholder counts up; the index check
        # catches the one case where two do (the placeholder expired meanwhile).
        self.client.write(self.paths.version_counter, version, prevIndex=counter.modifiedIndex)
        return version

    def _swap(
        self, current: etcd.EtcdResult, state: LegacyState, ttl: int | None = None
    ) -> etcd.EtcdResult:
        """Compare-and-swap ``active_version`` from the text of ``current`` to ``state``.

        ``ttl=None`` makes the key permanent (etcd drops the TTL on a write without one).
        """
        return self.client.test_and_set(
            self.paths.active_version,
            protocol.encode_state(state),
            current.value or "",
            ttl=ttl,
        )

    def _decode(self, result: etcd.EtcdResult) -> LegacyState:
        return protocol.decode_state(
            result.value, f"{self.paths.active_version} at {self._endpoint}"
        )

    def _wait_while(
        self,
        status: protocol.Status,
        goal: protocol.Status,
        version: str,
        seen: _Seen | None = None,
    ) -> etcd.EtcdResult:
        active_version, state = seen or self.get_rdzv_state()
        while True:
            if state.is_phase(goal, version):
                return active_version
            if not state.is_phase(status, version):
                raise EtcdRendezvousRetryableFailure(
                    f"Round {version} left the {status} state without becoming {goal}."
                )
            active_version, state = self.try_wait_for_state_change(active_version.etcd_index + 1)

    def _missing_keep_alives(self, version: str, state: LegacyState) -> list[str]:
        try:
            listing = self.client.get(self.paths.round_dir(version))
            alive = {child.key for child in listing.children}
        except etcd.EtcdKeyNotFound:
            alive = set()
        return [key for key in state.keep_alives or () if key not in alive]

    def _watch(
        self, key: str, index: int, *, timeout: float | None = None, recursive: bool = False
    ) -> None:
        """Wait for an event on ``key`` from ``index``, up to ``timeout`` and the deadline."""
        remaining = self._deadline - time.monotonic()
        wait = remaining if timeout is None else min(timeout, remaining)
        if wait <= 0:
            return
        # A watch from an index etcd no longer remembers fails at once; the
        # caller re-reads, which is all the watch was for.
        with contextlib.suppress(etcd.EtcdWatchTimedOut, etcd.EtcdEventIndexCleared):
            self.client.watch(key, index=index, timeout=wait, recursive=recursive)

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise self._timeout_error()

    def _pause_before_retry(self) -> None:
        _pause(min(_RETRY_DELAY, max(self._deadline - time.monotonic(), 0.0)))

    def _after_lost_swap(self, attempt: int) -> None:
        self._check_deadline()
        _backoff(attempt)

    def _timeout_error(self) -> RendezvousTimeoutError:
        state = self.current_state_quietly()
        seen = "no state" if state is None else protocol.encode_state(state)
        return RendezvousTimeoutError(
            f"The legacy etcd rendezvous '{self._run_id}' did not complete within "
            f"{timedelta(seconds=self._timeout)} (min_nodes={self._num_min_workers}, "
            f"max_nodes={self._num_max_workers}); last state seen: {seen}. Check that at least "
            "min_nodes nodes are started with the same run id, endpoint and etcd_prefix, or "
            "raise 'timeout'."
        )

    def current_state_quietly(self) -> LegacyState | None:
        """The current state for a message: ``None`` when it cannot be read for any reason."""
        try:
            return self.get_rdzv_state()[1]
        except _UNREADABLE:
            return None

    def _closed_error(self) -> RendezvousClosedError:
        return RendezvousClosedError(
            f"The legacy etcd rendezvous '{self._run_id}' is closed: a node called set_closed() "
            "or shut down, so the job is finishing. Start a new job with another run id to "
            "rendezvous again."
        )

    @staticmethod
    def _extra_data(text: str | None, node: str) -> dict[str, Any]:
        try:
            data = json.loads(text or "")
        except ValueError as e:
            raise RendezvousStateError(
                f"The extra data at {node} is not JSON ({e}). Delete the key and store the "
                "data again."
            ) from e
        if not isinstance(data, dict):
            raise RendezvousStateError(
                f"The extra data at {node} is not a JSON object. Delete the key and store the "
                "data again."
            )
        return data

    @property
    def _endpoint(self) -> str:
        return str(self.client.base_uri)

    @contextlib.contextmanager
    def _etcd_errors(self) -> Iterator[None]:
        """Turn what etcd raises (other than the races handled in place) into rdzv's errors."""
        try:
            yield
        except ETCD_ERRORS as e:
            raise connection_error(self._endpoint, e) from e


def _version(state: LegacyState) -> str:
    if state.version is None:
        raise RendezvousStateError(
            f"The rendezvous state {protocol.encode_state(state)} has no version."
        )
    return state.version
