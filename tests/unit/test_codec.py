"""The state as bytes: round trips, determinism, and refusal of anything else.

Every value that is not a state this version wrote must raise
``RendezvousStateError`` (never another exception): an empty key, a cut or damaged
value, another program's data, a pickle, a compression bomb, a state that cannot be.
"""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import random
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rdzv.api import RendezvousStateError
from rdzv.core import NodeDesc, RendezvousState, decode_state, encode_state
from rdzv.core.codec import MAGIC, MAX_DECODED_SIZE, MAX_ENCODED_SIZE, SCHEMA_VERSION

A = NodeDesc("node-a.example.com", 4242, 0)
B = NodeDesc("node-b.example.com", 17, 1)
C = NodeDesc("node-c.example.com", 99999, 0)
D = NodeDesc("ноде-δ", 1, 2)  # not ASCII

T = 1_732_000_000.125


def frame_text(text: str) -> bytes:
    """Wrap JSON text as rdzv does: magic, then zlib."""
    return MAGIC + zlib.compress(text.encode("utf-8"))


def frame(document: Any) -> bytes:
    return frame_text(json.dumps(document))


def valid_document() -> dict[str, Any]:
    """A complete round of two, one waiting node and one redundant node, as JSON."""
    return {
        "version": SCHEMA_VERSION,
        "round": 4,
        "complete": True,
        "deadline": None,
        "closed": False,
        "world_size": 2,
        "participants": [["a", 1, 0, T, 0], ["b", 1, 0, T, 1]],
        "wait_list": [["c", 1, 0, T]],
        "redundancy_list": [["d", 1, 0, T]],
        "intent_cursor": 7,
    }


def with_fields(**changes: Any) -> bytes:
    document = valid_document()
    document.update(changes)
    return frame(document)


def assert_corrupt(data: bytes, *fragments: str) -> RendezvousStateError:
    with pytest.raises(RendezvousStateError) as info:
        decode_state(data)
    message = str(info.value)
    assert message.startswith("The rendezvous state is corrupt: ")
    for fragment in fragments:
        assert fragment in message, message
    return info.value


# --- round trips ----------------------------------------------------------------------------

STATES = {
    "empty": RendezvousState(),
    "first-joiner": RendezvousState(participants={A: 0}, last_heartbeats={A: T}),
    "last-call": RendezvousState(
        round=2,
        deadline=T + 30,
        participants={A: 0, B: 0},
        last_heartbeats={A: T, B: T + 0.5},
    ),
    "complete-with-lists": RendezvousState(
        round=7,
        complete=True,
        participants={A: 1, B: 0},
        wait_list={C},
        redundancy_list={D},
        last_heartbeats={A: T, B: T - 1, C: T + 2, D: T + 3},
        world_size=2,
    ),
    "complete-lost-a-participant": RendezvousState(
        round=1,
        complete=True,
        participants={A: 0, C: 2},
        last_heartbeats={A: T, C: T},
        world_size=3,
    ),
    "closed": RendezvousState(
        round=3,
        complete=True,
        closed=True,
        participants={B: 0},
        last_heartbeats={B: T},
        world_size=1,
    ),
    "next-round-with-waiters": RendezvousState(
        round=12, wait_list={A, B}, last_heartbeats={A: T, B: T}
    ),
    "odd-values": RendezvousState(
        round=2**62,
        participants={NodeDesc("", 0, 0): 0, NodeDesc('"\\ é{}', 2**40, 7): 0},
        last_heartbeats={NodeDesc("", 0, 0): 0.0, NodeDesc('"\\ é{}', 2**40, 7): -1e-300},
    ),
    "integer-heartbeat": RendezvousState(participants={A: 0}, last_heartbeats={A: 5}),
    "intent-cursor": RendezvousState(
        round=1, participants={A: 0}, last_heartbeats={A: T}, intent_cursor=12_345
    ),
}


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_a_state_survives_a_round_trip(state: RendezvousState) -> None:
    assert decode_state(encode_state(state)) == state


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_encoding_is_magic_then_zlib_compressed_json(state: RendezvousState) -> None:
    data = encode_state(state)
    assert data.startswith(b"RDZV")
    document = json.loads(zlib.decompress(data[4:]))
    assert document["version"] == SCHEMA_VERSION


