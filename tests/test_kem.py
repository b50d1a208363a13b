"""ML-KEM-1024 through the project's wrapper (e2e.kem) and its pinned-randomness path (e2e.fips203).

Known answers come from ``asymmetric/MLKEM/kat_MLKEM_1024.rsp`` as shipped in the
``cryptography-vectors`` package (pyca, version pinned by the test environment): 1000 NIST-format
records, each with the key-generation seeds ``d`` and ``z``, the encapsulation randomness ``msg``,
the public key ``pk``, a valid ciphertext ``ct`` with its shared secret ``ss``, and an invalid
ciphertext ``ct_n`` with the secret ``ss_n`` that implicit rejection must return for it.
"""

from __future__ import annotations

import hashlib

import pytest
from ml_kem_kat import ml_kem_1024_kat_records

from e2e import fips203
from e2e.errors import DecodeError, E2EError, InvalidKeyError
from e2e.kem import (
    CIPHERTEXT_LENGTH,
    ML_KEM_1024_TYPE,
    PUBLIC_KEY_LENGTH,
    KemCiphertext,
    KemKeyPair,
    KemPrivateKey,
    KemPublicKey,
    encapsulate,
)
from e2e.keys import DJB_TYPE, KeyPair, PublicKey, Rng

# The pure-Python encapsulation takes about 10 ms; this many records keep the test near a second.
ENCAPSULATION_RECORDS = 40


RECORDS = ml_kem_1024_kat_records()


def _fixed(data: bytes) -> Rng:
    """An rng that hands out exactly ``data`` once, and fails the test if asked for anything else."""
    calls: list[int] = []

    def rng(n: int) -> bytes:
        assert not calls and n == len(data), f"unexpected rng({n})"
        calls.append(n)
        return data

    return rng


def test_the_known_answer_file_is_complete() -> None:
    assert len(RECORDS) == 1000
    assert {len(r["pk"]) for r in RECORDS} == {PUBLIC_KEY_LENGTH}
    assert {len(r["ct"]) for r in RECORDS} == {CIPHERTEXT_LENGTH}


def test_key_generation_and_decapsulation_match_every_known_answer() -> None:
    for record in RECORDS:
        key_pair = KemKeyPair.generate(_fixed(record["d"] + record["z"]))
        assert key_pair.public_key.raw == record["pk"], record["count"]
        assert key_pair.public_key.serialize() == bytes((ML_KEM_1024_TYPE,)) + record["pk"]
        assert key_pair.decapsulate(KemCiphertext(record["ct"])) == record["ss"], record["count"]


def test_implicit_rejection_matches_every_known_answer() -> None:
    for record in RECORDS:
        private_key = KemPrivateKey(record["d"] + record["z"])
        # FIPS 203 Algorithm 18: an invalid ciphertext yields J(z ‖ c) = SHAKE256(z ‖ c)[:32].
        expected = hashlib.shake_256(record["z"] + record["ct_n"]).digest(32)
        assert record["ss_n"] == expected
        assert private_key.decapsulate(KemCiphertext(record["ct_n"])) == expected, record["count"]


@pytest.mark.parametrize("record", RECORDS[:ENCAPSULATION_RECORDS], ids=lambda r: r["count"].decode())
def test_encapsulation_with_pinned_randomness_matches_the_known_answer(record: dict[str, bytes]) -> None:
    ciphertext, shared_secret = encapsulate(KemPublicKey(record["pk"]), _fixed(record["msg"]))
    assert ciphertext.raw == record["ct"]
    assert shared_secret == record["ss"]


def test_openssl_encapsulation_round_trips_and_is_fresh_each_time(rng: Rng) -> None:
    key_pair = KemKeyPair.generate(rng)
    first, first_secret = encapsulate(key_pair.public_key)
    second, second_secret = encapsulate(key_pair.public_key)
    assert key_pair.decapsulate(first) == first_secret
    assert key_pair.decapsulate(second) == second_secret
    assert first != second and first_secret != second_secret


def test_pinned_and_openssl_paths_agree_through_decapsulation(rng: Rng) -> None:
    key_pair = KemKeyPair.generate(rng)
    ciphertext, shared_secret = encapsulate(key_pair.public_key, rng)
    assert len(shared_secret) == 32
    assert key_pair.decapsulate(ciphertext) == shared_secret


def test_a_tampered_ciphertext_decapsulates_to_the_implicit_rejection_secret(rng: Rng) -> None:
    seed = rng(64)
    key_pair = KemKeyPair(KemPrivateKey(seed))
    ciphertext, shared_secret = encapsulate(key_pair.public_key)
    for position in (0, 700, CIPHERTEXT_LENGTH - 1):
        tampered = bytearray(ciphertext.raw)
        tampered[position] ^= 0x01
        result = key_pair.decapsulate(KemCiphertext(bytes(tampered)))
        assert result != shared_secret
        assert result == hashlib.shake_256(seed[32:] + bytes(tampered)).digest(32)


def test_keys_come_deterministically_from_the_rng_seed(rng: Rng) -> None:
    seed = rng(64)
    first = KemKeyPair.generate(_fixed(seed))
    second = KemKeyPair(KemPrivateKey(seed))
    assert first == second
    assert first.private_key.serialize() == seed
    assert KemPublicKey.deserialize(first.public_key.serialize()) == first.public_key
    assert hash(first.public_key) == hash(second.public_key)


