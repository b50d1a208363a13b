"""Kyber-1024 round 3 (e2e.kyber) on the shared lattice core (e2e.kpke).

Known answers: the round-3 NIST KAT for Kyber1024, ``PQCkemKAT_3168.rsp``, regenerated here in full
from NIST's AES-256 CTR_DRBG seeded as ``PQCgenKAT_kem.c`` seeds it, and checked against digests
published by others:

* ``5afcf2a5…8f60``: SHA-256 of record 0 as the NIST generator prints it — pq-crystals/kyber, branch
  ``round3``, ``Kyber1024_META.yml`` (``nistkat-sha256``), and open-quantum-safe/liboqs
  ``tests/KATs/kem/kats.json`` (``Kyber1024.single``);
* ``b72b97eb…3a46``: SHA-256 of all 100 records in liboqs's framing (records separated by a blank
  line, no header) — liboqs ``tests/KATs/kem/kats.json`` (``Kyber1024.all``);
* ``19d96c22…cd2a``: SHA-256 of cryspen/libcrux's ``libcrux-ml-kem/tests/kats/nistkats_kyber_1024.json``,
  the same 100 records as libcrux (the Kyber implementation libsignal uses) keeps them: both seeds
  and the SHA3-256 of ``pk``, ``sk`` and ``ct`` with ``ss``, regenerated here byte for byte.

The same run gives the SHA-256 of the file in NIST's own framing (``# Kyber1024`` header, a blank
line after every record), recorded here as ``89248f2f…6cd5``.  ``tests/vectors/nist_kyber1024_kat.json``
keeps five records; libsignal's own Kyber1024 key pair (``rust/protocol/src/kem/test-data``) is read
in its serialization.  The ML-KEM-1024 file of ``cryptography-vectors`` checks the core's key
generation and decryption through :mod:`e2e.fips203` as well, so both standards test one core.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ml_kem_kat import ml_kem_1024_kat_records

from e2e import fips203, kpke, kyber
from e2e.errors import DecodeError, E2EError, InvalidKeyError
from e2e.kem import KemKeyPair
from e2e.kyber import (
    KYBER_1024_TYPE,
    KyberCiphertext,
    KyberKeyPair,
    KyberPrivateKey,
    KyberPublicKey,
    encapsulate,
)
from e2e.vectors.nist_drbg import NistDrbg

PUBLISHED_RECORD_0_SHA256 = "5afcf2a568ad32d49b55105b032af1850f03f3888ff9e2a72f4059c58e968f60"
PUBLISHED_ALL_RECORDS_SHA256 = "b72b97eb9270d76f2c7a8a0b03022c81c879af9e247abff52405127d77dd3a46"
NIST_FILE_SHA256 = "89248f2f33f7f4f7051729111f3049c409a933ec904aedadf035f30fa5646cd5"
# cryspen/libcrux, libcrux-ml-kem/tests/kats/nistkats_kyber_1024.json at
# 9018f21fd60168e2c324a5dd7974d9b3f757067e: the same records as SHA3-256 digests and shared secrets.
LIBCRUX_KATS_SHA256 = "19d96c2257696115bed32ef74cc779902e93b48289c508771a6e0ea91781cd2a"

# The digests of the two files at signalapp/libsignal 11047fc27c10a81dde908a072a1b67d56d723534.
LIBSIGNAL_PK_SHA256 = "3c78727462f5ab3dbf9ff8caf38171ebfec3f017bcfb39cc030d252d4d7ca98f"
LIBSIGNAL_SK_SHA256 = "69897e702697cf1052134100db411817fa596fe388039c27a9e3ffc0d6b51ac5"
FIXTURES = Path(__file__).parent / "fixtures" / "libsignal-kyber1024"


def _record(count: int, seed: bytes) -> tuple[str, dict[str, str]]:
    """One KAT record as the NIST generator prints it, and as libcrux's JSON file has it."""
    drbg = NistDrbg(seed)
    d, z = drbg(32), drbg(32)
    encapsulation_seed = drbg(32)
    pk, sk = kyber.keygen_internal(d, z)
    ss, ct = kyber.encaps_internal(pk, encapsulation_seed)
    assert kyber.decaps_internal(sk, ct) == ss, count
    lines = [f"count = {count}"] + [
        f"{name} = {value.hex().upper()}"
        for name, value in (("seed", seed), ("pk", pk), ("sk", sk), ("ct", ct), ("ss", ss))
    ]
    libcrux = {
        "key_generation_seed": (d + z).hex(),
        "sha3_256_hash_of_public_key": hashlib.sha3_256(pk).hexdigest(),
        "sha3_256_hash_of_secret_key": hashlib.sha3_256(sk).hexdigest(),
        "encapsulation_seed": encapsulation_seed.hex(),
        "sha3_256_hash_of_ciphertext": hashlib.sha3_256(ct).hexdigest(),
        "shared_secret": ss.hex(),
    }
    return "\n".join(lines) + "\n", libcrux


