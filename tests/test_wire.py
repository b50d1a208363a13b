"""libsignal v3 message formats: exact layout, MAC, sizes, strict decoding of every bad input."""

from __future__ import annotations

import contextlib
import hashlib
import hmac

import pytest
from conftest import DeterministicRng
from hypothesis import given
from hypothesis import strategies as st

from e2e import protobuf, wire
from e2e.errors import DecodeError, InvalidMessageError
from e2e.keys import KeyPair, PublicKey
from e2e.primitives import cbc_encrypt
from e2e.wire import (
    MAC_LENGTH,
    MAX_CIPHERTEXT_LENGTH,
    MAX_PREKEY_MESSAGE_LENGTH,
    MAX_SIGNAL_MESSAGE_LENGTH,
    VERSION_BYTE,
    MessageType,
    PreKeySignalMessage,
    SignalMessage,
)

RNG = DeterministicRng(b"wire-tests")
SENDER = KeyPair.generate(RNG).public_key
RECEIVER = KeyPair.generate(RNG).public_key
RATCHET = KeyPair.generate(RNG).public_key
BASE = KeyPair.generate(RNG).public_key
MAC_KEY = RNG(32)
CIPHER_KEY = RNG(32)
IV = RNG(16)


def make(plaintext: bytes = b"hello", counter: int = 5, previous_counter: int = 3) -> SignalMessage:
    ciphertext = cbc_encrypt(CIPHER_KEY, IV, plaintext)
    return SignalMessage.create(MAC_KEY, SENDER, RECEIVER, RATCHET, counter, previous_counter, ciphertext)


def make_prekey(pre_key_id: int | None = 17) -> PreKeySignalMessage:
    return PreKeySignalMessage.create(4242, pre_key_id, 9, BASE, SENDER, make())


def test_constants() -> None:
    assert VERSION_BYTE == 0x33
    assert MAC_LENGTH == 8
    assert (MessageType.WHISPER, MessageType.PREKEY) == (2, 3)


def test_signal_message_layout_and_mac() -> None:
    message = make()
    ciphertext = message.ciphertext
    body = (
        b"\x33"
        + b"\x0a\x21" + RATCHET.serialize()
        + b"\x10\x05"
        + b"\x18\x03"
        + b"\x22" + bytes((len(ciphertext),)) + ciphertext
    )  # fmt: skip
    # The MAC as libsignal defines it, computed here with the standard library.
    mac = hmac.new(MAC_KEY, SENDER.serialize() + RECEIVER.serialize() + body, hashlib.sha256).digest()
    assert message.serialized == body + mac[:8]
    message.verify_mac(MAC_KEY, SENDER, RECEIVER)


# Sizes of libsignal v3 SignalMessages measured against other implementations (project notes).
@pytest.mark.parametrize(("length", "size"), [(0, 66), (15, 66), (64, 130), (1000, 1059)])
def test_message_sizes_match_libsignal(length: int, size: int) -> None:
    assert len(make(bytes(length), counter=0, previous_counter=0).serialized) == size


def test_signal_message_round_trip() -> None:
    message = make(counter=300, previous_counter=2**32 - 1)
    decoded = SignalMessage.deserialize(message.serialized)
    assert decoded == message
    assert (decoded.counter, decoded.previous_counter, decoded.ratchet_key) == (300, 2**32 - 1, RATCHET)


def test_fields_in_another_order_decode_to_the_same_values() -> None:
    """The general parser reads what the canonical shortcut does not (any field order)."""
    message = make()
    fields = [
        protobuf.encode_uint_field(3, 3),
        protobuf.encode_bytes_field(4, message.ciphertext),
        protobuf.encode_uint_field(2, 5),
        protobuf.encode_bytes_field(1, RATCHET.serialize()),
        protobuf.encode_uint_field(15, 1),  # an unknown field, skipped
    ]
    data = b"\x33" + b"".join(fields) + bytes(8)
    decoded = SignalMessage.deserialize(data)
    assert (decoded.ratchet_key, decoded.counter, decoded.previous_counter, decoded.ciphertext) == (
        RATCHET,
        5,
        3,
        message.ciphertext,
    )
    # Its bytes differ from what the sender authenticated, so the MAC refuses it.
    with pytest.raises(InvalidMessageError):
        decoded.verify_mac(MAC_KEY, SENDER, RECEIVER)


