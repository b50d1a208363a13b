"""Test helpers for the signed KEM prekey records of e2e.records (ML-KEM-1024 and Kyber1024)."""

from __future__ import annotations

from e2e.kem import KemKeyPair
from e2e.keys import KeyPair, Rng
from e2e.kyber import KyberKeyPair
from e2e.records import KemPreKeyRecord, KyberPreKeyRecord

# Each kind of signed KEM prekey record: its class, its key pair class and its header.
KINDS = {
    "KEM": (KemPreKeyRecord, KemKeyPair, b"Q\x01"),
    "Kyber": (KyberPreKeyRecord, KyberKeyPair, b"Y\x01"),
}


def signed_kem_record(
    rng: Rng, kind: str = "KEM", last_resort: bool = False
) -> KemPreKeyRecord | KyberPreKeyRecord:
    """A record of ``kind`` with id 77, signed by a fresh identity key."""
    record_class, key_pair_class, _ = KINDS[kind]
    identity = KeyPair.generate(rng)
    key_pair = key_pair_class.generate(rng)
    signature = identity.sign(key_pair.public_key.serialize(), rng)
    return record_class(77, key_pair, signature, 1_700_000_000_000, last_resort)
