"""Dead nodes and their removal, and how many nodes a running round is missing.

Settings: 2 to 3 nodes, a heartbeat every 5 s, dead after 3 missed ones (15 s).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

import attrs

from rdzv.core import (
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    dead_nodes,
    drop_dead_nodes,
    num_nodes_waiting,
)
from rdzv.core.liveness import confirmed_dead, watcher

SETTINGS = RendezvousSettings(
    "run", 2, 3, keep_alive_interval=timedelta(seconds=5), keep_alive_max_attempt=3
)
EXPIRY = 15.0
NOW = 1_000.0
ALIVE = NOW - 1
DEAD = NOW - EXPIRY - 0.001

A, B, C, D, E = (NodeDesc(f"node-{i}", 100 + i, 0) for i in range(5))


def make_state(
    *,
    participants: Iterable[NodeDesc] = (),
    waiting: Iterable[NodeDesc] = (),
    redundant: Iterable[NodeDesc] = (),
    complete: bool = False,
    deadline: float | None = None,
    dead: Iterable[NodeDesc] = (),
    world_size: int | None = None,
) -> RendezvousState:
    """Members beat at ``ALIVE``, except the ``dead`` ones, at ``DEAD``."""
    ordered = sorted(participants)
    members = [*ordered, *waiting, *redundant]
    heartbeats = dict.fromkeys(members, ALIVE)
    heartbeats.update(dict.fromkeys(dead, DEAD))
    return RendezvousState(
        round=5,
        complete=complete,
        deadline=deadline,
        participants={n: (r if complete else 0) for r, n in enumerate(ordered)},
        wait_list=frozenset(waiting),
        redundancy_list=frozenset(redundant),
        last_heartbeats=heartbeats,
        world_size=(len(ordered) if complete else 0) if world_size is None else world_size,
    )


# --- dead_nodes -----------------------------------------------------------------------------


def test_no_node_is_dead_while_heartbeats_are_fresh() -> None:
    state = make_state(participants=[A, B], waiting=[C], complete=True)
    assert dead_nodes(state, SETTINGS, NOW) == ()


def test_nodes_are_dead_once_their_heartbeat_is_older_than_the_expiry() -> None:
    state = make_state(participants=[A, B], waiting=[C], redundant=[D], dead=[D, B, C])
    assert dead_nodes(state, SETTINGS, NOW) == (B, C, D)


def test_a_node_is_still_alive_at_exactly_the_expiry() -> None:
    state = attrs.evolve(make_state(participants=[A]), last_heartbeats={A: NOW - EXPIRY})
    assert dead_nodes(state, SETTINGS, NOW) == ()
    assert dead_nodes(state, SETTINGS, NOW + 0.001) == (A,)


def test_dead_nodes_are_sorted() -> None:
    state = make_state(participants=[E, C, A], dead=[E, C, A])
    assert dead_nodes(state, SETTINGS, NOW) == (A, C, E)


def test_expiry_follows_interval_times_attempts() -> None:
    settings = RendezvousSettings(
        "run", 2, 3, keep_alive_interval=timedelta(seconds=1), keep_alive_max_attempt=2
    )
    state = attrs.evolve(make_state(participants=[A, B]), last_heartbeats={A: NOW - 2.5, B: NOW})
    assert dead_nodes(state, settings, NOW) == (A,)


def test_an_empty_state_has_no_dead_nodes() -> None:
    assert dead_nodes(RendezvousState(), SETTINGS, NOW) == ()


# --- drop_dead_nodes ------------------------------------------------------------------------


def test_drop_returns_the_very_same_state_when_nobody_is_dead() -> None:
    state = make_state(participants=[A, B], waiting=[C], complete=True)
    new, dropped = drop_dead_nodes(state, SETTINGS, NOW)
    assert new is state
    assert dropped == ()


def test_dead_participant_of_complete_round_tells_the_survivors_to_rendezvous_again() -> None:
    # pytorch issue 111646: torch counts only the wait list, so the survivors never learn.
    state = make_state(participants=[A, B, C], complete=True, dead=[B])
    new, dropped = drop_dead_nodes(state, SETTINGS, NOW)
    assert dropped == (B,)
    assert dict(new.participants) == {A: 0, C: 2}
    assert B not in new.last_heartbeats
    assert new.complete
    assert new.world_size == 3
    assert new.round == state.round
    assert num_nodes_waiting(new) == 1


def test_dead_participant_of_incomplete_round_below_min_nodes_clears_the_deadline() -> None:
    state = make_state(participants=[A, B], deadline=NOW + 20, dead=[A])
    new, dropped = drop_dead_nodes(state, SETTINGS, NOW)
    assert dropped == (A,)
    assert dict(new.participants) == {B: 0}
    assert new.deadline is None
    assert not new.complete
    assert new.round == state.round


def test_dead_participant_of_incomplete_round_still_at_min_nodes_keeps_the_deadline() -> None:
    state = make_state(participants=[A, B, C], deadline=NOW + 20, dead=[C])
    new, _ = drop_dead_nodes(state, SETTINGS, NOW)
    assert set(new.participants) == {A, B}
    assert new.deadline == NOW + 20


def test_last_participant_of_complete_round_dead_starts_the_next_round() -> None:
    state = make_state(participants=[A, B], waiting=[C], complete=True, dead=[A, B])
    new, dropped = drop_dead_nodes(state, SETTINGS, NOW)
    assert dropped == (A, B)
    assert new.round == state.round + 1
    assert not new.complete
    assert new.world_size == 0
    assert dict(new.participants) == {}
    assert new.wait_list == frozenset({C})
    assert dict(new.last_heartbeats) == {C: ALIVE}


def test_dead_waiting_and_redundant_nodes_are_dropped_without_touching_the_round() -> None:
    state = make_state(
        participants=[A, B], waiting=[C, D], redundant=[E], complete=True, dead=[C, E]
    )
    new, dropped = drop_dead_nodes(state, SETTINGS, NOW)
    assert dropped == (C, E)
    assert new == attrs.evolve(
        state,
        wait_list={D},
        redundancy_list=frozenset(),
        last_heartbeats={A: ALIVE, B: ALIVE, D: ALIVE},
    )


def test_dead_waiting_node_of_incomplete_round_keeps_the_deadline() -> None:
    state = make_state(participants=[A, B], waiting=[C], deadline=NOW + 20, dead=[C])
    new, _ = drop_dead_nodes(state, SETTINGS, NOW)
    assert new.deadline == NOW + 20
    assert new.wait_list == frozenset()


def test_drop_leaves_the_state_it_was_given_unchanged() -> None:
    state = make_state(participants=[A, B], waiting=[C], complete=True, dead=[A, C])
    copy = attrs.evolve(state)
    drop_dead_nodes(state, SETTINGS, NOW)
    assert state == copy
    assert set(state.participants) == {A, B}


def test_everyone_dead_empties_the_state() -> None:
    state = make_state(participants=[A], waiting=[B], redundant=[C], dead=[A, B, C])
    new, dropped = drop_dead_nodes(state, SETTINGS, NOW)
    assert dropped == (A, B, C)
    assert new.members() == frozenset()
    assert dict(new.last_heartbeats) == {}


# --- num_nodes_waiting ----------------------------------------------------------------------


def test_nobody_waits_in_an_empty_state() -> None:
    assert num_nodes_waiting(RendezvousState()) == 0


def test_nodes_waiting_counts_the_wait_list() -> None:
    state = make_state(participants=[A, B], waiting=[C, D], complete=True)
    assert num_nodes_waiting(state) == 2


def test_nodes_waiting_ignores_the_redundancy_list() -> None:
    state = make_state(participants=[A, B, C], redundant=[D, E], complete=True)
    assert num_nodes_waiting(state) == 0


def test_nodes_waiting_adds_participants_lost_by_a_complete_round() -> None:
    state = make_state(participants=[A], waiting=[C], complete=True, world_size=3)
    assert num_nodes_waiting(state) == 1 + 2


def test_nodes_waiting_counts_no_lost_participant_in_an_incomplete_round() -> None:
    state = make_state(participants=[A], waiting=[C])
    assert num_nodes_waiting(state) == 1


def test_nodes_waiting_is_never_negative_on_an_odd_world_size() -> None:
    state = make_state(participants=[A, B], complete=True, world_size=1)
    assert num_nodes_waiting(state) == 0


def test_a_node_dropped_from_the_round_it_joined_counts_itself() -> None:
    """Issue 15, bug 3: dropped while paused, it would otherwise poll 0 for ever."""
    went_on = make_state(participants=[A, B], complete=True)  # round 5, without C
    assert num_nodes_waiting(went_on, C, joined=5) == 1
    assert num_nodes_waiting(went_on, C, joined=4) == 1  # the round moved on too
    assert num_nodes_waiting(went_on, A, joined=5) == 0  # A is still in it
    assert num_nodes_waiting(went_on, A, joined=4) == 1  # A is in a later round
    assert num_nodes_waiting(went_on, C, joined=None) == 0  # C never joined: no round to lose


def test_a_node_that_already_waits_is_not_counted_twice() -> None:
    waiting = make_state(participants=[A, B], waiting=[C], complete=True)
    assert num_nodes_waiting(waiting, C, joined=4) == 1


def test_the_dead_nodes_are_found_from_the_oldest_heartbeats_and_newer_ones_seen() -> None:
    state = make_state(participants=[A, B, C], dead=[B, C])
    assert dead_nodes(state, SETTINGS, NOW) == (B, C)
    # A newer heartbeat of C, read from its record on the board, keeps it alive.
    assert dead_nodes(state, SETTINGS, NOW, observed={C: ALIVE}) == (B,)
    dropped, gone = drop_dead_nodes(state, SETTINGS, NOW, observed={C: ALIVE})
    assert gone == (B,)
    assert set(dropped.participants) == {A, C}


def test_a_reading_older_than_the_state_does_not_keep_a_node_alive_for_ever() -> None:
    """Found by the simulator (seed 11303 of a 3,000-seed hunt): a heartbeat read from
    the board before the node was admitted was older than the one the admission wrote,
    and the remembered answer of dead_nodes() then never expired, so a round completed
    with a node dead for longer than the expiry."""
    state = make_state(participants=[A, B], dead=[A])  # B beats at ALIVE = NOW - 1
    observed = {B: ALIVE - 100}  # an old reading, from before B was admitted
    assert dead_nodes(state, SETTINGS, NOW, observed=observed) == (A,)
    assert dead_nodes(state, SETTINGS, ALIVE + EXPIRY + 1, observed=observed) == (A, B)


def test_the_dead_nodes_of_a_state_are_remembered_until_the_next_expiry() -> None:
    state = make_state(participants=[A, B], dead=[C], waiting=[C])
    observed: dict[NodeDesc, float] = {}
    assert dead_nodes(state, SETTINGS, NOW, observed=observed) == (C,)
    later = NOW + 0.5  # nothing else can expire yet: the same answer, from the memo
    assert dead_nodes(state, SETTINGS, later, observed=observed) == (C,)
    assert dead_nodes(state, SETTINGS, ALIVE + EXPIRY + 0.01, observed=observed) == (A, B, C)
    # A newer reading (a new mapping) is taken into account at once.
    assert dead_nodes(state, SETTINGS, NOW, observed={C: ALIVE}) == ()


def test_a_node_is_known_dead_only_from_a_recent_reading_after_its_expiry() -> None:
    """Found by the simulator (seed 64): a node confirmed dead while it was paused stayed
    dead for a peer that never read its record again, though it beat again after."""
    interval = SETTINGS.keep_alive_interval.total_seconds()
    beat = NOW - EXPIRY - 1
    assert confirmed_dead(NOW, beat, NOW, SETTINGS)
    assert not confirmed_dead(None, beat, NOW, SETTINGS)  # never read
    assert not confirmed_dead(beat + EXPIRY - 1, beat, NOW, SETTINGS)  # read before it expired
    assert confirmed_dead(NOW, beat, NOW + interval, SETTINGS)  # an answer handled late
    assert not confirmed_dead(NOW, beat, NOW + EXPIRY, SETTINGS)  # read too long ago


def test_a_node_never_counts_itself_dead() -> None:
    settings = RendezvousSettings("run", 1, 3, keep_alive_interval=timedelta(seconds=1))
    me, other = NodeDesc("me", 1, 0), NodeDesc("other", 1, 0)
    state = RendezvousState(participants={me: 0, other: 0}, last_heartbeats={me: 0.0, other: 0.0})
    assert dead_nodes(state, settings, 100.0, spare=me) == (other,)
    survivor, dropped = drop_dead_nodes(state, settings, 100.0, spare=me)
    assert dropped == (other,)
    assert set(survivor.participants) == {me}


def test_the_watcher_is_read_first_and_a_chain_of_dead_members_in_growing_batches() -> None:
    """A node reads the first member that looks dead; while members before it are
    found dead, it reads as many more as it found (seed 30084: read one per decision,
    a chain's confirmations expired before it was through)."""
    state = make_state(participants=[A, B, C], waiting=[D, E], complete=True, dead=[A, B, C])
    assert watcher(state, E, SETTINGS, NOW) == (A, (), (A,))
    # A found dead: B and C next, together.
    assert watcher(state, E, SETTINGS, NOW, checked={A: NOW}) == (B, (A,), (B, C))
    # Once read and found dead, they are dropped, and the first live member watches.
    checked = dict.fromkeys((A, B, C), NOW)
    assert watcher(state, E, SETTINGS, NOW, checked=checked) == (D, (A, B, C), ())
    # A member alive by a newer reading ends the chain: it is the watcher.
    observed = {B: ALIVE}
    assert watcher(state, E, SETTINGS, NOW, observed=observed) == (A, (), (A,))
    assert watcher(state, E, SETTINGS, NOW, observed, checked) == (B, (A,), ())
    # A reading that found A dead has aged: A is read again, with one more.
    later = NOW + EXPIRY
    aged = {A: NOW, B: later}
    assert watcher(state, E, SETTINGS, later, {D: later}, aged) == (A, (B,), (A, C))


def test_a_long_chain_of_dead_members_is_through_at_two_reads_an_interval() -> None:
    """40 dead members before the first live one; a node reads what watcher() names
    twice an interval: it is through the chain in seven reads."""
    dead = [NodeDesc(f"d{i:02}", 1, 0) for i in range(40)]
    state = make_state(participants=dead, waiting=[D, E], complete=True, dead=dead)
    step = SETTINGS.keep_alive_interval.total_seconds() / 2
    checked: dict[NodeDesc, float] = {}
    now = NOW
    for _ in range(7):
        observed = {D: now - 1}  # D beats on
        checked.update(dict.fromkeys(watcher(state, E, SETTINGS, now, observed, checked)[2], now))
        found = watcher(state, E, SETTINGS, now, observed, checked)  # the decision after it
        if not found[2]:
            break
        now += step
    assert found == (D, tuple(dead), ())
