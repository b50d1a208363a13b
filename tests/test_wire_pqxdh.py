"""PreKeySignalMessage fields 7 and 8 (PQXDH's KEM prekey id and ciphertext) in e2e.wire."""

from __future__ import annotations

import pytest

from e2e import protobuf
from e2e.errors import DecodeError
from e2e.kem import KemCiphertext, KemKeyPair, encapsulate
from e2e.keys import KeyPair, Rng
from e2e.wire import PreKeySignalMessage, SignalMessage


def _parts(rng: Rng) -> tuple[KeyPair, KeyPair, SignalMessage, KemCiphertext]:
    alice = KeyPair.generate(rng)
    base = KeyPair.generate(rng)
    inner = SignalMessage.create(
        rng(32),
        alice.public_key,
        KeyPair.generate(rng).public_key,
        KeyPair.generate(rng).public_key,
        0,
        0,
        rng(16),
    )
    ciphertext, _ = encapsulate(KemKeyPair.generate(rng).public_key)
    return alice, base, inner, ciphertext


def test_without_kem_fields_the_bytes_are_libsignals_v3_message(rng: Rng) -> None:
    alice, base, inner, _ = _parts(rng)
    message = PreKeySignalMessage.create(77, 5, 6, base.public_key, alice.public_key, inner)
    # libsignal's v3 layout, written out field by field (tag bytes: field number << 3 | wire type).
    expected = (
        b"\x33"
        + b"\x08\x05"
        + b"\x12\x21"
        + base.public_key.serialize()
        + b"\x1a\x21"
        + alice.public_key.serialize()
        + b"\x22"
        + protobuf.encode_varint(len(inner.serialized))
        + inner.serialized
        + b"\x28\x4d"
        + b"\x30\x06"
    )
    assert message.serialized == expected
    decoded = PreKeySignalMessage.deserialize(expected)
    assert decoded.kem_pre_key_id is None and decoded.kem_ciphertext is None
    assert decoded.initial_message().kem_ciphertext is None
    assert "kem" not in repr(decoded)


def test_kem_fields_follow_field_six_and_round_trip(rng: Rng) -> None:
    alice, base, inner, ciphertext = _parts(rng)
    plain = PreKeySignalMessage.create(77, None, 6, base.public_key, alice.public_key, inner)
    message = PreKeySignalMessage.create(
        77, None, 6, base.public_key, alice.public_key, inner, 300, ciphertext
    )
    # Field 7 (varint 300), then field 8: tag 0x42, length 1569 as a varint, 0x0A ‖ ciphertext.
    assert message.serialized == plain.serialized + b"\x38\xac\x02" + b"\x42\xa1\x0c" + ciphertext.serialize()
    decoded = PreKeySignalMessage.deserialize(message.serialized)
    assert decoded == message
    initial = decoded.initial_message()
    assert initial.kem_pre_key_id == 300 and initial.kem_ciphertext == ciphertext
    assert "kem_pre_key_id=300" in repr(decoded)


def test_the_kem_fields_come_together_or_not_at_all(rng: Rng) -> None:
    alice, base, inner, ciphertext = _parts(rng)
    plain = PreKeySignalMessage.create(1, None, 6, base.public_key, alice.public_key, inner).serialized
    with pytest.raises(DecodeError, match="together"):
        PreKeySignalMessage.deserialize(plain + b"\x38\x01")
    with pytest.raises(DecodeError, match="together"):
        PreKeySignalMessage.deserialize(plain + protobuf.encode_bytes_field(8, ciphertext.serialize()))
    with pytest.raises(ValueError):
        PreKeySignalMessage.create(1, None, 6, base.public_key, alice.public_key, inner, 3, None)


@pytest.mark.parametrize(
    "field8",
    [
        lambda c: b"\x08" + c.raw,  # libsignal's Kyber1024 type byte
        lambda c: c.raw,  # no type byte
        lambda c: c.serialize()[:-1],  # one byte short
        lambda c: c.serialize() + b"\x00",  # one byte long
    ],
)
def test_a_malformed_kem_ciphertext_is_a_decode_error(rng: Rng, field8) -> None:  # type: ignore[no-untyped-def]
    alice, base, inner, ciphertext = _parts(rng)
    plain = PreKeySignalMessage.create(1, None, 6, base.public_key, alice.public_key, inner).serialized
    with pytest.raises(DecodeError):
        PreKeySignalMessage.deserialize(
            plain + b"\x38\x01" + protobuf.encode_bytes_field(8, field8(ciphertext))
        )


def test_duplicate_and_oversized_kem_fields_are_decode_errors(rng: Rng) -> None:
    alice, base, inner, ciphertext = _parts(rng)
    message = PreKeySignalMessage.create(1, None, 6, base.public_key, alice.public_key, inner, 2, ciphertext)
    with pytest.raises(DecodeError):
        PreKeySignalMessage.deserialize(message.serialized + b"\x38\x02")
    plain = PreKeySignalMessage.create(1, None, 6, base.public_key, alice.public_key, inner).serialized
    too_big = b"\x38" + protobuf.encode_varint(1 << 32)
    with pytest.raises(DecodeError):
        PreKeySignalMessage.deserialize(
            plain + too_big + protobuf.encode_bytes_field(8, ciphertext.serialize())
        )
    with pytest.raises(ValueError):
        PreKeySignalMessage.create(1, None, 6, base.public_key, alice.public_key, inner, 1 << 32, ciphertext)