def test_mac_binds_both_identities_and_their_order() -> None:
    message = make()
    with pytest.raises(InvalidMessageError, match="bad MAC"):
        message.verify_mac(MAC_KEY, RECEIVER, SENDER)
    with pytest.raises(InvalidMessageError):
        message.verify_mac(MAC_KEY, SENDER, BASE)
    with pytest.raises(InvalidMessageError):
        message.verify_mac(bytes(32), SENDER, RECEIVER)


def test_every_truncation_is_refused_or_fails_the_mac() -> None:
    data = make().serialized
    for length in range(len(data)):
        try:
            message = SignalMessage.deserialize(data[:length])
        except DecodeError:
            continue
        with pytest.raises(InvalidMessageError):
            message.verify_mac(MAC_KEY, SENDER, RECEIVER)


@pytest.mark.parametrize(
    ("version_byte", "named"),
    [(0x23, "version 2"), (0x32, "version 3"), (0x43, "version 4"), (0x00, "version 0")],
)
def test_other_versions_are_refused_by_name(version_byte: int, named: str) -> None:
    data = bytes((version_byte,)) + make().serialized[1:]
    with pytest.raises(DecodeError, match=named):
        SignalMessage.deserialize(data)
    prekey = bytes((version_byte,)) + make_prekey().serialized[1:]
    with pytest.raises(DecodeError, match=named):
        PreKeySignalMessage.deserialize(prekey)


@pytest.mark.parametrize("data", [b"", "33", bytearray(b"\x33" * 70), None, 3])
def test_wrong_types_and_empty_input(data: object) -> None:
    with pytest.raises(DecodeError):
        SignalMessage.deserialize(data)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        PreKeySignalMessage.deserialize(data)  # type: ignore[arg-type]


def _signal_bytes(*fields: bytes) -> bytes:
    return b"\x33" + b"".join(fields) + bytes(MAC_LENGTH)


