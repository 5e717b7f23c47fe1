"""What the simulator prints of a run: one line a step."""

from __future__ import annotations

from rdzv.core import RendezvousState
from rdzv.core.effects import (
    CompareAndSet,
    Effect,
    Fail,
    Finish,
    Outcome,
    Post,
    ReadBeats,
    ReadLog,
    ReadState,
    Sleep,
    Unreachable,
    WaitForChange,
    WriteBeat,
    Written,
)
from rdzv.sim.job import EPOCH

__all__ = ["describe"]


def describe(effect: Effect, outcome: Outcome) -> str:
    """One line: what came back, then what the node does next."""
    return f"{_outcome(outcome):<34} -> {_effect(effect)}"


def _state(state: RendezvousState) -> str:
    flags = ("complete " if state.complete else "") + ("CLOSED " if state.closed else "")
    return (
        f"r{state.round} {flags}p={len(state.participants)} w={len(state.wait_list)} "
        f"red={len(state.redundancy_list)} cur={state.intent_cursor}"
    )


def _effect(effect: Effect) -> str:
    if isinstance(effect, CompareAndSet):
        return f"CAS@{effect.token} [{_state(effect.state)}]"
    if isinstance(effect, Post):
        return f"POST {type(effect.record).__name__} @{effect.cursor}"
    if isinstance(effect, ReadLog):
        return f"READ LOG @{effect.cursor}"
    if isinstance(effect, WaitForChange):
        return f"WAIT @{effect.token} until {effect.until - EPOCH:.3f}"
    if isinstance(effect, Sleep):
        return f"SLEEP until {effect.until - EPOCH:.3f}"
    if isinstance(effect, WriteBeat):
        return "BEAT"
    if isinstance(effect, ReadBeats):
        return f"READ BEATS {len(effect.nodes)}"
    if isinstance(effect, ReadState):
        return "READ"
    if isinstance(effect, Finish):
        return f"FINISH [{_state(effect.state)}]"
    if isinstance(effect, Fail):
        return f"FAIL {effect.failure.name}"
    return type(effect).__name__


def _outcome(outcome: Outcome) -> str:
    snapshot = getattr(outcome, "snapshot", None)
    name = type(outcome).__name__
    if isinstance(outcome, Written):
        return f"{'written' if outcome.written else 'LOST'} @{getattr(snapshot, 'token', None)}"
    if snapshot is not None:
        return f"{name} @{snapshot.token} [{_state(snapshot.state)}]"
    if isinstance(outcome, Unreachable):
        return f"UNREACHABLE ({outcome.message})"
    return name
