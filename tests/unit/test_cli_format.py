"""The pure parts of the command line: the status report and its text, the demo plan, options."""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta

import pytest

from rdzv.cli import build_parser
from rdzv.cli._common import CommandError, ExitStatus, port_number, positive_float, run_id
from rdzv.cli.demo import DemoPlan
from rdzv.cli.status import FORMAT_VERSION, Reading, describe, describe_state, format_text
from rdzv.core import NodeDesc, RendezvousSettings, RendezvousState
from rdzv.core.intents import JoinIntent

NOW = 1_000_000.0
SETTINGS = RendezvousSettings(
    run_id="job", min_nodes=1, max_nodes=1, keep_alive_interval=timedelta(seconds=5)
)  # dead after 15 s
A, B, C = NodeDesc("a", 1, 0), NodeDesc("b", 2, 0), NodeDesc("c", 3, 0)
W, R = NodeDesc("w", 4, 0), NodeDesc("r", 5, 0)


def complete_round(**beats: float) -> RendezvousState:
    heartbeats = {A: NOW - 1, B: NOW - 2, C: NOW - 3}
    heartbeats.update({n: NOW - beats[str(n.addr)] for n in (A, B, C) if n.addr in beats})
    return RendezvousState(
        round=2,
        complete=True,
        participants={A: 2, B: 0, C: 1},
        world_size=3,
        last_heartbeats=heartbeats,
    )


def document(reading: Reading) -> dict[str, object]:
    return describe(
        reading, SETTINGS, NOW, backend="c10d", endpoint="h:1", where="c10d store at h:1"
    )


def test_participants_of_a_complete_round_are_listed_by_rank_with_heartbeat_ages() -> None:
    state = describe_state(complete_round(), SETTINGS, NOW)
    assert [(p["node"], p["rank"], p["heartbeat_age"]) for p in state["participants"]] == [
        ("b_2_0", 0, 2.0),
        ("c_3_0", 1, 3.0),
        ("a_1_0", 2, 1.0),
    ]
    assert state["round"] == 2
    assert state["complete"] is True
    assert state["world_size"] == 3
    assert state["dead_nodes"] == []
    assert state["num_nodes_waiting"] == 0


def test_a_participant_past_the_expiry_is_dead_and_counted_in_num_nodes_waiting() -> None:
    state = describe_state(complete_round(c=15.5), SETTINGS, NOW)
    assert state["dead_nodes"] == ["c_3_0"]
    assert [p["dead"] for p in state["participants"]] == [False, True, False]
    # rdzv counts the lost participant: the survivors will start a new round.
    assert state["num_nodes_waiting"] == 1


def test_a_heartbeat_exactly_at_the_expiry_is_not_dead_yet() -> None:
    state = describe_state(complete_round(c=15.0), SETTINGS, NOW)
    assert state["dead_nodes"] == []


def test_a_forming_round_has_no_ranks_and_shows_its_last_call() -> None:
    forming = RendezvousState(
        round=0,
        deadline=NOW + 2.5,
        participants={A: 0, B: 0},
        last_heartbeats={A: NOW, B: NOW},
    )
    state = describe_state(forming, SETTINGS, NOW)
    assert [p["rank"] for p in state["participants"]] == [None, None]
    assert state["last_call_deadline"] == NOW + 2.5
    assert state["last_call_remaining"] == 2.5
    lines = format_text(document(Reading(forming)))
    assert "round 0: forming, 2 participant(s) so far; open" in lines
    assert "last call: ends in 2.5 s" in lines


def test_wait_and_redundancy_lists_are_listed_and_the_wait_list_counts_as_waiting() -> None:
    state = RendezvousState(
        round=1,
        complete=True,
        participants={A: 0},
        world_size=1,
        wait_list={W},
        redundancy_list={R},
        last_heartbeats={A: NOW, W: NOW - 4, R: NOW - 20},
    )
    described = describe_state(state, SETTINGS, NOW)
    assert [n["node"] for n in described["wait_list"]] == ["w_4_0"]
    assert [(n["node"], n["dead"]) for n in described["redundancy_list"]] == [("r_5_0", True)]
    assert described["num_nodes_waiting"] == 1
    text = "\n".join(format_text(document(Reading(state))))
    assert "wait list (1):" in text
    assert "redundancy list (1):" in text
    assert "r_5_0  20.0 s ago  DEAD" in text


def test_pending_joins_are_shown_with_their_age_even_without_a_state() -> None:
    fresh = JoinIntent(NodeDesc("a", 1, 0), NOW - 2)
    stale = JoinIntent(NodeDesc("b", 2, 0), NOW - 100)
    doc = document(Reading(None, pending=(fresh, stale)))
    assert [p["node"] for p in doc["pending_joins"]] == ["a_1_0", "b_2_0"]
    assert [p["expired"] for p in doc["pending_joins"]] == [False, True]
    text = "\n".join(format_text(doc))
    assert "no state yet" in text
    assert "pending joins (2)" in text
    assert "a_1_0  posted 2.0 s ago" in text
    assert "b_2_0  posted 100.0 s ago (expired)" in text