KEY = protobuf.encode_bytes_field(1, RATCHET.serialize())
COUNTER = protobuf.encode_uint_field(2, 1)
PREVIOUS = protobuf.encode_uint_field(3, 0)
BODY = protobuf.encode_bytes_field(4, bytes(16))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_signal_bytes(COUNTER, PREVIOUS, BODY), "missing ratchet key"),
        (_signal_bytes(KEY, PREVIOUS, BODY), "missing counter"),
        (_signal_bytes(KEY, COUNTER, BODY), "missing previous counter"),
        (_signal_bytes(KEY, COUNTER, PREVIOUS), "missing ciphertext"),
        (_signal_bytes(KEY, KEY, COUNTER, PREVIOUS, BODY), "more than once"),
        (_signal_bytes(protobuf.encode_bytes_field(1, RATCHET.raw), COUNTER, PREVIOUS, BODY), "ratchet key"),
        (
            _signal_bytes(protobuf.encode_bytes_field(1, b"\x06" + RATCHET.raw), COUNTER, PREVIOUS, BODY),
            "type",
        ),
        (_signal_bytes(KEY, protobuf.encode_uint_field(2, 2**32), PREVIOUS, BODY), "counter out of range"),
        (
            _signal_bytes(KEY, COUNTER, protobuf.encode_uint_field(3, 2**32), BODY),
            "previous counter out of range",
        ),
        (_signal_bytes(KEY, COUNTER, PREVIOUS, protobuf.encode_bytes_field(4, b"")), "AES blocks"),
        (_signal_bytes(KEY, COUNTER, PREVIOUS, protobuf.encode_bytes_field(4, bytes(17))), "AES blocks"),
        (b"\x33" + bytes(MAC_LENGTH), "too short"),
    ],
)
def test_malformed_signal_messages(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        SignalMessage.deserialize(data)


def test_oversized_input_is_refused_before_parsing() -> None:
    largest = make(bytes(MAX_CIPHERTEXT_LENGTH - 1))
    assert len(largest.serialized) <= MAX_SIGNAL_MESSAGE_LENGTH
    assert SignalMessage.deserialize(largest.serialized) == largest
    with pytest.raises(DecodeError, match="at most"):
        SignalMessage.deserialize(b"\x33" + bytes(MAX_SIGNAL_MESSAGE_LENGTH))
    with pytest.raises(DecodeError, match="at most"):
        PreKeySignalMessage.deserialize(b"\x33" + bytes(MAX_PREKEY_MESSAGE_LENGTH))
    with pytest.raises(ValueError, match="at most"):
        make(bytes(MAX_CIPHERTEXT_LENGTH))


def test_create_refuses_out_of_range_counters_and_ids() -> None:
    with pytest.raises(ValueError):
        make(counter=2**32)
    with pytest.raises(ValueError):
        PreKeySignalMessage.create(2**32, None, 1, BASE, SENDER, make())
    with pytest.raises(ValueError):
        PreKeySignalMessage.create(1, -1, 1, BASE, SENDER, make())


@pytest.mark.parametrize("pre_key_id", [17, None, 0, 2**32 - 1])
def test_prekey_message_round_trip(pre_key_id: int | None) -> None:
    message = make_prekey(pre_key_id)
    decoded = PreKeySignalMessage.deserialize(message.serialized)
    assert decoded == message
    assert decoded.pre_key_id == pre_key_id
    initial = decoded.initial_message()
    assert (initial.identity_key, initial.base_key, initial.signed_pre_key_id, initial.pre_key_id) == (
        SENDER,
        BASE,
        9,
        pre_key_id,
    )


def test_prekey_message_layout() -> None:
    """Fields in field-number order, as protobuf libraries (and so libsignal) write them."""
    inner = make()
    data = make_prekey(17).serialized
    expected = (
        b"\x33"
        + b"\x08\x11"
        + b"\x12\x21" + BASE.serialize()
        + b"\x1a\x21" + SENDER.serialize()
        + b"\x22" + protobuf.encode_varint(len(inner.serialized)) + inner.serialized
        + b"\x28\x92\x21"  # registration id 4242
        + b"\x30\x09"
    )  # fmt: skip
    assert data == expected


PREKEY_FIELDS = {
    "pre_key_id": protobuf.encode_uint_field(1, 1),
    "base_key": protobuf.encode_bytes_field(2, BASE.serialize()),
    "identity_key": protobuf.encode_bytes_field(3, SENDER.serialize()),
    "message": protobuf.encode_bytes_field(4, make().serialized),
    "registration_id": protobuf.encode_uint_field(5, 1),
    "signed_pre_key_id": protobuf.encode_uint_field(6, 1),
}


@pytest.mark.parametrize(
    "missing", ["base_key", "identity_key", "message", "registration_id", "signed_pre_key_id"]
)
def test_prekey_message_required_fields(missing: str) -> None:
    data = b"\x33" + b"".join(value for name, value in PREKEY_FIELDS.items() if name != missing)
    with pytest.raises(DecodeError, match="missing"):
        PreKeySignalMessage.deserialize(data)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("base_key", protobuf.encode_bytes_field(2, BASE.raw), "base key"),
        ("identity_key", protobuf.encode_bytes_field(3, b"\x05" + bytes(31)), "identity key"),
        ("message", protobuf.encode_bytes_field(4, b"\x23" + make().serialized[1:]), "version 2"),
        ("message", protobuf.encode_bytes_field(4, make().serialized[:-30]), "truncated"),
        ("registration_id", protobuf.encode_uint_field(5, 2**32), "registration id out of range"),
        ("pre_key_id", protobuf.encode_uint_field(1, 2**32), "prekey id out of range"),
        ("signed_pre_key_id", protobuf.encode_bytes_field(6, b"\x01"), "wire type"),
    ],
)
def test_prekey_message_bad_fields(field: str, value: bytes, reason: str) -> None:
    fields = dict(PREKEY_FIELDS, **{field: value})
    with pytest.raises(DecodeError, match=reason):
        PreKeySignalMessage.deserialize(b"\x33" + b"".join(fields.values()))


