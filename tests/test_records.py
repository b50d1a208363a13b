"""Stored records: round trips, the frozen format-1 fixtures, refusal of other kinds, versions and
malformed bytes, and reprs without secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import DeterministicRng
from hypothesis import given
from hypothesis import strategies as st

from e2e.errors import StateFormatError
from e2e.keys import KeyPair, PublicKey
from e2e.records import (
    FORMAT_VERSION,
    IdentityRecord,
    PreKeyRecord,
    SignedPreKeyRecord,
    deserialize_identity,
    serialize_identity,
)
from e2e.session import SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    assert document["format_version"] == FORMAT_VERSION == 1
    return document


def _records(rng: DeterministicRng) -> tuple[IdentityRecord, PreKeyRecord, SignedPreKeyRecord]:
    identity = KeyPair.generate(rng)
    signed = KeyPair.generate(rng)
    return (
        IdentityRecord(identity, 77),
        PreKeyRecord(5, KeyPair.generate(rng)),
        SignedPreKeyRecord(6, signed, identity.sign(signed.public_key.serialize(), rng), 1_700_000_000_000),
    )


def test_round_trips(rng: DeterministicRng) -> None:
    identity, prekey, signed = _records(rng)
    assert IdentityRecord.deserialize(identity.serialize()) == identity
    assert PreKeyRecord.deserialize(prekey.serialize()) == prekey
    assert SignedPreKeyRecord.deserialize(signed.serialize()) == signed
    assert deserialize_identity(serialize_identity(identity.key_pair, 77)) == (identity.key_pair, 77)
    assert [record.serialize()[:2] for record in (identity, prekey, signed)] == [b"I\x01", b"P\x01", b"K\x01"]


@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_round_trip_property(secret: bytes, number: int, timestamp: int) -> None:
    pair = KeyPair.generate(lambda n: secret)
    assert IdentityRecord.deserialize(IdentityRecord(pair, number).serialize()) == IdentityRecord(
        pair, number
    )
    assert PreKeyRecord.deserialize(PreKeyRecord(number, pair).serialize()).id == number
    signed = SignedPreKeyRecord(number, pair, bytes(64), timestamp)
    assert SignedPreKeyRecord.deserialize(signed.serialize()) == signed


def test_frozen_identity_fixture() -> None:
    document = _fixture("identity-v1.json")
    expected = document["expected"]
    key_pair, registration_id = deserialize_identity(bytes.fromhex(document["record"]))
    assert key_pair.private_key.serialize().hex() == expected["private_key"]
    assert key_pair.public_key.serialize().hex() == expected["public_key"]
    assert registration_id == expected["registration_id"]
    assert serialize_identity(key_pair, registration_id).hex() == document["record"]


def test_frozen_prekey_fixture() -> None:
    document = _fixture("prekey-v1.json")
    expected = document["expected"]
    record = PreKeyRecord.deserialize(bytes.fromhex(document["record"]))
    assert record.id == expected["id"]
    assert record.key_pair.private_key.serialize().hex() == expected["private_key"]
    assert record.key_pair.public_key.serialize().hex() == expected["public_key"]
    assert record.serialize().hex() == document["record"]


def test_frozen_signed_prekey_fixture() -> None:
    document = _fixture("signed-prekey-v1.json")
    expected = document["expected"]
    record = SignedPreKeyRecord.deserialize(bytes.fromhex(document["record"]))
    assert (record.id, record.timestamp, record.signature.hex()) == (
        expected["id"],
        expected["timestamp"],
        expected["signature"],
    )
    assert record.key_pair.private_key.serialize().hex() == expected["private_key"]
    assert record.key_pair.public_key.serialize().hex() == expected["public_key"]
    signer = PublicKey.deserialize(bytes.fromhex(expected["signer_identity_key"]))
    signer.verify(record.key_pair.public_key.serialize(), record.signature)
    assert record.serialize().hex() == document["record"]


def test_frozen_session_fixture_decodes_and_still_decrypts(rng: DeterministicRng) -> None:
    document = _fixture("session-v1.json")
    bob_document = document["records"]["bob"]
    data = bytes.fromhex(bob_document["record"])
    assert data[:2] == b"S\x01"
    bob = SessionRecord.deserialize(data)
    assert bob.serialize() == data
    state = bob.current_state
    assert state is not None
    expected = bob_document["expected"]
    assert state.remote_identity_key.serialize().hex() == expected["remote_identity_key"]
    assert (state.local_registration_id, state.remote_registration_id) == (
        expected["local_registration_id"],
        expected["remote_registration_id"],
    )
    assert state.base_key.serialize().hex() == expected["base_key"]
    assert (state.sending_index, state.previous_counter) == (
        expected["sending_index"],
        expected["previous_counter"],
    )
    assert (len(state.receiver_chains), len(state.skipped)) == (
        expected["receiver_chains"],
        expected["skipped_keys"],
    )
    assert len(bob.archived_states) == expected["archived_states"]
    assert (state.pending_prekey is not None) == expected["pending_prekey"]
    for stored in bob_document["stored_messages"]:
        assert stored["type"] == MessageType.WHISPER
        assert bob.decrypt(bytes.fromhex(stored["body"]), rng) == stored["plaintext"].encode()
    assert bob.current_state is not None and not bob.current_state.skipped

    alice_document = document["records"]["alice_pending"]
    alice = SessionRecord.deserialize(bytes.fromhex(alice_document["record"]))
    expected = alice_document["expected"]
    assert alice.their_identity_key is not None
    assert alice.their_identity_key.serialize().hex() == expected["remote_identity_key"]
    assert alice.has_unacknowledged_prekey_message() == expected["pending_prekey"]
    message = alice.encrypt(b"from a restored record", rng)
    assert message.type == expected["next_message_type"]
    header = PreKeySignalMessage.deserialize(message.body)
    assert (header.registration_id, header.signed_pre_key_id) == (
        expected["local_registration_id"],
        expected["signed_pre_key_id"],
    )


@pytest.mark.parametrize("cls", [IdentityRecord, PreKeyRecord, SignedPreKeyRecord])
def test_refusals(cls: Any, rng: DeterministicRng) -> None:
    records = {type(record): record for record in _records(rng)}
    data = records[cls].serialize()
    with pytest.raises(StateFormatError, match="format version 2"):
        cls.deserialize(data[:1] + b"\x02" + data[2:])
    with pytest.raises(StateFormatError, match="expected a stored"):
        cls.deserialize(b"S" + data[1:])
    with pytest.raises(StateFormatError, match="unknown kind"):
        cls.deserialize(b"\x00" + data[1:])
    for length in range(len(data)):
        with pytest.raises(StateFormatError):
            cls.deserialize(data[:length])
    for wrong in (bytearray(data), data.hex(), None):
        with pytest.raises(StateFormatError):
            cls.deserialize(wrong)


def test_mismatched_public_key_is_refused(rng: DeterministicRng) -> None:
    record = PreKeyRecord(5, KeyPair.generate(rng))
    other = KeyPair.generate(rng).public_key.serialize()
    data = record.serialize().replace(record.key_pair.public_key.serialize(), other)
    with pytest.raises(StateFormatError, match="does not belong"):
        PreKeyRecord.deserialize(data)


def test_malformed_fields_are_refused(rng: DeterministicRng) -> None:
    identity, _, signed = _records(rng)
    data = identity.serialize()
    # Field 1 (the private key) with 31 bytes.
    short = data[:2] + b"\x0a\x1f" + data[4:35] + data[36:]
    with pytest.raises(StateFormatError):
        IdentityRecord.deserialize(short)
    with pytest.raises(StateFormatError, match="signature"):
        SignedPreKeyRecord.deserialize(signed.serialize().replace(b"\x22\x40" + signed.signature, b""))
    with pytest.raises(StateFormatError, match="missing"):
        IdentityRecord.deserialize(data[:2])


def test_constructors_validate() -> None:
    pair = KeyPair.generate(lambda n: bytes(range(n)))
    with pytest.raises(ValueError):
        IdentityRecord(pair, 2**32)
    with pytest.raises(ValueError):
        PreKeyRecord(-1, pair)
    with pytest.raises(ValueError):
        SignedPreKeyRecord(1, pair, bytes(63), 0)
    with pytest.raises(ValueError):
        SignedPreKeyRecord(1, pair, bytes(64), -1)


def test_repr_never_shows_private_keys(rng: DeterministicRng) -> None:
    for record in _records(rng):
        text = repr(record) + str(record)
        private = record.key_pair.private_key.serialize()
        assert private.hex() not in text
        assert private.hex()[:8] not in text
        assert record.key_pair.public_key.raw.hex() in text


def _damaged(data: st.DataObject, record: bytearray) -> bytes:
    """``record`` with one byte set to any value, or cut short at any point."""
    position = data.draw(st.integers(0, len(record) - 1))
    if data.draw(st.booleans()):
        record[position] = data.draw(st.integers(0, 255))
    else:
        del record[position:]
    return bytes(record)


@given(st.data())
def test_damaged_session_records_raise_state_format_error_only(data: st.DataObject) -> None:
    """Any byte of a stored record changed, or the record cut short: StateFormatError or a record
    that reads back (some bytes, like a chain index, may take any value)."""
    document = _fixture("session-v1.json")
    record = bytearray(
        bytes.fromhex(document["records"][data.draw(st.sampled_from(["bob", "alice_pending"]))]["record"])
    )
    try:
        restored = SessionRecord.deserialize(_damaged(data, record))
    except StateFormatError:
        return
    assert SessionRecord.deserialize(restored.serialize()).serialize() == restored.serialize()


@given(st.data())
def test_damaged_key_records_raise_state_format_error_only(data: st.DataObject) -> None:
    name, cls = data.draw(
        st.sampled_from(
            [
                ("identity-v1.json", IdentityRecord),
                ("prekey-v1.json", PreKeyRecord),
                ("signed-prekey-v1.json", SignedPreKeyRecord),
            ]
        )
    )
    record = bytearray(bytes.fromhex(_fixture(name)["record"]))
    try:
        restored = cls.deserialize(_damaged(data, record))
    except StateFormatError:
        return
    assert cls.deserialize(restored.serialize()) == restored


def test_frozen_version_4_session_fixture_decodes_and_still_decrypts(rng: DeterministicRng) -> None:
    document: dict[str, Any] = json.loads((FIXTURES / "session-v4.json").read_text())
    assert document["format_version"] == 4
    alice_document = document["records"]["alice_pending"]
    data = bytes.fromhex(alice_document["record"])
    assert data[:2] == b"S\x04"
    alice = SessionRecord.deserialize(data)
    assert alice.serialize() == data
    state = alice.current_state
    assert state is not None
    expected = alice_document["expected"]
    assert (state.session_version, state.agreement) == (expected["session_version"], expected["agreement"])
    assert state.remote_registration_id == expected["remote_registration_id"]
    assert (
        state.pending_prekey is not None
        and state.pending_prekey.kem_pre_key_id == expected["kyber_pre_key_id"]
    )
    for stored in alice_document["stored_messages"]:
        assert stored["type"] == MessageType.WHISPER
        assert alice.decrypt(bytes.fromhex(stored["body"]), rng) == stored["plaintext"].encode()
    assert alice.current_state is not None and alice.current_state.pending_prekey is None

    bob_document = document["records"]["bob"]
    bob = SessionRecord.deserialize(bytes.fromhex(bob_document["record"]))
    assert bob.serialize().hex() == bob_document["record"]
    assert (
        bob.session_version == 4
        and bob.remote_registration_id == bob_document["expected"]["remote_registration_id"]
    )
    for stored in bob_document["stored_messages"]:
        assert stored["type"] == MessageType.PREKEY
        message = PreKeySignalMessage.deserialize(bytes.fromhex(stored["body"]))
        # The base key is known: no prekey is needed to decrypt a repeated PreKey message.
        plaintext = bob.decrypt_prekey_message(
            message,
            KeyPair.generate(rng),
            None,
            None,
            our_registration_id=bob.current_state.local_registration_id if bob.current_state else 0,
        )
        assert plaintext == stored["plaintext"].encode()