def test_encoding_a_decoded_state_gives_the_same_bytes() -> None:
    for state in STATES.values():
        data = encode_state(state)
        assert encode_state(decode_state(data)) == data


def test_equal_states_encode_to_equal_bytes_whatever_the_insertion_order() -> None:
    one = RendezvousState(
        complete=True,
        participants={A: 0, B: 1, C: 2},
        wait_list=[D],  # type: ignore[arg-type]
        last_heartbeats={A: T, B: T, C: T, D: T},
        world_size=3,
    )
    two = RendezvousState(
        complete=True,
        participants={C: 2, A: 0, B: 1},
        wait_list={D},
        last_heartbeats={D: T, C: T, B: T, A: T},
        world_size=3,
    )
    assert one == two
    assert encode_state(one) == encode_state(two)


def test_states_equal_but_for_integer_times_encode_to_equal_bytes() -> None:
    as_ints = RendezvousState(deadline=1030, participants={A: 0}, last_heartbeats={A: 1000})
    as_floats = RendezvousState(deadline=1030.0, participants={A: 0}, last_heartbeats={A: 1000.0})
    assert as_ints == as_floats
    assert encode_state(as_ints) == encode_state(as_floats)


def test_different_states_encode_to_different_bytes() -> None:
    encodings = {encode_state(state) for state in STATES.values()}
    assert len(encodings) == len(STATES)


node_descs = st.builds(
    NodeDesc,
    addr=st.text(max_size=20).filter(str.isprintable),
    pid=st.integers(min_value=0, max_value=2**40),
    local_id=st.integers(min_value=0, max_value=1000),
)
finite_times = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def states(draw: st.DrawFn) -> RendezvousState:
    """Any state the codec must accept: valid ranks, no node twice, finite times."""
    members = draw(st.lists(node_descs, unique=True, max_size=12))
    roles = draw(st.lists(st.sampled_from("pwr"), min_size=len(members), max_size=len(members)))
    participants = [m for m, r in zip(members, roles, strict=True) if r == "p"]
    complete = draw(st.booleans())
    if complete:
        world_size = draw(st.integers(len(participants), len(participants) + 3))
        ranks = draw(st.permutations(range(world_size)))[: len(participants)]
    else:
        world_size = 0
        ranks = [0] * len(participants)
    return RendezvousState(
        round=draw(st.integers(min_value=0, max_value=2**63)),
        complete=complete,
        deadline=draw(st.none() | finite_times),
        closed=draw(st.booleans()),
        participants=dict(zip(participants, ranks, strict=True)),
        wait_list={m for m, r in zip(members, roles, strict=True) if r == "w"},
        redundancy_list={m for m, r in zip(members, roles, strict=True) if r == "r"},
        last_heartbeats={m: draw(finite_times) for m in members},
        world_size=world_size,
        intent_cursor=draw(st.integers(min_value=0, max_value=2**63)),
    )


@given(states(), st.randoms())
def test_any_valid_state_round_trips_to_equal_bytes(
    state: RendezvousState, rng: random.Random
) -> None:
    data = encode_state(state)
    assert decode_state(data) == state
    assert encode_state(decode_state(data)) == data
    shuffled_participants = list(state.participants.items())
    shuffled_heartbeats = list(state.last_heartbeats.items())
    rng.shuffle(shuffled_participants)
    rng.shuffle(shuffled_heartbeats)
    same = RendezvousState(
        round=state.round,
        complete=state.complete,
        deadline=state.deadline,
        closed=state.closed,
        participants=dict(shuffled_participants),
        wait_list=state.wait_list,
        redundancy_list=state.redundancy_list,
        last_heartbeats=dict(shuffled_heartbeats),
        world_size=state.world_size,
        intent_cursor=state.intent_cursor,
    )
    assert encode_state(same) == data