def test_the_regenerated_known_answer_file_matches_the_published_digests() -> None:
    master = NistDrbg(bytes(range(48)))
    records, libcrux = zip(*(_record(count, master(48)) for count in range(100)), strict=True)
    assert hashlib.sha256(records[0].encode()).hexdigest() == PUBLISHED_RECORD_0_SHA256
    assert hashlib.sha256("\n".join(records).encode()).hexdigest() == PUBLISHED_ALL_RECORDS_SHA256
    nist_file = "# Kyber1024\n\n" + "".join(record + "\n" for record in records)
    assert hashlib.sha256(nist_file.encode()).hexdigest() == NIST_FILE_SHA256
    # The same 100 records in libcrux's format: libcrux is the Kyber libsignal runs.
    libcrux_file = json.dumps(list(libcrux), indent=4)
    assert hashlib.sha256(libcrux_file.encode()).hexdigest() == LIBCRUX_KATS_SHA256


def test_the_drbg_reproduces_the_first_published_seed() -> None:
    # Record 0's seed as PQCkemKAT_3168.rsp prints it.
    assert NistDrbg(bytes(range(48)))(48).hex().upper() == (
        "061550234D158C5EC95595FE04EF7A25767F2E24CC2BC479D09D86DC9ABCFDE7056A8C266F9EF97ED08541DBD2E1FFA1"
    )


def test_the_shared_core_also_passes_the_fips_203_known_answers() -> None:
    # Key generation, encapsulation and both outcomes of decapsulation, through e2e.kpke.
    for record in ml_kem_1024_kat_records()[:25]:
        ek, dk = fips203.keygen_internal(record["d"], record["z"])
        assert (ek, dk) == (record["pk"], record["sk"])
        assert fips203.encaps_internal(ek, record["msg"]) == (record["ss"], record["ct"])
        assert fips203.decaps_internal(dk, record["ct"]) == record["ss"]
        assert fips203.decaps_internal(dk, record["ct_n"]) == record["ss_n"]


def test_round_3_and_fips_203_differ_for_the_same_seeds() -> None:
    d, z, m = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
    kyber_pk, kyber_sk = kyber.keygen_internal(d, z)
    ml_kem_pk, _ = fips203.keygen_internal(d, z)
    assert kyber_pk != ml_kem_pk
    # Same key, same m: round 3 hashes m first and the ciphertext into the key.
    kyber_ss, kyber_ct = kyber.encaps_internal(kyber_pk, m)
    ml_kem_ss, ml_kem_ct = fips203.encaps_internal(kyber_pk, m)
    assert kyber_ct != ml_kem_ct and kyber_ss != ml_kem_ss
    # The lattice layer is the same: with round 3's m = H(m), FIPS 203's ciphertext is round 3's.
    _, same_ct = fips203.encaps_internal(kyber_pk, hashlib.sha3_256(m).digest())
    assert same_ct == kyber_ct
    assert kyber.decaps_internal(kyber_sk, kyber_ct) == kyber_ss