def test_every_prekey_truncation_is_refused() -> None:
    data = make_prekey().serialized
    for length in range(len(data)):
        with pytest.raises(DecodeError):
            PreKeySignalMessage.deserialize(data[:length])


@given(st.binary(max_size=200))
def test_garbage_is_refused_with_decode_error_only(data: bytes) -> None:
    for decoder in (SignalMessage.deserialize, PreKeySignalMessage.deserialize):
        with contextlib.suppress(DecodeError):
            decoder(b"\x33" + data)


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=100))
def test_round_trip_property(counter: int, previous_counter: int, plaintext: bytes) -> None:
    message = make(plaintext, counter, previous_counter)
    assert SignalMessage.deserialize(message.serialized) == message


def test_repr_shows_no_ciphertext_or_mac() -> None:
    message = make(b"secret plaintext")
    text = repr(message) + repr(make_prekey())
    assert message.ciphertext.hex() not in text
    assert message.serialized[-8:].hex() not in text
    assert "ciphertext=<16 bytes>" in repr(message) or "bytes>" in repr(message)
    assert isinstance(PublicKey.deserialize(RATCHET.serialize()), PublicKey)


def _general(data: bytes) -> tuple[bytes, int, int, bytes]:
    fields = protobuf.parse(data[1:-MAC_LENGTH], wire._SIGNAL_SCHEMA)
    key = protobuf.get_bytes(fields, 1, "ratchet key")
    return (
        PublicKey.deserialize(key).raw,
        protobuf.get_uint(fields, 2, "counter"),
        protobuf.get_uint(fields, 3, "previous counter"),
        protobuf.get_bytes(fields, 4, "ciphertext"),
    )


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=300),
    st.integers(0, 400),
    st.integers(0, 255),
)
def test_canonical_shortcut_agrees_with_the_general_parser(
    counter: int, previous_counter: int, plaintext: bytes, position: int, value: int
) -> None:
    """The shortcut for the usual layout reads exactly what the general parser reads, also after
    any one byte of the message was changed; where it declines, the general parser decides."""
    data = make(plaintext, counter, previous_counter).serialized
    assert wire._read_canonical(data) == _general(data)
    mutated = bytearray(data)
    mutated[position % len(data)] = value
    try:
        shortcut = wire._read_canonical(bytes(mutated))
    except DecodeError:
        with pytest.raises(DecodeError):
            _general(bytes(mutated))
        return
    if shortcut is not None:
        assert shortcut == _general(bytes(mutated))


P = 2**255 - 19


@pytest.mark.parametrize(
    "raw",
    [
        RATCHET.raw[:31] + bytes((RATCHET.raw[31] | 0x80,)),  # the top bit, which X25519 ignores
        P.to_bytes(32, "little"),  # p itself, an alias of 0
        (2**255 - 1).to_bytes(32, "little"),
    ],
)
def test_non_canonical_public_keys_are_refused(raw: bytes) -> None:
    message = make()
    aliased = message.serialized.replace(RATCHET.raw, raw)
    with pytest.raises(DecodeError, match="canonical"):
        SignalMessage.deserialize(aliased)
    prekey = make_prekey().serialized
    for key in (BASE, SENDER):
        with pytest.raises(DecodeError, match="canonical"):
            PreKeySignalMessage.deserialize(prekey.replace(b"\x21\x05" + key.raw, b"\x21\x05" + raw))


def test_largest_canonical_key_is_accepted() -> None:
    largest = PublicKey((P - 1).to_bytes(32, "little"))
    message = SignalMessage.create(MAC_KEY, SENDER, RECEIVER, largest, 0, 0, bytes(16))
    assert SignalMessage.deserialize(message.serialized).ratchet_key == largest
