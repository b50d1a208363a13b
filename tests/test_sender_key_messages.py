"""The two Sender Keys messages in both framings: exact bytes, round trips, and strict refusals."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from conftest import DeterministicRng
from hypothesis import given
from hypothesis import strategies as st

from e2e import protobuf
from e2e.errors import DecodeError, InvalidSignatureError
from e2e.keys import KeyPair, PublicKey
from e2e.sender_key_messages import (
    MAX_SENDER_KEY_CIPHERTEXT_LENGTH,
    MAX_SENDER_KEY_MESSAGE_LENGTH,
    SenderKeyDistributionMessage,
    SenderKeyFraming,
    SenderKeyMessage,
)

LIBSIGNAL = SenderKeyFraming.LIBSIGNAL
AXOLOTL = SenderKeyFraming.AXOLOTL
DISTRIBUTION = uuid.UUID("0d5c7a36-8e0f-4d6e-9d52-3b1f3e6f2a10")


def _signing(rng: DeterministicRng) -> KeyPair:
    return KeyPair.generate(rng)


def _message(
    rng: DeterministicRng, framing: SenderKeyFraming = LIBSIGNAL, **changes: object
) -> SenderKeyMessage:
    fields: dict[str, object] = {
        "distribution_id": DISTRIBUTION if framing is LIBSIGNAL else None,
        "chain_id": 0x1234_5678,
        "iteration": 300,
        "ciphertext": bytes(range(32)),
    }
    fields.update(changes)
    return SenderKeyMessage.create(
        framing,
        fields["distribution_id"],  # type: ignore[arg-type]
        fields["chain_id"],  # type: ignore[arg-type]
        fields["iteration"],  # type: ignore[arg-type]
        fields["ciphertext"],  # type: ignore[arg-type]
        _signing(rng).private_key,
        rng,
    )


def test_libsignal_message_layout(rng: DeterministicRng) -> None:
    signing = _signing(rng)
    message = SenderKeyMessage.create(LIBSIGNAL, DISTRIBUTION, 7, 0, bytes(16), signing.private_key, rng)
    expected_body = (
        b"\x0a\x10"
        + DISTRIBUTION.bytes
        + b"\x10\x07"  # chain id
        + b"\x18\x00"  # iteration 0 is written, as libsignal writes it
        + b"\x22\x10"
        + bytes(16)
    )
    assert message.serialized == b"\x33" + expected_body + message.signature
    assert len(message.signature) == 64
    signing.public_key.verify(b"\x33" + expected_body, message.signature)
    assert SenderKeyMessage.deserialize(message.serialized, LIBSIGNAL) == message


def test_axolotl_message_layout(rng: DeterministicRng) -> None:
    signing = _signing(rng)
    message = SenderKeyMessage.create(AXOLOTL, None, 300, 5, bytes(16), signing.private_key, rng)
    assert message.signed_part == b"\x33\x08\xac\x02\x10\x05\x1a\x10" + bytes(16)
    decoded = SenderKeyMessage.deserialize(message.serialized, AXOLOTL)
    assert (decoded.distribution_id, decoded.chain_id, decoded.iteration) == (None, 300, 5)
    decoded.verify(signing.public_key)


def test_distribution_layout_and_round_trip(rng: DeterministicRng) -> None:
    signing = _signing(rng).public_key
    chain_key = bytes(range(32))
    message = SenderKeyDistributionMessage(LIBSIGNAL, DISTRIBUTION, 9, 0, chain_key, signing)
    data = message.serialize()
    assert data == (
        b"\x33\x0a\x10"
        + DISTRIBUTION.bytes
        + b"\x10\x09\x18\x00\x22\x20"
        + chain_key
        + b"\x2a\x21"
        + signing.serialize()
    )
    assert SenderKeyDistributionMessage.deserialize(data, LIBSIGNAL) == message
    old = SenderKeyDistributionMessage(AXOLOTL, None, 9, 4, chain_key, signing)
    assert old.serialize() == b"\x33\x08\x09\x10\x04\x1a\x20" + chain_key + b"\x22\x21" + signing.serialize()
    assert SenderKeyDistributionMessage.deserialize(old.serialize(), AXOLOTL) == old


def test_the_framing_is_never_guessed(rng: DeterministicRng) -> None:
    new = _message(rng, LIBSIGNAL)
    old = _message(rng, AXOLOTL)
    with pytest.raises(DecodeError):
        SenderKeyMessage.deserialize(new.serialized, AXOLOTL)
    with pytest.raises(DecodeError):
        SenderKeyMessage.deserialize(old.serialized, LIBSIGNAL)
    signing = _signing(rng).public_key
    new_distribution = SenderKeyDistributionMessage(LIBSIGNAL, DISTRIBUTION, 1, 2, bytes(32), signing)
    old_distribution = SenderKeyDistributionMessage(AXOLOTL, None, 1, 2, bytes(32), signing)
    with pytest.raises(DecodeError):
        SenderKeyDistributionMessage.deserialize(new_distribution.serialize(), AXOLOTL)
    with pytest.raises(DecodeError):
        SenderKeyDistributionMessage.deserialize(old_distribution.serialize(), LIBSIGNAL)
    with pytest.raises(TypeError):
        SenderKeyMessage.deserialize(new.serialized, "libsignal")  # type: ignore[arg-type]


def test_a_signature_by_another_key_or_over_other_bytes_is_refused(rng: DeterministicRng) -> None:
    message = _message(rng)
    with pytest.raises(InvalidSignatureError):
        message.verify(_signing(rng).public_key)


def _body(fields: list[bytes]) -> bytes:
    return b"\x33" + b"".join(fields)


def _signed(body: bytes) -> bytes:
    return body + bytes(64)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x33" + bytes(64), "too short"),
        (b"\x23" + bytes(100), "version byte"),
        (b"\x34" + bytes(100), "version byte"),
        (b"\x43" + bytes(100), "version byte"),
        (
            _signed(
                _body(
                    [
                        protobuf.encode_bytes_field(1, bytes(15)),
                        protobuf.encode_uint_field(2, 1),
                        protobuf.encode_uint_field(3, 1),
                        protobuf.encode_bytes_field(4, bytes(16)),
                    ]
                )
            ),
            "distribution id",
        ),
        (
            _signed(
                _body(
                    [
                        protobuf.encode_bytes_field(1, bytes(16)),
                        protobuf.encode_uint_field(3, 1),
                        protobuf.encode_bytes_field(4, bytes(16)),
                    ]
                )
            ),
            "missing chain id",
        ),
        (
            _signed(
                _body(
                    [
                        protobuf.encode_bytes_field(1, bytes(16)),
                        protobuf.encode_uint_field(2, 1 << 32),
                        protobuf.encode_uint_field(3, 1),
                        protobuf.encode_bytes_field(4, bytes(16)),
                    ]
                )
            ),
            "chain id out of range",
        ),
        (
            _signed(
                _body(
                    [
                        protobuf.encode_bytes_field(1, bytes(16)),
                        protobuf.encode_uint_field(2, 1),
                        protobuf.encode_uint_field(3, 1),
                        protobuf.encode_bytes_field(4, bytes(15)),
                    ]
                )
            ),
            "AES blocks",
        ),
        (
            _signed(
                _body(
                    [
                        protobuf.encode_bytes_field(1, bytes(16)),
                        protobuf.encode_uint_field(2, 1),
                        protobuf.encode_uint_field(2, 2),
                        protobuf.encode_uint_field(3, 1),
                        protobuf.encode_bytes_field(4, bytes(16)),
                    ]
                )
            ),
            "more than once",
        ),
    ],
)
def test_malformed_messages_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        SenderKeyMessage.deserialize(data, LIBSIGNAL)


def test_oversized_messages_are_refused_unread() -> None:
    with pytest.raises(DecodeError, match="at most"):
        SenderKeyMessage.deserialize(b"\x33" + bytes(MAX_SENDER_KEY_MESSAGE_LENGTH), LIBSIGNAL)


def test_the_largest_ciphertext_fits(rng: DeterministicRng) -> None:
    message = _message(rng, ciphertext=bytes(MAX_SENDER_KEY_CIPHERTEXT_LENGTH), iteration=0xFFFF_FFFF)
    assert len(message.serialized) <= MAX_SENDER_KEY_MESSAGE_LENGTH
    assert SenderKeyMessage.deserialize(message.serialized, LIBSIGNAL).iteration == 0xFFFF_FFFF
    with pytest.raises(ValueError):
        _message(rng, ciphertext=bytes(MAX_SENDER_KEY_CIPHERTEXT_LENGTH + 16))


def test_distribution_refusals(rng: DeterministicRng) -> None:
    signing = _signing(rng).public_key
    good = SenderKeyDistributionMessage(LIBSIGNAL, DISTRIBUTION, 1, 2, bytes(32), signing).serialize()
    with pytest.raises(DecodeError):
        SenderKeyDistributionMessage.deserialize(good[:-1], LIBSIGNAL)
    with pytest.raises(DecodeError, match="at most"):
        SenderKeyDistributionMessage.deserialize(good + protobuf.encode_bytes_field(9, bytes(40)), LIBSIGNAL)
    short_key = good.replace(b"\x22\x20" + bytes(32), b"\x22\x1f" + bytes(31))
    with pytest.raises(DecodeError, match="chain key"):
        SenderKeyDistributionMessage.deserialize(short_key, LIBSIGNAL)
    # The signing key as 0x05 ‖ p (the canonical spelling of 0 is 0x05 ‖ 0...0).
    alias = good[:-32] + (2**255 - 19).to_bytes(32, "little")
    with pytest.raises(DecodeError, match="canonical"):
        SenderKeyDistributionMessage.deserialize(alias, LIBSIGNAL)
    wrong_type = good[:-33] + b"\x06" + good[-32:]
    with pytest.raises(DecodeError, match="type byte"):
        SenderKeyDistributionMessage.deserialize(wrong_type, LIBSIGNAL)
    with pytest.raises(DecodeError, match="version byte"):
        SenderKeyDistributionMessage.deserialize(b"\x32" + good[1:], LIBSIGNAL)


def test_constructor_checks(rng: DeterministicRng) -> None:
    signing = _signing(rng).public_key
    with pytest.raises(ValueError):
        SenderKeyDistributionMessage(LIBSIGNAL, None, 1, 2, bytes(32), signing)
    with pytest.raises(ValueError):
        SenderKeyDistributionMessage(AXOLOTL, DISTRIBUTION, 1, 2, bytes(32), signing)
    with pytest.raises(ValueError):
        SenderKeyDistributionMessage(LIBSIGNAL, DISTRIBUTION, -1, 2, bytes(32), signing)
    with pytest.raises(ValueError):
        SenderKeyDistributionMessage(LIBSIGNAL, DISTRIBUTION, 1, 2, bytes(31), signing)
    with pytest.raises(ValueError):
        _message(rng, ciphertext=b"")


def test_repr_redacts_the_chain_key(rng: DeterministicRng) -> None:
    chain_key = bytes(range(100, 132))
    message = SenderKeyDistributionMessage(LIBSIGNAL, DISTRIBUTION, 1, 2, chain_key, _signing(rng).public_key)
    assert chain_key.hex() not in repr(message)
    assert "redacted" in repr(message)


@given(data=st.binary(max_size=300), framing=st.sampled_from(list(SenderKeyFraming)))
def test_arbitrary_bytes_parse_or_raise_decode_error(data: bytes, framing: SenderKeyFraming) -> None:
    for candidate in (data, b"\x33" + data):
        with contextlib.suppress(DecodeError):
            SenderKeyMessage.deserialize(candidate, framing)
        with contextlib.suppress(DecodeError):
            SenderKeyDistributionMessage.deserialize(candidate, framing)


@given(
    chain_id=st.integers(0, 0xFFFF_FFFF),
    iteration=st.integers(0, 0xFFFF_FFFF),
    blocks=st.integers(1, 8),
    framing=st.sampled_from(list(SenderKeyFraming)),
)
def test_round_trip_property(chain_id: int, iteration: int, blocks: int, framing: SenderKeyFraming) -> None:
    rng = DeterministicRng(b"%d/%d" % (chain_id, iteration))
    signing = _signing(rng)
    distribution = DISTRIBUTION if framing is LIBSIGNAL else None
    message = SenderKeyMessage.create(
        framing, distribution, chain_id, iteration, bytes(16 * blocks), signing.private_key, rng
    )
    decoded = SenderKeyMessage.deserialize(message.serialized, framing)
    assert decoded == message
    decoded.verify(signing.public_key)
    offer = SenderKeyDistributionMessage(
        framing, distribution, chain_id, iteration, rng(32), signing.public_key
    )
    assert SenderKeyDistributionMessage.deserialize(offer.serialize(), framing) == offer
    assert PublicKey.deserialize(offer.serialize()[-33:]) == signing.public_key
