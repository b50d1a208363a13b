"""KemPreKeyRecord (e2e.records): the stored form of a signed ML-KEM-1024 prekey."""

from __future__ import annotations

import pytest

from e2e import protobuf
from e2e.errors import StateFormatError
from e2e.kem import KemKeyPair
from e2e.keys import KeyPair, Rng
from e2e.records import KemPreKeyRecord, PreKeyRecord


def _record(rng: Rng, last_resort: bool = False) -> KemPreKeyRecord:
    identity = KeyPair.generate(rng)
    key_pair = KemKeyPair.generate(rng)
    return KemPreKeyRecord(
        77, key_pair, identity.sign(key_pair.public_key.serialize(), rng), 1_700_000_000_000, last_resort
    )


@pytest.mark.parametrize("last_resort", [False, True])
def test_round_trip(rng: Rng, last_resort: bool) -> None:
    record = _record(rng, last_resort)
    stored = record.serialize()
    assert stored[:2] == b"Q\x01"
    restored = KemPreKeyRecord.deserialize(stored)
    assert restored == record
    assert restored.last_resort is last_resort
    assert restored.serialize() == stored


def test_repr_hides_the_seed(rng: Rng) -> None:
    record = _record(rng)
    seed = record.key_pair.private_key.serialize()
    assert seed.hex() not in repr(record) and seed[:8].hex() not in repr(record)
    assert "id=77" in repr(record) and "last_resort=False" in repr(record)


def test_a_public_key_that_does_not_match_the_seed_is_refused(rng: Rng) -> None:
    record = _record(rng)
    other = KemKeyPair.generate(rng).public_key.serialize()
    stored = record.serialize().replace(record.key_pair.public_key.serialize(), other)
    with pytest.raises(StateFormatError, match="does not belong"):
        KemPreKeyRecord.deserialize(stored)


def test_malformed_records_are_refused(rng: Rng) -> None:
    record = _record(rng)
    stored = record.serialize()
    seed = record.key_pair.private_key.serialize()
    bad = {
        "short seed": stored.replace(
            protobuf.encode_bytes_field(2, seed), protobuf.encode_bytes_field(2, seed[:63])
        ),
        "short signature": stored.replace(
            protobuf.encode_bytes_field(4, record.signature),
            protobuf.encode_bytes_field(4, record.signature[:63]),
        ),
        "no signature": stored.replace(protobuf.encode_bytes_field(4, record.signature), b""),
        "flag 2": stored[:-1] + b"\x02",
        "truncated": stored[:-3],
        "version 2": b"Q\x02" + stored[2:],
        "wrong type byte": stored.replace(b"\x1a\xa1\x0c\x0a", b"\x1a\xa1\x0c\x08"),
    }
    for name, data in bad.items():
        assert data != stored, name
        with pytest.raises(StateFormatError):
            KemPreKeyRecord.deserialize(data)
    with pytest.raises(StateFormatError, match="expected a stored KEM prekey"):
        KemPreKeyRecord.deserialize(PreKeyRecord(1, KeyPair.generate(rng)).serialize())
    with pytest.raises(StateFormatError, match="expected a stored prekey"):
        PreKeyRecord.deserialize(stored)


def test_constructor_checks(rng: Rng) -> None:
    record = _record(rng)
    with pytest.raises(ValueError):
        KemPreKeyRecord(-1, record.key_pair, record.signature, 0)
    with pytest.raises(ValueError):
        KemPreKeyRecord(1, record.key_pair, record.signature[:10], 0)
    with pytest.raises(ValueError):
        KemPreKeyRecord(1, record.key_pair, record.signature, 0, 1)  # type: ignore[arg-type]
