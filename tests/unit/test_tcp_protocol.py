"""The TCP store's wire format: frames, integers, timeouts and auth proofs, without sockets."""

from __future__ import annotations

import struct

import pytest

from rdzv.store import tcp_protocol
from rdzv.store.tcp_protocol import (
    MAGIC,
    PREFIX,
    Frame,
    FrameDecoder,
    Op,
    Status,
    StoreProtocolError,
    client_proof,
    decode_int,
    encode_frame,
    encode_int,
    parse_prefix,
    server_proof,
    timeout_to_ms,
)


def test_frame_round_trips_with_empty_and_binary_arguments() -> None:
    args = (b"", b"key", bytes(range(256)))
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Op.SET, args))
    assert decoder.next_frame() == Frame(Op.SET, args)
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_frame_without_arguments_is_seven_bytes() -> None:
    data = encode_frame(Status.OK)
    assert data == struct.pack(">IBH", 3, Status.OK, 0)


def test_decoder_assembles_a_frame_fed_one_byte_at_a_time() -> None:
    data = encode_frame(Op.GET, (b"k", encode_int(5)))
    decoder = FrameDecoder()
    for i in range(len(data) - 1):
        decoder.feed(data[i : i + 1])
        assert decoder.next_frame() is None
    decoder.feed(data[-1:])
    assert decoder.next_frame() == Frame(Op.GET, (b"k", encode_int(5)))


def test_decoder_returns_pipelined_frames_in_order() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Op.PING) + encode_frame(Op.NUM_KEYS) + encode_frame(Op.CHECK)[:5])
    assert decoder.next_frame() == Frame(Op.PING, ())
    assert decoder.next_frame() == Frame(Op.NUM_KEYS, ())
    assert decoder.next_frame() is None
    decoder.feed(encode_frame(Op.CHECK)[5:])
    assert decoder.next_frame() == Frame(Op.CHECK, ())


def test_oversized_length_header_is_refused_before_its_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(struct.pack(">I", 1025))
    with pytest.raises(StoreProtocolError, match="over the limit of 1024"):
        decoder.next_frame()


def test_length_shorter_than_a_header_is_refused() -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(StoreProtocolError, match="shorter than a header"):
        decoder.next_frame()


def test_argument_longer_than_its_frame_is_refused() -> None:
    body = struct.pack(">BHI", Op.SET, 1, 1000) + b"abc"
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(StoreProtocolError, match="overrun"):
        decoder.next_frame()


def test_argument_count_larger_than_the_frame_holds_is_refused() -> None:
    body = struct.pack(">BH", Op.SET, 60000)
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(StoreProtocolError, match="overrun"):
        decoder.next_frame()


def test_bytes_after_the_last_argument_are_refused() -> None:
    body = struct.pack(">BH", Op.PING, 0) + b"junk"
    decoder = FrameDecoder()
    decoder.feed(struct.pack(">I", len(body)) + body)
    with pytest.raises(StoreProtocolError, match="after its last argument"):
        decoder.next_frame()


def test_encoding_a_frame_over_the_limit_raises_value_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tcp_protocol, "MAX_FRAME_SIZE", 100)
    encode_frame(Op.SET, (b"k", b"x" * 80))
    with pytest.raises(ValueError, match="exceeds the limit of 100"):
        encode_frame(Op.SET, (b"k", b"x" * 100))


def test_raising_the_limit_lets_a_larger_frame_through() -> None:
    decoder = FrameDecoder(max_frame_size=16)
    decoder.feed(encode_frame(Op.SET, (b"k", b"x" * 32)))
    decoder.max_frame_size = 1024
    assert decoder.next_frame() == Frame(Op.SET, (b"k", b"x" * 32))


def test_prefix_announces_magic_and_version() -> None:
    assert PREFIX == MAGIC + b"\x01"
    assert parse_prefix(PREFIX) == 1
    assert parse_prefix(MAGIC + b"\x07") == 7


def test_prefix_without_magic_is_refused() -> None:
    with pytest.raises(StoreProtocolError, match="did not greet as an rdzv TCP store"):
        parse_prefix(b"GET /")


def test_integers_round_trip_over_the_signed_64_bit_range() -> None:
    for value in (0, 1, -1, 2**63 - 1, -(2**63)):
        assert decode_int(encode_int(value)) == value


def test_integer_outside_64_bits_raises_overflow_error() -> None:
    with pytest.raises(OverflowError):
        encode_int(2**63)


def test_integer_of_the_wrong_width_is_a_protocol_error() -> None:
    with pytest.raises(StoreProtocolError):
        decode_int(b"\x00" * 4)


def test_timeouts_round_up_to_whole_milliseconds_and_never_go_negative() -> None:
    assert timeout_to_ms(0.0001) == 1
    assert timeout_to_ms(1.5) == 1500
    assert timeout_to_ms(0) == 0
    assert timeout_to_ms(-3) == 0
    assert timeout_to_ms(float("nan")) == 0
    assert timeout_to_ms(float("inf")) == 2**53


def test_client_and_server_proofs_differ_so_neither_can_be_reflected() -> None:
    token, server_nonce, client_nonce = b"secret", b"s" * 32, b"c" * 32
    proof = client_proof(token, server_nonce, client_nonce)
    assert len(proof) == 32
    assert proof != server_proof(token, server_nonce, client_nonce)
    # Swapping the nonces (a peer replaying our own challenge) does not give the other proof.
    assert proof != server_proof(token, client_nonce, server_nonce)


def test_proofs_depend_on_token_and_both_nonces() -> None:
    base = client_proof(b"secret", b"s" * 32, b"c" * 32)
    assert base == client_proof(b"secret", b"s" * 32, b"c" * 32)
    assert base != client_proof(b"other", b"s" * 32, b"c" * 32)
    assert base != client_proof(b"secret", b"t" * 32, b"c" * 32)
    assert base != client_proof(b"secret", b"s" * 32, b"d" * 32)