# --- size -----------------------------------------------------------------------------------


def realistic_state(count: int) -> RendezvousState:
    """A complete round of ``count`` nodes with cluster hostnames, 5-digit pids, ms heartbeats."""
    rng = random.Random(count)
    nodes = [
        NodeDesc(f"node-{i:04d}.cluster.example.com", rng.randint(10_000, 99_999), 0)
        for i in range(count)
    ]
    return RendezvousState(
        round=17,
        complete=True,
        participants={node: rank for rank, node in enumerate(sorted(nodes))},
        last_heartbeats={node: round(T + rng.uniform(0, 15), 3) for node in nodes},
        world_size=count,
    )


def test_encoded_size_stays_small_up_to_a_thousand_nodes() -> None:
    sizes = {count: len(encode_state(realistic_state(count))) for count in (10, 100, 1000)}
    print(f"encoded state size by node count: {sizes}")
    assert sizes[10] < sizes[100] < sizes[1000]
    assert sizes[1000] < 40 * 1024
    # The value sits base64-encoded under one etcd key; 1000 nodes stay far below etcd's
    # 1.5 MiB request limit and below the decoder's own limit.
    assert len(base64.b64encode(encode_state(realistic_state(1000)))) < MAX_ENCODED_SIZE


# --- values that are not rdzv's -------------------------------------------------------------


def test_an_empty_value_is_corrupt() -> None:
    assert_corrupt(b"", "the value is empty")


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
def test_a_value_cut_at_any_length_is_corrupt(state: RendezvousState) -> None:
    data = encode_state(state)
    for length in range(len(data)):
        assert_corrupt(data[:length])


def test_bytes_after_the_compressed_payload_are_corrupt() -> None:
    assert_corrupt(encode_state(STATES["last-call"]) + b"x", "bytes after the end")


