"""The legacy etcd protocol's documents, paths and transitions, checked against torch's bytes.

The expected strings are what torch 2.13's ``etcd_rendezvous`` writes
(``json.dumps`` of its dicts, which keep insertion order).
"""

from __future__ import annotations

import pytest

from rdzv import RendezvousStateError
from rdzv.legacy import protocol
from rdzv.legacy.lease import MAX_RETRY_DELAY, _retry_delay
from rdzv.legacy.protocol import LegacyPaths, LegacyState, decode_state, encode_state

KEY0 = "/torchelastic/p2p/run_job/rdzv/v_3/rank_0"
KEY1 = "/torchelastic/p2p/run_job/rdzv/v_3/rank_1"


def test_paths_are_spelled_as_torch_spells_them() -> None:
    paths = LegacyPaths("/torchelastic/p2p", "job")
    assert paths.run_dir == "/torchelastic/p2p/run_job/"
    assert paths.rdzv_dir == "/torchelastic/p2p/run_job/rdzv"
    assert paths.active_version == "/torchelastic/p2p/run_job/rdzv/active_version"
    assert paths.version_counter == "/torchelastic/p2p/run_job/rdzv/version_counter"
    assert paths.round_dir("3") == "/torchelastic/p2p/run_job/rdzv/v_3"
    assert paths.rank_key("3", 0) == KEY0
    assert paths.extra_data("3") == "/torchelastic/p2p/run_job/rdzv/v_3/extra_data"
    assert paths.kv_dir("3") == "/torchelastic/p2p/run_job/rdzv/v_3/kv"
    assert LegacyPaths("/torchelastic/p2p/", "job") == paths
    assert LegacyPaths("/", "job").active_version == "/run_job/rdzv/active_version"


@pytest.mark.parametrize("prefix", ["torchelastic", "/a//b", "a/"])
def test_a_prefix_that_etcd_would_respell_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="etcd_prefix"):
        LegacyPaths(prefix, "job")


def test_a_round_goes_setup_joinable_frozen_final_in_torchs_bytes() -> None:
    assert encode_state(protocol.SETUP) == '{"status": "setup"}'
    state = protocol.joinable("3")
    assert encode_state(state) == '{"status": "joinable", "version": "3", "participants": []}'
    state, rank, ttl = protocol.add_participant(state, min_nodes=2, max_nodes=3)
    assert (rank, ttl) == (0, None)
    state, rank, ttl = protocol.add_participant(state, min_nodes=2, max_nodes=3)
    assert (rank, ttl) == (1, protocol.JOINABLE_TTL)
    assert encode_state(state) == '{"status": "joinable", "version": "3", "participants": [0, 1]}'
    state = protocol.freeze(state)
    assert encode_state(state) == (
        '{"status": "frozen", "version": "3", "participants": [0, 1], "keep_alives": []}'
    )
    state = protocol.add_keep_alive(state, KEY1)
    assert state.status == "frozen"
    state = protocol.add_keep_alive(state, KEY0)
    assert encode_state(state) == (
        '{"status": "final", "version": "3", "participants": [0, 1], '
        f'"keep_alives": ["{KEY1}", "{KEY0}"], "num_workers_waiting": 0}}'
    )
    state = protocol.add_waiting(state)
    assert state.num_workers_waiting == 1
    closed = protocol.close(state)
    assert encode_state(closed) == encode_state(state).replace('"final"', '"closed"')


def test_the_last_participant_freezes_the_round_with_the_frozen_ttl() -> None:
    state, rank, ttl = protocol.add_participant(protocol.joinable("1"), 1, 1)
    assert (rank, ttl) == (0, protocol.FROZEN_TTL)
    assert state == LegacyState("frozen", "1", (0,), ())


def test_closing_without_a_state_writes_a_bare_closed_state() -> None:
    assert encode_state(protocol.close(None)) == '{"status": "closed"}'


def test_joining_a_full_or_frozen_round_is_a_state_error() -> None:
    full = LegacyState("joinable", "1", (0, 1))
    with pytest.raises(RendezvousStateError, match="max_nodes"):
        protocol.add_participant(full, 1, 2)
    with pytest.raises(RendezvousStateError):
        protocol.add_participant(protocol.freeze(full), 1, 3)


@pytest.mark.parametrize(
    "text",
    [
        '{"status": "setup"}',
        '{"status": "joinable", "version": "12", "participants": [0, 1, 2]}',
        '{"status": "frozen", "version": "1", "participants": [0], "keep_alives": []}',
        '{"status": "final", "version": "1", "participants": [0], '
        f'"keep_alives": ["{KEY0}"], "num_workers_waiting": 4}}',
        '{"status": "closed"}',
        '{"status": "closed", "version": "2", "participants": []}',
    ],
)
def test_every_document_torch_writes_decodes_and_encodes_back_to_the_same_bytes(
    text: str,
) -> None:
    assert encode_state(decode_state(text, "key")) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "holds no value"),
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"status": "open"}', "status 'open'"),
        ('{"status": "setup", "extra": 1}', "unknown fields"),
        ('{"status": "joinable", "version": "1"}', "exactly the fields"),
        ('{"status": "joinable", "version": 1, "participants": []}', "'version'"),
        ('{"status": "joinable", "version": "1", "participants": [true]}', "'participants'"),
        ('{"status": "joinable", "version": "1", "participants": [-1]}', "'participants'"),
        ('{"status": "joinable", "version": "1", "participants": {}}', "'participants'"),
        (
            '{"status": "frozen", "version": "1", "participants": [0], "keep_alives": [3]}',
            "'keep_alives'",
        ),
        (
            '{"status": "final", "version": "1", "participants": [0], "keep_alives": [], '
            '"num_workers_waiting": "2"}',
            "'num_workers_waiting'",
        ),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_an_undecodable_document_is_a_state_error_saying_why(
    text: str | None, problem: str
) -> None:
    with pytest.raises(RendezvousStateError, match="the/key") as raised:
        decode_state(text, "the/key")
    assert problem in str(raised.value)


def test_retry_delays_grow_then_stay_under_the_cap() -> None:
    delays = [_retry_delay(failures, interval=5) for failures in range(1, 2000)]
    assert all(0 < d <= MAX_RETRY_DELAY for d in delays)
    assert max(delays[:1]) <= 0.25
    assert min(delays[10:]) >= MAX_RETRY_DELAY / 2
    assert all(d <= 0.5 for d in (_retry_delay(n, interval=0.5) for n in range(1, 50)))
