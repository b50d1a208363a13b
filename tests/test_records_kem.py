"""KemPreKeyRecord and KyberPreKeyRecord (e2e.records): the stored forms of signed KEM prekeys.

The tests they share run on both; the Kyber-only ones (frozen fixture, libsignal's secret key) are
in ``test_records_kyber.py``.
"""

from __future__ import annotations

import pytest
from signed_kem_records import KINDS, signed_kem_record

from e2e import protobuf
from e2e.errors import StateFormatError
from e2e.kem import KemKeyPair
from e2e.keys import KeyPair, Rng
from e2e.records import KemPreKeyRecord, PreKeyRecord


def _record(rng: Rng, last_resort: bool = False) -> KemPreKeyRecord:
    record = signed_kem_record(rng, "KEM", last_resort)
    assert isinstance(record, KemPreKeyRecord)
    return record


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("last_resort", [False, True])
def test_round_trip(rng: Rng, kind: str, last_resort: bool) -> None:
    record_class, _, record_header = KINDS[kind]
    record = signed_kem_record(rng, kind, last_resort)
    stored = record.serialize()
    assert stored[:2] == record_header
    restored = record_class.deserialize(stored)
    assert restored == record
    assert restored.last_resort is last_resort
    assert restored.serialize() == stored


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_repr_shows_the_public_parts_only(rng: Rng, kind: str) -> None:
    record = signed_kem_record(rng, kind)
    record_class, _, _ = KINDS[kind]
    assert repr(record) == (
        f"{record_class.__name__}(id=77, public_key={record.key_pair.public_key!r}, "
        f"signature={record.signature.hex()[:16]}…, timestamp=1700000000000, last_resort=False)"
    )
    assert "private_key" not in repr(record)


def test_repr_hides_the_seed(rng: Rng) -> None:
    record = _record(rng)
    seed = record.key_pair.private_key.serialize()
    assert seed.hex() not in repr(record) and seed[:8].hex() not in repr(record)
    assert "id=77" in repr(record) and "last_resort=False" in repr(record)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_malformed_common_fields_are_refused(rng: Rng, kind: str) -> None:
    record_class, _, record_header = KINDS[kind]
    record = signed_kem_record(rng, kind)
    stored = record.serialize()
    bad = {
        "short signature": stored.replace(
            protobuf.encode_bytes_field(4, record.signature),
            protobuf.encode_bytes_field(4, record.signature[:63]),
        ),
        "no signature": stored.replace(protobuf.encode_bytes_field(4, record.signature), b""),
        "flag 2": stored[:-1] + b"\x02",
        "truncated": stored[:-3],
        "version 2": record_header[:1] + b"\x02" + stored[2:],
    }
    for name, data in bad.items():
        assert data != stored, name
        with pytest.raises(StateFormatError):
            record_class.deserialize(data)


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


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_constructor_checks(rng: Rng, kind: str) -> None:
    record_class, _, _ = KINDS[kind]
    record = signed_kem_record(rng, kind)
    with pytest.raises(ValueError):
        record_class(-1, record.key_pair, record.signature, 0)
    with pytest.raises(ValueError):
        record_class(1, record.key_pair, record.signature[:10], 0)
    with pytest.raises(ValueError):
        record_class(1, record.key_pair, record.signature, 0, last_resort=1)  # type: ignore[arg-type]
    other_kind = signed_kem_record(rng, "Kyber" if kind == "KEM" else "KEM")
    with pytest.raises(ValueError, match="record holds a"):
        record_class(1, other_kind.key_pair, record.signature, 0)
