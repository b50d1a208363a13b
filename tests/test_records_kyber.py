"""KyberPreKeyRecord (e2e.records): the stored form of a signed Kyber-1024 prekey.

The round trip, repr and constructor checks it shares with KemPreKeyRecord are in
``test_records_kem.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from signed_kem_records import signed_kem_record

from e2e import protobuf
from e2e.errors import StateFormatError
from e2e.keys import PublicKey, Rng
from e2e.kyber import KyberKeyPair
from e2e.records import KemPreKeyRecord, KyberPreKeyRecord

FIXTURE = Path(__file__).parent / "fixtures" / "kyber-prekey-v1.json"


def _record(rng: Rng, last_resort: bool = False) -> KyberPreKeyRecord:
    record = signed_kem_record(rng, "Kyber", last_resort)
    assert isinstance(record, KyberPreKeyRecord)
    return record


def test_the_frozen_fixture_still_reads() -> None:
    document = json.loads(FIXTURE.read_text())
    assert document["format_version"] == 1
    record = KyberPreKeyRecord.deserialize(bytes.fromhex(document["record"]))
    expected = document["expected"]
    assert (record.id, record.timestamp, record.last_resort) == (
        expected["id"],
        expected["timestamp"],
        expected["last_resort"],
    )
    assert hashlib.sha256(record.key_pair.public_key.serialize()).hexdigest() == expected["public_key_sha256"]
    assert (
        hashlib.sha256(record.key_pair.private_key.serialize()).hexdigest() == expected["secret_key_sha256"]
    )
    signer = PublicKey.deserialize(bytes.fromhex(expected["signer_identity_key"]))
    signer.verify(record.key_pair.public_key.serialize(), record.signature)
    assert record.serialize().hex() == document["record"]


def test_repr_hides_the_secret_key(rng: Rng) -> None:
    record = _record(rng)
    secret = record.key_pair.private_key.serialize()
    assert secret[1:9].hex() not in repr(record) and secret[-8:].hex() not in repr(record)
    assert "id=77" in repr(record) and "last_resort=False" in repr(record)


def test_malformed_records_are_refused(rng: Rng) -> None:
    record = _record(rng)
    stored = record.serialize()
    secret = record.key_pair.private_key.serialize()
    public = record.key_pair.public_key.serialize()
    other_public = KyberKeyPair.generate(rng).public_key.serialize()
    tampered_secret = bytearray(secret)
    tampered_secret[1600] ^= 1  # a byte of the public key inside the secret key: H(pk) no longer matches
    bad = {
        "another public key": stored.replace(public, other_public),
        "tampered secret key": stored.replace(secret, bytes(tampered_secret)),
        "short secret key": stored.replace(
            protobuf.encode_bytes_field(2, secret), protobuf.encode_bytes_field(2, secret[:-1])
        ),
        "ML-KEM type byte": stored.replace(public, b"\x0a" + public[1:]),
    }
    for name, data in bad.items():
        assert data != stored, name
        with pytest.raises(StateFormatError):
            KyberPreKeyRecord.deserialize(data)
    with pytest.raises(StateFormatError, match="expected a stored KEM prekey, found a Kyber prekey"):
        KemPreKeyRecord.deserialize(stored)