def test_damaged_compressed_payload_is_corrupt() -> None:
    data = bytearray(encode_state(STATES["complete-with-lists"]))
    data[len(data) // 2] ^= 0xFF
    assert_corrupt(bytes(data))


def test_magic_then_bytes_that_are_not_zlib_is_corrupt() -> None:
    assert_corrupt(MAGIC + b"definitely not zlib", "the compressed payload is damaged")


@pytest.mark.parametrize(
    "data",
    [
        b"hello",
        b"{}",
        b'{"version": 1}',
        base64.b64encode(os.urandom(64)),
        base64.b64encode(encode_state(STATES["last-call"])),  # base64 decoded once too few
        bytes(range(256)),
        b"rdzv" + encode_state(RendezvousState())[4:],
    ],
    ids=["text", "json", "bare-json-state", "base64", "base64-of-state", "binary", "lower-magic"],
)
def test_a_value_without_rdzvs_magic_is_corrupt(data: bytes) -> None:
    assert_corrupt(data, "it does not start with b'RDZV'; it was not written by rdzv")


def test_random_bytes_after_the_magic_are_corrupt() -> None:
    rng = random.Random(7)
    for _ in range(200):
        assert_corrupt(MAGIC + rng.randbytes(rng.randrange(1, 300)))


def test_compressed_text_that_is_not_json_is_corrupt() -> None:
    assert_corrupt(frame_text("this is not json"), "the payload is not JSON")


def test_compressed_bytes_that_are_not_utf8_is_corrupt() -> None:
    assert_corrupt(MAGIC + zlib.compress(b'{"version": "\xff\xfe"}'), "the payload is not JSON")


def test_deeply_nested_json_is_corrupt() -> None:
    assert_corrupt(frame_text("[" * 200_000 + "]" * 200_000), "the payload is not JSON")


def test_an_integer_too_long_to_parse_is_corrupt() -> None:
    text = json.dumps(valid_document()).replace('"round": 4', '"round": ' + "9" * 5000)
    assert_corrupt(frame_text(text), "the payload is not JSON")


@pytest.mark.parametrize(
    ("document", "kind"),
    [([], "list"), ("state", "str"), (42, "int"), (None, "NoneType"), (True, "bool")],
)
def test_json_that_is_not_an_object_is_corrupt(document: Any, kind: str) -> None:
    assert_corrupt(frame(document), f"expected a JSON object, got {kind}")


@pytest.mark.parametrize(
    ("version", "shown"),
    [(2, "2"), (0, "0"), ("1", "'1'"), (None, "None"), ([1], "[1]")],
)
def test_another_schema_version_is_corrupt_and_named(version: Any, shown: str) -> None:
    assert_corrupt(
        with_fields(version=version),
        f"it has schema version {shown}, and this rdzv reads version 1",
        "run the same rdzv version on every node",
    )


def test_a_document_without_version_is_corrupt() -> None:
    document = valid_document()
    del document["version"]
    assert_corrupt(frame(document), "schema version None")


def test_an_empty_object_is_corrupt() -> None:
    assert_corrupt(frame({}), "schema version None")


@pytest.mark.parametrize("field", [f for f in valid_document() if f != "version"])
def test_a_missing_field_is_corrupt_and_named(field: str) -> None:
    document = valid_document()
    del document[field]
    assert_corrupt(frame(document), f"required field missing @ $.{field}")


def test_an_extra_field_is_corrupt_and_named() -> None:
    assert_corrupt(with_fields(owner="someone"), "extra fields found (owner)")


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("version", True, "$.version"),
        ("version", 1.0, "$.version"),
        ("round", "1", "$.round"),
        ("round", True, "$.round"),
        ("round", 1.5, "$.round"),
        ("round", None, "$.round"),
        ("complete", 1, "$.complete"),
        ("complete", "true", "$.complete"),
        ("closed", None, "$.closed"),
        ("deadline", "soon", "$.deadline"),
        ("deadline", True, "$.deadline"),
        ("deadline", [1.0], "$.deadline"),
        ("world_size", "2", "$.world_size"),
        ("world_size", True, "$.world_size"),
        ("world_size", 2.0, "$.world_size"),
        ("participants", {"a": 0}, "$.participants"),
        ("participants", "ab", "$.participants"),
        ("participants", None, "$.participants"),
        ("participants", [["a", "1", 0, T, 0]], "$.participants[0]"),
        ("participants", [["a", True, 0, T, 0]], "$.participants[0]"),
        ("participants", [["a", 1, 0.5, T, 0]], "$.participants[0]"),
        ("participants", [[1, 1, 0, T, 0]], "$.participants[0]"),
        ("participants", [["a", 1, 0, "now", 0]], "$.participants[0]"),
        ("participants", [["a", 1, 0, True, 0]], "$.participants[0]"),
        ("participants", [["a", 1, 0, T, "0"]], "$.participants[0]"),
        ("participants", [["a", 1, 0, T, False]], "$.participants[0]"),
        ("participants", [["a", 1, 0, T]], "$.participants[0]"),
        ("participants", [["a", 1, 0, T, 0, 0]], "$.participants[0]"),
        ("participants", [{"addr": "a"}], "$.participants[0]"),
        ("wait_list", [["c", 1, 0, T, 0]], "$.wait_list[0]"),
        ("wait_list", [["c", 1, 0]], "$.wait_list[0]"),
        ("wait_list", [None], "$.wait_list[0]"),
        ("wait_list", ["c"], "$.wait_list[0]"),
        ("redundancy_list", [["d", 1, True, T]], "$.redundancy_list[0]"),
        ("redundancy_list", 5, "$.redundancy_list"),
    ],
)
def test_a_field_of_the_wrong_type_is_corrupt_and_its_path_named(
    field: str, value: Any, path: str
) -> None:
    assert_corrupt(
        with_fields(**{field: value}), "the fields do not match schema version 1", f"@ {path}"
    )


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_a_heartbeat_that_is_not_a_finite_time_is_corrupt(word: str) -> None:
    text = json.dumps(valid_document()).replace(str(T), word, 1)
    assert word in text
    assert_corrupt(frame_text(text), "the heartbeat of node a_1_0 is not a finite time")


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_last_call_deadline_that_is_not_a_finite_time_is_corrupt(word: str) -> None:
    document = valid_document()
    document.update(complete=False, world_size=0)
    document["participants"] = [["a", 1, 0, T, 0]]
    text = json.dumps(document).replace('"deadline": null', f'"deadline": {word}')
    assert_corrupt(frame_text(text), "the last-call deadline is not a finite time")


