"""Random interleavings of four nodes over the pure core, with invariants after each step.

The machine plays the shell. Each node runs operations one step at a time:
``next_rendezvous`` (an exit then a join under one deadline, as in torch), a join
alone, an exit or a close, and beside them a keep-alive. A step drops the dead nodes
from the shared state, asks the decision function what to do, and applies the action
when it writes. When time passes, the keep-alive timers of the running nodes fire
when a heartbeat is due; a crashed node stops stepping and beating until it starts an
operation again. Time moves in quarter seconds so that every sum of times is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from rdzv.core import (
    Action,
    NodeDesc,
    RendezvousSettings,
    RendezvousState,
    RendezvousTimeout,
    apply_action,
    deadline_after,
    decide_close,
    decide_exit,
    decide_join,
    decide_keep_alive,
    decide_rejoin,
    decode_state,
    drop_dead_nodes,
    encode_state,
    next_wakeup,
    should_keep_alive,
)
from rdzv.core.intents import JoinIntent, admit

SETTINGS = RendezvousSettings(
    "stateful",
    min_nodes=2,
    max_nodes=3,
    timeout=RendezvousTimeout(join=30, last_call=3, close=10, heartbeat=5),
    keep_alive_interval=timedelta(seconds=1),
    keep_alive_max_attempt=2,
)
LAST_CALL = SETTINGS.timeout.last_call.total_seconds()
# Pids fall as names rise: ranks must follow the whole (addr, pid, local_id) order.
NODES = tuple(NodeDesc(f"node-{i}.cluster.example.com", 40_000 - i, 0) for i in range(4))
START = 1_000.0

DECIDE = {
    "join": decide_join,
    "exit": decide_exit,
    "close": decide_close,
    "keep_alive": decide_keep_alive,
}
OPERATIONS = {
    # name: (steps, timeout)
    "next_rendezvous": (("rejoin",), SETTINGS.timeout.join),
    "exit_then_join": (("exit", "join"), SETTINGS.timeout.join),
    "join": (("join",), SETTINGS.timeout.join),
    "exit": (("exit",), SETTINGS.timeout.join),
    "close": (("close",), SETTINGS.timeout.close),
}
# What an idle node does next. A crashed node takes no step and sends no heartbeat
# until it starts an operation again. Closing ends the interesting part of a run: rare.
NEXT_MOVES = (
    ("next_rendezvous",) * 24
    + ("exit_then_join",) * 6
    + ("join",) * 6
    + ("exit",) * 6
    + ("crash",) * 6
    + ("close",)
)


@dataclass
class Operation:
    steps: list[str]
    deadline: float


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.state = RendezvousState()
        self.operations: dict[NodeDesc, Operation] = {}
        self.keep_alive_deadlines: dict[NodeDesc, float] = {}
        self.crashed: set[NodeDesc] = set()
        self.highest_round = 0
        self.was_closed = False
        # round -> node -> (rank, world size), as next_rendezvous would return them
        self.results: dict[int, dict[NodeDesc, tuple[int, int]]] = {}
        # node -> the round its last join returned, which its next_rendezvous leaves
        self.joined: dict[NodeDesc, int] = {}

    def decide(self, kind: str, state: RendezvousState, node: NodeDesc, deadline: float) -> Action:
        if kind == "rejoin":
            leaving = self.joined.get(node)
            return decide_rejoin(state, node, SETTINGS, self.now, deadline, leaving)
        return DECIDE[kind](state, node, SETTINGS, self.now, deadline)

    # --- rules ------------------------------------------------------------------------------

    @initialize(nodes=st.sets(st.sampled_from(NODES), min_size=2))
    def start_nodes(self, nodes: set[NodeDesc]) -> None:
        for node in sorted(nodes):
            self.begin(node, "next_rendezvous")

    @rule(data=st.data(), move=st.sampled_from(NEXT_MOVES))
    def start(self, data: st.DataObject, move: str) -> None:
        """An idle node starts an operation or crashes; when none is idle, a busy one does.

        A crashed node that starts an operation is a node that came back.
        """
        idle = [node for node in NODES if node not in self.operations]
        self.begin(data.draw(st.sampled_from(idle or NODES), label="node"), move)

    def begin(self, node: NodeDesc, move: str) -> None:
        if move == "crash":
            self.crashed.add(node)
            self.operations.pop(node, None)
            self.keep_alive_deadlines.pop(node, None)
            return
        self.crashed.discard(node)
        steps, timeout = OPERATIONS[move]
        self.operations[node] = Operation(list(steps), self.now + timeout.total_seconds())

    def step_operation(self, data: st.DataObject) -> None:
        """One step of the operation of a node that has one."""
        node = data.draw(st.sampled_from(sorted(self.operations)), label="node")
        operation = self.operations[node]
        kind = operation.steps[0]
        action, operation.deadline = self.take_one_step(node, kind, operation.deadline)
        if action.ends_operation:
            operation.steps.pop(0)
            if action is not Action.FINISH or not operation.steps:
                del self.operations[node]

    # Registered three times: steps are what move a run forward.
    step = precondition(lambda self: self.operations)(rule(data=st.data())(step_operation))
    step_again = precondition(lambda self: self.operations)(rule(data=st.data())(step_operation))
    step_once_more = precondition(lambda self: self.operations)(
        rule(data=st.data())(step_operation)
    )

    def keep_alive_candidates(self) -> list[NodeDesc]:
        """Nodes whose keep-alive is under way, or whose timer fires: a heartbeat is due."""
        due = {
            node
            for node in self.state.last_heartbeats
            if node not in self.crashed and should_keep_alive(self.state, node, SETTINGS, self.now)
        }
        return sorted(due | set(self.keep_alive_deadlines))

    @precondition(lambda self: self.keep_alive_candidates())
    @rule(data=st.data())
    def keep_alive(self, data: st.DataObject) -> None:
        """One step of a node's keep-alive, interleaved with the other nodes' steps."""
        self.keep_alive_step(data.draw(st.sampled_from(self.keep_alive_candidates())))

    def keep_alive_step(self, node: NodeDesc) -> Action:
        if node not in self.keep_alive_deadlines:
            timeout = SETTINGS.timeout.heartbeat.total_seconds()
            self.keep_alive_deadlines[node] = self.now + timeout
        action, _ = self.take_one_step(node, "keep_alive", self.keep_alive_deadlines[node])
        if action.ends_operation:
            del self.keep_alive_deadlines[node]
        return action

    @rule(quarters=st.integers(min_value=0, max_value=20))
    def advance_time(self, quarters: int) -> None:
        """Up to 5 s pass; the keep-alive timers of the nodes still running fire when due."""
        for _ in range(quarters):
            self.now += 0.25
            for node in self.keep_alive_candidates():
                while not self.keep_alive_step(node).ends_operation:
                    pass

    # --- one step, as the shell takes it -----------------------------------------------------

    def take_one_step(self, node: NodeDesc, kind: str, deadline: float) -> tuple[Action, float]:
        state, dropped = drop_dead_nodes(self.state, SETTINGS, self.now)
        if dropped:
            self.check_transition(self.state, state)
        check_state(state)
        action = self.decide(kind, state, node, deadline)
        self.check_outcome(state, node, kind, deadline, action)
        if action.changes_state:
            new = apply_action(state, action, node, SETTINGS, self.now)
            self.check_transition(state, new)
            self.state = new
            if kind in ("join", "rejoin"):
                deadline = deadline_after(action, deadline, SETTINGS, self.now)
        elif action is Action.WAIT:
            self.check_wakeup(state, node, deadline)
            if dropped:
                self.state = state  # the shell writes the removal of the dead
        return action, deadline

    def check_transition(self, old: RendezvousState, new: RendezvousState) -> None:
        """What any single write may change."""
        if new.round != old.round:
            assert old.complete, "only a complete round that empties starts the next"
            assert new.round == old.round + 1
        assert new.complete or not old.complete or new.round != old.round
        if old.closed:
            assert new.closed
            assert new.members() <= old.members(), "a closed rendezvous admits no one"
        if new.round == old.round and not new.complete and new.deadline is not None:
            if old.deadline is None:
                # The last call starts when the round reaches min_nodes, not after.
                assert len(new.participants) == SETTINGS.min_nodes
                assert new.deadline == self.now + LAST_CALL
            else:
                assert new.deadline == old.deadline, "the last call never moves"
        if new.complete and not old.complete:
            completed_early = len(new.participants) == SETTINGS.max_nodes
            assert completed_early or (old.deadline is not None and old.deadline < self.now)
        if new.complete and old.complete and new.round == old.round:
            assert set(new.participants) <= set(old.participants)
            assert all(new.participants[n] == old.participants[n] for n in new.participants)
            assert new.world_size == old.world_size

    def check_outcome(
        self, state: RendezvousState, node: NodeDesc, kind: str, deadline: float, action: Action
    ) -> None:
        """What an operation may end with, given the state it saw."""
        if action is Action.WAIT:
            assert kind in ("join", "rejoin")
        elif action is Action.ERROR_TIMEOUT:
            assert self.now > deadline
        elif action is Action.ERROR_CLOSED:
            assert kind in ("join", "rejoin")
            assert state.closed
        elif action is Action.GRACEFUL_EXIT:
            assert state.closed
            assert node in state.redundancy_list
        elif action is Action.REJOIN:
            assert kind == "rejoin"
            assert state.complete and state.round == self.joined[node]
        elif action is Action.FINISH and kind in ("join", "rejoin"):
            assert state.complete
            result = (state.participants[node], state.world_size)
            others = self.results.setdefault(state.round, {})
            assert result[1] == others.get(node, result)[1]
            for other, (rank, world_size) in others.items():
                assert world_size == result[1], "everyone in a round sees one world size"
                assert other == node or rank != result[0], "ranks are unique in a round"
            others[node] = result
            self.joined[node] = state.round
        elif action is Action.FINISH and kind == "exit":
            assert node not in state.participants
        elif action is Action.FINISH and kind == "close":
            assert state.closed
        elif action is Action.FINISH:
            assert not should_keep_alive(state, node, SETTINGS, self.now)

    def check_wakeup(self, state: RendezvousState, node: NodeDesc, deadline: float) -> None:
        """Until ``next_wakeup``, time alone must not change the decision."""
        wake = next_wakeup(state, node, SETTINGS, self.now, deadline)
        assert wake >= self.now
        for t in (self.now + (wake - self.now) / 2, math.nextafter(wake, -math.inf)):
            if self.now < t < wake:
                later, _ = drop_dead_nodes(state, SETTINGS, t)
                assert decide_join(later, node, SETTINGS, t, deadline) is Action.WAIT, (t, wake)

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def state_is_consistent(self) -> None:
        check_state(self.state)
        assert all(beat <= self.now for beat in self.state.last_heartbeats.values())

    @invariant()
    def round_never_decreases(self) -> None:
        assert self.state.round >= self.highest_round
        self.highest_round = self.state.round

    @invariant()
    def closed_stays_closed(self) -> None:
        assert self.state.closed or not self.was_closed
        self.was_closed = self.state.closed

    @invariant()
    def state_survives_the_codec(self) -> None:
        assert decode_state(encode_state(self.state)) == self.state


def check_state(state: RendezvousState) -> None:
    participants = set(state.participants)
    assert not participants & state.wait_list
    assert not participants & state.redundancy_list
    assert not state.wait_list & state.redundancy_list
    assert set(state.last_heartbeats) == state.members()
    assert len(participants) <= SETTINGS.max_nodes
    ranks = list(state.participants.values())
    if state.complete:
        assert participants, "a complete round that lost everyone moves to the next round"
        assert SETTINGS.min_nodes <= state.world_size <= SETTINGS.max_nodes
        assert len(set(ranks)) == len(ranks)
        assert all(0 <= rank < state.world_size for rank in ranks)
        if len(participants) == state.world_size:
            assert sorted(ranks) == list(range(state.world_size))
        assert sorted(participants, key=state.participants.__getitem__) == sorted(participants)
        assert state.deadline is None
    else:
        assert state.world_size == 0
        assert all(rank == 0 for rank in ranks)
        # The last call starts when the round reaches min_nodes, and ends below it.
        assert (state.deadline is not None) == (len(participants) >= SETTINGS.min_nodes)


CoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=100, deadline=None)
TestCoreStateMachine = CoreMachine.TestCase


PLACEMENTS = (
    Action.ADD_TO_PARTICIPANTS,
    Action.ADD_TO_WAIT_LIST,
    Action.ADD_TO_REDUNDANCY_LIST,
    Action.REJOIN,
)


class IntentMachine(CoreMachine):
    """The same runs, with joins posted to an intent log and admitted in batches.

    This is the shell's path on the etcd-v2, c10d and memory backends: a node whose
    join would place it posts an intent, then admits every pending one in one write,
    so other nodes' earlier intents (even of nodes that crashed since) ride along.
    """

    def __init__(self) -> None:
        super().__init__()
        self.log: list[JoinIntent] = []
        self.batches: list[int] = []

    def take_one_step(self, node: NodeDesc, kind: str, deadline: float) -> tuple[Action, float]:
        """Posting and admitting are two steps, so that other nodes' steps come between."""
        state, dropped = drop_dead_nodes(self.state, SETTINGS, self.now)
        action = self.decide(kind, state, node, deadline)
        if action not in PLACEMENTS:
            return super().take_one_step(node, kind, deadline)
        pending = self.log[state.intent_cursor :]
        fresh = self.now - SETTINGS.heartbeat_expiry
        if not any(i.node == node and i.posted >= fresh for i in pending):
            leaves = state.round if action is Action.REJOIN else None
            self.log.append(JoinIntent(node, self.now, leaves))
            return Action.WAIT, deadline
        if dropped:
            self.check_transition(self.state, state)
        new = admit(state, pending, len(self.log), SETTINGS, self.now)
        assert node in new.members(), "a node's own admission places it"
        self.batches.append(len(new.members() - state.members()))
        self.check_transition(state, new)
        self.state = new
        return action, deadline

    def teardown(self) -> None:
        # Hypothesis runs many machines; the property below needs only one to batch.
        IntentMachine.largest_batch = max(IntentMachine.largest_batch, *self.batches, 0)

    largest_batch = 0


IntentMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=100, deadline=None)
TestIntentStateMachine = IntentMachine.TestCase


def test_intent_machine_admits_several_nodes_in_one_write() -> None:
    """The runs above do exercise batches, not only one node per write."""
    TestIntentStateMachine("runTest").runTest()
    assert IntentMachine.largest_batch >= 2
