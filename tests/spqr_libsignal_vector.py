"""The pinned v4 + SPQR vector that libsignal decrypts: how it is generated.

Alice (this implementation) starts a v4 session with Bob's bundle (PQXDH with a Kyber-1024
prekey) and sends a burst of 16 messages before hearing back, so every message is a
PreKeySignalMessage whose field 5 carries SPQR's first header chunks and, from the fourth on,
parity chunks of the header.  Every key and all randomness come from one
:class:`~e2e.vectors.SeededRng`, so the file is reproducible byte for byte; Bob's private keys are
in it, so a libsignal party holding them decrypts every message (``tests/interop``).  A burst
cannot leave SPQR's epoch 1 (the braid needs Bob's answers), so this vector checks PQXDH v4, the
v4 message keys salted with SPQR's epoch-0 chain keys, and the ``HDR`` messages; the two-way runs
in ``tests/interop/test_spqr_libsignal.py`` check the rest.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from parties import Party

from e2e.kyber import KyberKeyPair
from e2e.protobuf import encode_bytes_field, encode_uint_field
from e2e.session import SessionRecord
from e2e.spqr import SpqrRatchetFactory
from e2e.vectors import SeededRng

VECTOR = Path(__file__).parent / "fixtures" / "spqr" / "libsignal-burst-v1.json"
SEED = b"spqr-libsignal-vector"
MESSAGES = 16
KYBER_PRE_KEY_ID = 901


def kyber_record(key_id: int, pair: KyberKeyPair, signature: bytes) -> bytes:
    """libsignal's KyberPreKeyRecord bytes: ``SignedPreKeyRecordStructure`` {1 id, 2 public key,
    3 private key, 4 signature, 5 timestamp (fixed64)}, timestamp 0."""
    return (
        encode_uint_field(1, key_id)
        + encode_bytes_field(2, pair.public_key.serialize())
        + encode_bytes_field(3, pair.private_key.serialize())
        + encode_bytes_field(4, signature)
        + bytes((5 << 3 | 1,))
        + bytes(8)
    )


def generate() -> dict[str, Any]:
    rng = SeededRng(SEED)
    bob = Party.create(rng, 2000, one_time=1)
    kyber = KyberKeyPair.generate(rng)
    kyber_signature = bob.identity.sign(kyber.public_key.serialize(), rng)
    alice = Party.create(rng, 1000, one_time=0)
    bundle = dataclasses.replace(
        bob.bundle(rng),
        kem_pre_key_id=KYBER_PRE_KEY_ID,
        kem_pre_key=kyber.public_key,
        kem_pre_key_signature=kyber_signature,
    )
    record = SessionRecord.initiate(
        alice.identity, 1000, bundle, rng, pq_ratchet_factory=SpqrRatchetFactory()
    )
    messages = []
    for i in range(MESSAGES):
        plaintext = b"message %d of the burst" % i
        messages.append({"plaintext": plaintext.hex(), "body": record.encrypt(plaintext, rng).body.hex()})
    ((pre_key_id, pre_key),) = bob.one_time_pre_keys.items()
    return {
        "description": "v4 + SPQR burst, Alice to Bob, pinned randomness (tests/spqr_libsignal_vector.py)",
        "rng": "e2e.vectors.SeededRng(b'spqr-libsignal-vector')",
        "bob": {
            "registration_id": 2000,
            "identity_private": bob.identity.private_key.serialize().hex(),
            "signed_pre_key_id": bob.signed_pre_key_id,
            "signed_pre_key_private": bob.signed_pre_key.private_key.serialize().hex(),
            "signed_pre_key_signature": bundle.signed_pre_key_signature.hex(),
            "pre_key_id": pre_key_id,
            "pre_key_private": pre_key.private_key.serialize().hex(),
            "kyber_pre_key_id": KYBER_PRE_KEY_ID,
            "kyber_record": kyber_record(KYBER_PRE_KEY_ID, kyber, kyber_signature).hex(),
        },
        "alice": {"registration_id": 1000, "identity_public": alice.identity.public_key.serialize().hex()},
        "messages": messages,
    }


def stored() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTOR.read_text())
    return document