@pytest.mark.parametrize(
    ("field", "value"), [("round", -1), ("world_size", -2), ("intent_cursor", -3)]
)
def test_a_negative_round_world_size_or_cursor_is_corrupt(field: str, value: int) -> None:
    assert_corrupt(with_fields(**{field: value}), "cannot be negative")


@pytest.mark.parametrize(
    "addr",
    ["evil\x1b]0;owned\x07", "a\nb", "a\rb", "a\x00", "tab\there", "a\u202eb", "a\x9bb"],
    ids=["osc", "newline", "return", "nul", "tab", "bidi-override", "c1-csi"],
)
@pytest.mark.parametrize("where", ["participants", "wait_list", "redundancy_list"])
def test_a_node_address_with_a_control_character_is_corrupt(addr: str, where: str) -> None:
    entry = [addr, 1, 0, T, 0] if where == "participants" else [addr, 1, 0, T]
    error = assert_corrupt(
        with_fields(**{where: [entry]}), "a node address holds a character that is not printable"
    )
    assert addr not in str(error)  # the message shows it escaped, never raw


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"participants": [["a", 1, 0, T, 0], ["a", 1, 0, T, 1]]}, "participants"),
        ({"wait_list": [["a", 1, 0, T]]}, "wait_list"),
        ({"redundancy_list": [["c", 1, 0, T]]}, "redundancy_list"),
        ({"wait_list": [["c", 1, 0, T], ["c", 1, 0, T + 1]]}, "wait_list"),
    ],
    ids=["two-participants", "participant-and-waiting", "waiting-and-redundant", "waiting-twice"],
)
def test_a_node_that_appears_twice_is_corrupt(changes: dict[str, Any], where: str) -> None:
    assert_corrupt(with_fields(**changes), "appears twice", f"(again in {where})")


@pytest.mark.parametrize(
    ("ranks", "world_size"),
    [((0, 0), 2), ((1, 1), 2), ((0, 2), 2), ((-1, 0), 2), ((0, 1), 1), ((0, 1), 0)],
)
def test_ranks_of_a_complete_round_must_be_distinct_and_below_world_size(
    ranks: tuple[int, int], world_size: int
) -> None:
    participants = [["a", 1, 0, T, ranks[0]], ["b", 1, 0, T, ranks[1]]]
    assert_corrupt(
        with_fields(participants=participants, world_size=world_size),
        "are not distinct ranks below the world size",
        f"world size {world_size}",
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"participants": [["a", 1, 0, T, 0], ["b", 1, 0, T, 1]], "world_size": 0},
        {"participants": [["a", 1, 0, T, 0], ["b", 1, 0, T, 0]], "world_size": 2},
        {"participants": [["a", 1, 0, T, 3]], "world_size": 0},
    ],
    ids=["ranks", "world-size", "rank-of-one"],
)
def test_an_incomplete_round_with_ranks_or_world_size_is_corrupt(changes: dict[str, Any]) -> None:
    assert_corrupt(
        with_fields(complete=False, **changes),
        "an incomplete round cannot have ranks or a world size",
    )