def test_public_key_encodings_are_disjoint_from_curve25519_encodings(rng: Rng) -> None:
    kem_public = KemKeyPair.generate(rng).public_key.serialize()
    ec_public = KeyPair.generate(rng).public_key.serialize()
    assert kem_public[0] == 0x0A and ec_public[0] == DJB_TYPE
    with pytest.raises(DecodeError):
        PublicKey.deserialize(kem_public)
    with pytest.raises(DecodeError):
        KemPublicKey.deserialize(ec_public)
    # Neither parser accepts the other's type byte even at its own length.
    with pytest.raises(DecodeError):
        KemPublicKey.deserialize(bytes((DJB_TYPE,)) + kem_public[1:])
    with pytest.raises(DecodeError):
        PublicKey.deserialize(bytes((ML_KEM_1024_TYPE,)) + ec_public[1:])


@pytest.mark.parametrize("type_byte", [0x05, 0x07, 0x08, 0x00, 0xFF])
def test_other_kem_type_bytes_are_refused(rng: Rng, type_byte: int) -> None:
    key_pair = KemKeyPair.generate(rng)
    ciphertext, _ = encapsulate(key_pair.public_key)
    with pytest.raises(DecodeError, match="type byte"):
        KemPublicKey.deserialize(bytes((type_byte,)) + key_pair.public_key.raw)
    with pytest.raises(DecodeError, match="type byte"):
        KemCiphertext.deserialize(bytes((type_byte,)) + ciphertext.raw)


@pytest.mark.parametrize("delta", [-1, 1, -PUBLIC_KEY_LENGTH])
def test_wrong_lengths_are_typed_errors(rng: Rng, delta: int) -> None:
    key_pair = KemKeyPair.generate(rng)
    ciphertext, _ = encapsulate(key_pair.public_key)
    serialized_key = key_pair.public_key.serialize()
    serialized_ciphertext = ciphertext.serialize()
    too_long = b"\x00" * max(delta, 0)
    with pytest.raises(DecodeError):
        KemPublicKey.deserialize(serialized_key[: len(serialized_key) + min(delta, 0)] + too_long)
    with pytest.raises(DecodeError):
        KemCiphertext.deserialize(
            serialized_ciphertext[: len(serialized_ciphertext) + min(delta, 0)] + too_long
        )
    with pytest.raises(InvalidKeyError):
        KemPublicKey(key_pair.public_key.raw[: PUBLIC_KEY_LENGTH + min(delta, 0)] + too_long)
    with pytest.raises(InvalidKeyError):
        KemCiphertext(ciphertext.raw[: CIPHERTEXT_LENGTH + min(delta, 0)] + too_long)
    with pytest.raises(InvalidKeyError):
        KemPrivateKey(key_pair.private_key.serialize()[: 64 + min(delta, 0)] + too_long)


def test_a_public_key_with_a_coefficient_not_below_q_is_refused(rng: Rng) -> None:
    raw = bytearray(KemKeyPair.generate(rng).public_key.raw)
    raw[0] = 0xFF
    raw[1] |= 0x0F  # The first 12-bit coefficient becomes 4095 ≥ q = 3329 (FIPS 203 §7.2 modulus check).
    with pytest.raises(InvalidKeyError):
        KemPublicKey(bytes(raw))
    with pytest.raises(DecodeError):
        KemPublicKey.deserialize(bytes((ML_KEM_1024_TYPE,)) + bytes(raw))
    with pytest.raises(ValueError, match="below q"):
        fips203.encaps_internal(bytes(raw), bytes(32))


def test_fips203_checks_its_input_lengths(rng: Rng) -> None:
    raw = KemKeyPair.generate(rng).public_key.raw
    with pytest.raises(ValueError):
        fips203.encaps_internal(raw[:-1], bytes(32))
    with pytest.raises(ValueError):
        fips203.encaps_internal(raw, bytes(31))


def test_a_key_pair_refuses_a_foreign_public_key(rng: Rng) -> None:
    first = KemKeyPair.generate(rng)
    second = KemKeyPair.generate(rng)
    with pytest.raises(InvalidKeyError):
        KemKeyPair(first.private_key, second.public_key)


def test_wrong_argument_types_are_typed_errors(rng: Rng) -> None:
    key_pair = KemKeyPair.generate(rng)
    with pytest.raises(E2EError):
        encapsulate(key_pair.public_key.raw, None)  # type: ignore[arg-type]
    with pytest.raises(E2EError):
        key_pair.decapsulate(b"\x00" * CIPHERTEXT_LENGTH)  # type: ignore[arg-type]


def test_secrets_never_appear_in_repr_or_str(rng: Rng) -> None:
    key_pair = KemKeyPair.generate(rng)
    seed = key_pair.private_key.serialize()
    for text in (repr(key_pair), str(key_pair), repr(key_pair.private_key), str(key_pair.private_key)):
        assert seed.hex() not in text
        assert seed[:8].hex() not in text
        assert "redacted" in text
    # The public key's repr is short: a digest, not 1568 bytes of hex.
    assert len(repr(key_pair.public_key)) < 80