def test_the_document_has_the_documented_shape_and_is_json() -> None:
    doc = document(Reading(complete_round()))
    assert set(doc) == {
        "format",
        "run_id",
        "backend",
        "endpoint",
        "where",
        "time",
        "keep_alive",
        "result",
        "error",
        "state",
        "pending_joins",
    }
    assert doc["format"] == FORMAT_VERSION
    assert doc["result"] == "ok"
    assert doc["keep_alive"] == {"interval": 5.0, "max_attempt": 3, "dead_after": 15.0}
    state = doc["state"]
    assert isinstance(state, dict)
    assert set(state) == {
        "round",
        "complete",
        "closed",
        "world_size",
        "last_call_deadline",
        "last_call_remaining",
        "participants",
        "wait_list",
        "redundancy_list",
        "dead_nodes",
        "num_nodes_waiting",
    }
    assert set(state["participants"][0]) == {
        "node",
        "addr",
        "pid",
        "local_id",
        "rank",
        "last_heartbeat",
        "heartbeat_age",
        "dead",
    }
    assert json.loads(json.dumps(doc)) == doc


def test_text_of_a_complete_round_names_ranks_heartbeats_and_the_dead() -> None:
    lines = format_text(document(Reading(complete_round(c=30))))
    assert lines[0] == "rendezvous 'job' (c10d store at h:1)"
    assert lines[1] == "round 2: complete, world size 3; open"
    assert lines[2] == "last call: none (the round is complete)"
    assert lines[3] == "participants (3):"
    assert lines[5].split() == ["0", "b_2_0", "2.0", "s", "ago"]
    assert lines[6].split() == ["1", "c_3_0", "30.0", "s", "ago", "DEAD"]
    assert "dead nodes (1): c_3_0 (no heartbeat for more than 15 s = 5 s x 3)" in lines
    assert "num_nodes_waiting: 1 (the nodes will start a new round)" in lines


def test_a_closed_rendezvous_says_so() -> None:
    lines = format_text(document(Reading(RendezvousState(closed=True))))
    assert "CLOSED" in lines[1]
    assert "participants: none" in lines


def test_no_state_and_a_corrupt_state_are_readings_with_their_reason() -> None:
    absent = document(Reading(None))
    assert (absent["result"], absent["state"], absent["error"]) == ("no_state", None, None)
    assert "no state" in format_text(absent)[1]
    corrupt = document(Reading(None, "it is a Python pickle"))
    assert (corrupt["result"], corrupt["state"]) == ("corrupt", None)
    assert format_text(corrupt)[1] == "the state does not decode: it is a Python pickle"


def test_a_heartbeat_from_a_clock_ahead_is_shown_as_such() -> None:
    state = RendezvousState(participants={A: 0}, last_heartbeats={A: NOW + 2})
    text = "\n".join(format_text(document(Reading(state))))
    assert "2.0 s in the future (the clocks differ)" in text


# -- the demo's plan ------------------------------------------------------------


def test_by_default_the_last_node_arrives_late() -> None:
    plan = DemoPlan(4, 0, None, None)
    assert (plan.min_nodes, plan.max_nodes, plan.late) == (3, 4, True)
    assert plan.first_round == [0, 1, 2]


def test_with_kill_every_node_starts_and_the_last_ones_die() -> None:
    plan = DemoPlan(4, 2, None, None)
    assert (plan.min_nodes, plan.late, plan.first_round, plan.victims) == (
        2,
        False,
        [0, 1, 2, 3],
        [2, 3],
    )


@pytest.mark.parametrize(
    ("nodes", "kill", "min_nodes", "max_nodes", "message"),
    [
        (3, 3, None, None, "would leave no node"),
        (3, 0, None, 2, "--max 2 is below --nodes 3"),
        (3, 0, 4, 5, "--min 4 is above --nodes 3"),
        (3, 0, 3, 2, "--max 2 is below --nodes 3"),
        (2, 0, 3, None, "--min 3 must not exceed --max 2"),
        (4, 2, 3, None, "leaves 2 node(s), fewer than --min 3"),
    ],
)
def test_impossible_demos_are_usage_errors(
    nodes: int, kill: int, min_nodes: int | None, max_nodes: int | None, message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)) as caught:
        DemoPlan(nodes, kill, min_nodes, max_nodes)
    assert caught.value.status == ExitStatus.USAGE


# -- option types and the parser ------------------------------------------------


@pytest.mark.parametrize("text", ["-1", "65536", "http", ""])
def test_bad_ports_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        port_number(text)


@pytest.mark.parametrize("text", ["", "a b", "tab\there", "nl\n"])
def test_run_ids_with_whitespace_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        run_id(text)


@pytest.mark.parametrize("text", ["0", "-2", "nan", "inf", "x"])
def test_durations_must_be_positive_finite_numbers(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_float(text)


def test_watch_without_a_value_refreshes_heartbeats_every_keep_alive_interval() -> None:
    """0 stands for "the keep-alive interval" (the watcher's default refresh)."""
    common = ["status", "--backend", "c10d", "--endpoint", "h", "--run-id", "j"]
    assert build_parser().parse_args([*common, "--watch"]).watch == 0.0
    assert build_parser().parse_args([*common, "--watch", "0.5"]).watch == 0.5
    assert build_parser().parse_args(common).watch is None


def test_verbose_is_accepted_before_and_after_the_command() -> None:
    assert build_parser().parse_args(["-v", "demo"]).verbose is True
    assert build_parser().parse_args(["demo", "-v"]).verbose is True
    assert build_parser().parse_args(["demo"]).verbose is False