def test_every_error_says_nothing_was_run_and_how_to_recover() -> None:
    error = assert_corrupt(b"nope")
    assert "Nothing was run or changed" in str(error)
    assert "delete the key" in str(error)


def test_a_structure_error_is_chained_to_its_cause() -> None:
    error = assert_corrupt(with_fields(round="1"))
    assert error.__cause__ is not None


# --- hostile values -------------------------------------------------------------------------


class _TouchWhenUnpickled:
    """Unpickling this runs ``Path(path).touch()``: a marker file that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[Path], None], tuple[Path]]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_payload_is_refused_and_never_run(tmp_path: Path, protocol: int) -> None:
    armed = tmp_path / "armed"
    pickle.loads(pickle.dumps(_TouchWhenUnpickled(armed), protocol))
    assert armed.is_file(), "the payload must really run code when unpickled"

    marker = tmp_path / "marker"
    payload = pickle.dumps(_TouchWhenUnpickled(marker), protocol)
    error = assert_corrupt(payload)
    if protocol >= 2:  # the versions that start with the PROTO opcode, as torch's do
        assert "pickle" in str(error)
        assert "rdzv never unpickles" in str(error)
    assert not marker.exists()


def test_a_pickle_behind_the_magic_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = pickle.dumps(_TouchWhenUnpickled(marker))
    assert_corrupt(MAGIC + zlib.compress(payload), "the payload is not JSON")
    assert_corrupt(MAGIC + payload)
    assert not marker.exists()


@pytest.fixture(scope="module")
def zlib_bomb() -> bytes:
    """200 MB of zeros, compressed to about 200 KB."""
    compressor = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    parts = [compressor.compress(chunk) for _ in range(200)]
    parts.append(compressor.flush())
    return MAGIC + b"".join(parts)


def test_a_zlib_bomb_is_refused_without_inflating_it(zlib_bomb: bytes) -> None:
    assert len(zlib_bomb) < MAX_ENCODED_SIZE
    assert_corrupt(zlib_bomb, f"it inflates to more than {MAX_DECODED_SIZE} bytes")


def test_a_value_over_the_size_limit_is_refused_before_it_is_read() -> None:
    assert_corrupt(MAGIC + bytes(10 * 1024 * 1024), f"more than the limit of {MAX_ENCODED_SIZE}")


# --- fuzzing --------------------------------------------------------------------------------


def decode_or_refuse(data: bytes) -> RendezvousState | None:
    """Decode ``data``; only ``RendezvousStateError`` may escape.

    A value that does decode must be a possible state, which encodes back unchanged.
    """
    try:
        state = decode_state(data)
    except RendezvousStateError:
        return None
    assert state.round >= 0
    assert state.deadline is None or math.isfinite(state.deadline)
    assert all(math.isfinite(beat) for beat in state.last_heartbeats.values())
    assert set(state.last_heartbeats) == state.members()
    lists = (set(state.participants), state.wait_list, state.redundancy_list)
    assert sum(map(len, lists)) == len(state.members())
    ranks = sorted(state.participants.values())
    if state.complete:
        assert len(set(ranks)) == len(ranks)
        assert all(0 <= rank < state.world_size for rank in ranks)
    else:
        assert state.world_size == 0
        assert not any(ranks)
    assert decode_state(encode_state(state)) == state
    return state


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_rendezvous_state_error(data: bytes) -> None:
    decode_or_refuse(data)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_after_the_magic_raise_only_rendezvous_state_error(data: bytes) -> None:
    decode_or_refuse(MAGIC + data)


@given(st.binary(max_size=2000))
def test_arbitrary_compressed_bytes_raise_only_rendezvous_state_error(data: bytes) -> None:
    decode_or_refuse(MAGIC + zlib.compress(data))


@given(st.data())
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_damaged_encodings_raise_only_rendezvous_state_error(data: st.DataObject) -> None:
    encoded = bytearray(encode_state(data.draw(states())))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    decode_or_refuse(bytes(encoded))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json writes them, Python's json reads them
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=40,
)


@given(json_values)
def test_arbitrary_json_raises_only_rendezvous_state_error(document: Any) -> None:
    decode_or_refuse(frame(document))


plausible = st.one_of(
    st.integers(min_value=-1, max_value=3),
    st.booleans(),
    st.none(),
    st.sampled_from([0.5, T, math.nan, math.inf, -math.inf, 1e400]),
    st.sampled_from(["", "a", "1", "0.5", "true"]),
    st.lists(st.integers(min_value=0, max_value=2), max_size=5),
)
LISTS = ("participants", "wait_list", "redundancy_list")


@st.composite
def near_valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """The JSON of a valid state after one to three small mutations.

    A mutation replaces a field, an entry or one element of an entry with a plausible
    value, drops or adds a field or an element, or copies an entry to another list.
    """
    document = json.loads(zlib.decompress(encode_state(draw(states()))[len(MAGIC) :]))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["field", "drop", "extra", "element", "length", "copy"]))
        entries = [
            (name, i)
            for name in LISTS
            if isinstance(document.get(name), list)
            for i in range(len(document[name]))
        ]
        if kind == "field":
            document[draw(st.sampled_from(list(document) or ["version"]))] = draw(plausible)
        elif kind == "drop" and document:
            del document[draw(st.sampled_from(sorted(document)))]
        elif kind == "extra":
            document[draw(st.sampled_from(["x", "ranks", "Version"]))] = draw(plausible)
        elif kind in ("element", "length", "copy") and entries:
            name, index = draw(st.sampled_from(entries))
            entry = document[name][index]
            if not isinstance(entry, list) or not entry:
                continue
            if kind == "element":
                entry[draw(st.integers(0, len(entry) - 1))] = draw(plausible)
            elif kind == "length":
                if draw(st.booleans()):
                    entry.pop()
                else:
                    entry.append(draw(plausible))
            else:
                target = draw(st.sampled_from(LISTS))
                if isinstance(document.get(target), list):
                    width = 5 if target == "participants" else 4
                    copy = [*entry, 0][:width]
                    document[target].append(copy)
    return document


@given(near_valid_documents())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_near_valid_json_raises_only_rendezvous_state_error(document: dict[str, Any]) -> None:
    decode_or_refuse(frame(document))


@given(states(), st.sampled_from(list(valid_document())), json_values)
def test_a_valid_state_with_one_field_replaced_raises_only_rendezvous_state_error(
    state: RendezvousState, field: str, value: Any
) -> None:
    document = json.loads(zlib.decompress(encode_state(state)[len(MAGIC) :]))
    document[field] = value
    decode_or_refuse(frame(document))


def test_wrong_ranks_of_thousands_of_nodes_are_named_ten_at_most() -> None:
    participants = [[f"n{i}", 1, 0, T, 0] for i in range(4096)]
    error = assert_corrupt(
        with_fields(participants=participants, world_size=4096),
        "4096 participants hold ranks that are not distinct ranks below the world size 4096",
        "(duplicated or out of range: 0)",
    )
    assert len(str(error)) < 1000
    participants = [[f"n{i}", 1, 0, T, i + 1] for i in range(4096)]
    assert_corrupt(with_fields(participants=participants, world_size=4096), "out of range: 4096)")
    participants = [[f"n{i}", 1, 0, T, 5000 + i] for i in range(20)]
    assert_corrupt(
        with_fields(participants=participants, world_size=20),
        "out of range: 5000, 5001, 5002, 5003, 5004, 5005, 5006, 5007, 5008, 5009, ...)",
    )