def test_implicit_rejection_is_kdf_of_z_and_the_hash_of_the_ciphertext() -> None:
    pk, sk = kyber.keygen_internal(bytes(32), bytes(range(32)))
    ss, ct = kyber.encaps_internal(pk, bytes(32))
    for position in (0, 700, len(ct) - 1):
        tampered = bytearray(ct)
        tampered[position] ^= 0x01
        rejected = kyber.decaps_internal(sk, bytes(tampered))
        z = sk[-32:]
        assert rejected == hashlib.shake_256(z + hashlib.sha3_256(bytes(tampered)).digest()).digest(32)
        assert rejected != ss


def test_libsignals_kyber1024_key_pair_reads_and_works() -> None:
    # libsignal rust/protocol/src/kem/test-data/{pk,sk}.dat (its test_kyber1024_kem reads them).
    pk = bytes.fromhex((FIXTURES / "pk.hex").read_text().replace("\n", ""))
    sk = bytes.fromhex((FIXTURES / "sk.hex").read_text().replace("\n", ""))
    assert hashlib.sha256(pk).hexdigest() == LIBSIGNAL_PK_SHA256
    assert hashlib.sha256(sk).hexdigest() == LIBSIGNAL_SK_SHA256
    public_key = KyberPublicKey.deserialize(bytes((KYBER_1024_TYPE,)) + pk)
    private_key = KyberPrivateKey.deserialize(bytes((KYBER_1024_TYPE,)) + sk)
    assert private_key.public_key() == public_key
    assert private_key.serialize() == bytes((KYBER_1024_TYPE,)) + sk
    counter = iter(range(256))
    ciphertext, secret = encapsulate(public_key, lambda n: bytes([next(counter)]) * n)
    assert private_key.decapsulate(ciphertext) == secret


def _seeded(seed: bytes) -> NistDrbg:
    return NistDrbg(hashlib.sha384(seed).digest())


def test_key_pairs_use_exactly_the_callers_randomness() -> None:
    requests: list[int] = []

    def rng(n: int) -> bytes:
        requests.append(n)
        return bytes(range(n))

    key_pair = KyberKeyPair.generate(rng)
    assert requests == [64]
    expected_pk, expected_sk = kyber.keygen_internal(bytes(range(32)), bytes(range(32, 64)))
    assert key_pair.public_key.raw == expected_pk
    assert key_pair.private_key.serialize() == b"\x08" + expected_sk
    ciphertext, secret = encapsulate(key_pair.public_key, rng)
    assert requests == [64, 32]
    assert (secret, ciphertext.raw) == kyber.encaps_internal(expected_pk, bytes(range(32)))
    assert key_pair.decapsulate(ciphertext) == secret


def test_libsignal_encodings() -> None:
    key_pair = KyberKeyPair.generate(_seeded(b"encodings"))
    ciphertext, _ = encapsulate(key_pair.public_key, _seeded(b"m"))
    assert len(key_pair.public_key.serialize()) == 1569 and key_pair.public_key.serialize()[0] == 0x08
    assert len(ciphertext.serialize()) == 1569 and ciphertext.serialize()[0] == 0x08
    assert len(key_pair.private_key.serialize()) == 3169
    assert KyberPublicKey.deserialize(key_pair.public_key.serialize()) == key_pair.public_key
    assert KyberCiphertext.deserialize(ciphertext.serialize()) == ciphertext
    assert KyberPrivateKey.deserialize(key_pair.private_key.serialize()) == key_pair.private_key


