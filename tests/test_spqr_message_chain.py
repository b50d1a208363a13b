"""The ``pq_ratchet`` wire format (sizes libsignal was seen to send, round trips, every malformed
form refused with a typed error) and the SPQR chain (the crate's chain tests, transcribed: key
agreement across directions and epochs, replays, trimming, jumps, send-epoch monotonicity)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import DecodeError, DuplicateMessageError, TooManySkippedMessagesError
from e2e.spqr.chain import Chain, ChainParams, Direction
from e2e.spqr.erasure import Chunk
from e2e.spqr.errors import (
    EpochOutOfRangeError,
    MalformedSpqrMessageError,
    SpqrKeyJumpError,
    SpqrKeyTrimmedError,
    SpqrReplayError,
)
from e2e.spqr.message import MessageType, SpqrMessage

CHUNK = Chunk(3, bytes(range(32)))


def test_sizes_match_what_libsignal_sends() -> None:
    # libsignal 0.103: 4 bytes without a chunk, 37 with one, more once counters pass 127.
    assert len(SpqrMessage(1, 1, MessageType.NONE).serialize()) == 4
    assert len(SpqrMessage(1, 5, MessageType.CT1_ACK).serialize()) == 4
    assert len(SpqrMessage(1, 1, MessageType.HDR, CHUNK).serialize()) == 37
    assert len(SpqrMessage(1, 200, MessageType.EK, Chunk(130, bytes(32))).serialize()) == 39


def test_layout() -> None:
    data = SpqrMessage(2, 300, MessageType.CT2, CHUNK).serialize()
    assert data == bytes([1, 2, 0xAC, 0x02, 6, 3]) + bytes(range(32))


messages = st.builds(
    lambda epoch, index, kind, chunk_index, data: SpqrMessage(
        epoch, index, kind, Chunk(chunk_index, data) if kind.has_chunk else None
    ),
    st.integers(1, (1 << 64) - 1),
    st.integers(0, 0xFFFF_FFFF),
    st.sampled_from(list(MessageType)),
    st.integers(0, 0xFFFF),
    st.binary(min_size=32, max_size=32),
)


@given(messages)
def test_round_trip(message: SpqrMessage) -> None:
    data = message.serialize()
    assert SpqrMessage.deserialize(data) == message
    # Trailing bytes are ignored, as the crate ignores them (room for later versions).
    assert SpqrMessage.deserialize(data + b"\x00\x01") == message


@given(messages)
def test_every_truncation_is_refused(message: SpqrMessage) -> None:
    data = message.serialize()
    for end in range(len(data)):
        with pytest.raises(MalformedSpqrMessageError):
            SpqrMessage.deserialize(data[:end])


@pytest.mark.parametrize(
    "data",
    [
        b"\x02\x01\x01\x00",  # another version
        b"\x01\x00\x01\x00",  # epoch 0
        b"\x01\x01\x01\x07",  # unknown type
        b"\x01\x01\x80\x80\x80\x80\x10\x00",  # index of 33 bits
        b"\x01\x01\x01\x01\x80\x80\x04" + bytes(32),  # chunk index of 17 bits
        b"\x01" + b"\xff" * 10 + b"\x01\x01\x00",  # varint longer than 10 bytes
        b"\x01" + b"\xff" * 9 + b"\x7f\x01\x00",  # varint above 64 bits
    ],
)
def test_malformed_messages_raise_a_decode_error(data: bytes) -> None:
    with pytest.raises(MalformedSpqrMessageError) as raised:
        SpqrMessage.deserialize(data)
    assert isinstance(raised.value, DecodeError)


def test_chain_directions_match() -> None:
    # The crate's directions_match.
    a2b, b2a = Chain.new(b"1", Direction.A2B), Chain.new(b"1", Direction.B2A)
    a2b, index, key = a2b.send_key(0)
    assert index == 1
    b2a, key_again = b2a.recv_key(0, 1)
    assert key == key_again
    a2b, b2a = a2b.add_epoch(1, b"\x02"), b2a.add_epoch(1, b"\x02")
    a2b, index, key = a2b.send_key(1)
    b2a, key_again = b2a.recv_key(1, 1)
    assert index == 1 and key == key_again
    for _ in range(2, 10):
        a2b, _, _ = a2b.send_key(1)
    a2b, index, key = a2b.send_key(1)
    assert index == 10 and b2a.recv_key(1, 10)[1] == key


def test_a_key_is_handed_out_once() -> None:
    chain, _ = Chain.new(b"1", Direction.A2B).recv_key(0, 2)
    with pytest.raises(SpqrReplayError) as raised:
        chain.recv_key(0, 2)
    assert isinstance(raised.value, DuplicateMessageError)
    chain, _ = chain.recv_key(0, 1)
    with pytest.raises(SpqrReplayError):
        chain.recv_key(0, 1)


def test_very_old_keys_are_trimmed() -> None:
    chain = Chain.new(b"1", Direction.A2B, ChainParams(max_jump=10, max_ooo_keys=10))
    chain, _ = chain.recv_key(0, 10)
    chain, _ = chain.recv_key(0, 12)
    with pytest.raises(SpqrKeyTrimmedError):
        chain.recv_key(0, 1)


def test_jumps_beyond_the_limit_are_refused() -> None:
    chain = Chain.new(b"1", Direction.A2B, ChainParams(max_jump=10, max_ooo_keys=10))
    with pytest.raises(SpqrKeyJumpError) as raised:
        chain.recv_key(0, 11)
    assert isinstance(raised.value, TooManySkippedMessagesError)
    assert chain.recv_key(0, 10)[0].links[0].recv.ctr == 10


def test_out_of_order_keys() -> None:
    # The crate's out_of_order_keys: 2000 keys, received in a shuffled order.
    sender, receiver = Chain.new(b"1", Direction.A2B), Chain.new(b"1", Direction.B2A)
    keys = []
    for _ in range(2000):
        sender, index, key = sender.send_key(0)
        keys.append((index, key))
    random.Random(7).shuffle(keys)
    for index, key in keys:
        receiver, key_again = receiver.recv_key(0, index)
        assert key_again == key


def test_skipped_keys_are_pruned_to_the_window() -> None:
    chain = Chain.new(b"1", Direction.A2B, ChainParams(max_jump=100, max_ooo_keys=10))
    for at in range(5, 200, 5):
        chain, _ = chain.recv_key(0, at)
    held = chain.links[0].recv.skipped
    assert len(held) <= ChainParams(max_jump=100, max_ooo_keys=10).trim_size
    assert min(held) >= 195 - 10 - 11


def test_sending_never_goes_back_an_epoch() -> None:
    # The crate's clear_old_send_keys.
    chain = Chain.new(b"1", Direction.A2B)
    chain, _, _ = chain.send_key(0)
    chain, _, _ = chain.send_key(0)
    chain = chain.add_epoch(1, b"\x02")
    chain, _, _ = chain.send_key(1)
    with pytest.raises(EpochOutOfRangeError):
        chain.send_key(0)
    assert chain.links[0].send.next == b""


def test_old_epochs_are_dropped_and_future_ones_refused() -> None:
    chain = Chain.new(b"1", Direction.A2B)
    for epoch in range(1, 4):
        chain = chain.add_epoch(epoch, bytes([epoch]))
    with pytest.raises(EpochOutOfRangeError):
        chain.recv_key(4, 1)
    with pytest.raises(EpochOutOfRangeError):
        chain.add_epoch(5, b"\x05")
    chain, _, _ = chain.send_key(3)
    assert len(chain.links) == 2
    with pytest.raises(EpochOutOfRangeError):
        chain.recv_key(1, 1)
    assert chain.recv_key(2, 1)


def test_chain_reprs_redact_keys() -> None:
    chain = Chain.new(b"\x77" * 32, Direction.A2B)
    assert "7777" not in repr(chain) and chain.next_root.hex() not in repr(chain)


def test_describe_gives_the_public_fields_and_never_raises() -> None:
    from e2e.spqr.message import describe

    assert describe(SpqrMessage(2, 300, MessageType.CT2, CHUNK).serialize()) == {
        "spqr_version": 1,
        "spqr_epoch": 2,
        "spqr_index": 300,
        "spqr_type": "CT2",
        "spqr_chunk": 3,
    }
    assert describe(SpqrMessage(1, 1, MessageType.NONE).serialize())["spqr_type"] == "NONE"
    assert describe(b"") == {"spqr_version": 0}
    assert describe(b"\x01\x01") == {"spqr_malformed": 1}