@pytest.mark.parametrize(
    ("parse", "length"),
    [
        (KyberPublicKey.deserialize, 1569),
        (KyberCiphertext.deserialize, 1569),
        (KyberPrivateKey.deserialize, 3169),
    ],
)
def test_wrong_lengths_and_type_bytes_are_typed_errors(parse, length) -> None:  # type: ignore[no-untyped-def]
    good = KyberKeyPair.generate(_seeded(b"good"))
    valid = {
        1569: good.public_key.serialize(),
        3169: good.private_key.serialize(),
    }[length]
    if parse is KyberCiphertext.deserialize:
        valid = encapsulate(good.public_key, _seeded(b"c"))[0].serialize()
    parse(valid)
    for bad in (b"", valid[:-1], valid + b"\x00", valid[1:]):
        with pytest.raises(DecodeError):
            parse(bad)
    for type_byte in (0x05, 0x07, 0x0A, 0x09):
        with pytest.raises(DecodeError, match="type byte"):
            parse(bytes((type_byte,)) + valid[1:])


def test_an_ml_kem_key_is_not_a_kyber_key() -> None:
    ml_kem = KemKeyPair.generate(_seeded(b"ml-kem")).public_key.serialize()
    with pytest.raises(DecodeError, match="0x0a"):
        KyberPublicKey.deserialize(ml_kem)


def test_a_public_key_with_a_coefficient_not_below_q_is_refused() -> None:
    raw = bytearray(KyberKeyPair.generate(_seeded(b"q")).public_key.raw)
    raw[0], raw[1] = 0xFF, raw[1] | 0x0F  # the first 12-bit coefficient becomes 4095
    with pytest.raises(DecodeError, match="below q"):
        KyberPublicKey.deserialize(b"\x08" + bytes(raw))
    with pytest.raises(InvalidKeyError):
        KyberPublicKey(bytes(raw))
    with pytest.raises(ValueError):
        kyber.encaps_internal(bytes(raw), bytes(32))


def test_a_secret_key_whose_public_key_hash_does_not_match_is_refused() -> None:
    sk = bytearray(KyberKeyPair.generate(_seeded(b"h")).private_key.serialize())
    sk[1 + kpke.DECRYPTION_KEY_LENGTH + 5] ^= 0x01  # a byte of the embedded public key
    with pytest.raises(DecodeError, match="hash"):
        KyberPrivateKey.deserialize(bytes(sk))


def test_wrong_argument_types_and_lengths_raise() -> None:
    key_pair = KyberKeyPair.generate(_seeded(b"types"))
    with pytest.raises(InvalidKeyError):
        key_pair.decapsulate(b"\x08" + bytes(1568))  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        encapsulate(key_pair.public_key.serialize(), _seeded(b"x"))  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        KyberCiphertext(bytes(1567))
    with pytest.raises(InvalidKeyError):
        KyberKeyPair(key_pair.private_key, KyberKeyPair.generate(_seeded(b"other")).public_key)
    with pytest.raises(ValueError):
        kyber.decaps_internal(bytes(3168), bytes(1567))
    with pytest.raises(ValueError):
        kyber.keygen_internal(bytes(31), bytes(32))
    # Every error of the module is an E2EError, so callers can catch them together.
    assert issubclass(DecodeError, E2EError) and issubclass(InvalidKeyError, E2EError)


def test_reprs_never_show_secret_bytes() -> None:
    key_pair = KyberKeyPair.generate(_seeded(b"repr"))
    secret_hex = key_pair.private_key.serialize()[1:].hex()
    for text in (repr(key_pair), repr(key_pair.private_key)):
        assert "redacted" in text
        assert secret_hex[:16] not in text and secret_hex[-16:] not in text


@settings(max_examples=8, deadline=None)
@given(st.binary(min_size=64, max_size=64), st.binary(min_size=32, max_size=32))
def test_decapsulation_inverts_encapsulation(seed: bytes, m: bytes) -> None:
    pk, sk = kyber.keygen_internal(seed[:32], seed[32:])
    ss, ct = kyber.encaps_internal(pk, m)
    assert kyber.decaps_internal(sk, ct) == ss
    assert len(ss) == 32 and len(ct) == 1568
