"""Incremental ML-KEM-768: the split key and ciphertext are FIPS 203 ML-KEM-768, checked against
OpenSSL's decapsulation; the pure-Python decapsulation of expanded keys agrees with OpenSSL's,
implicit rejection included; the header check refuses every foreign vector."""

from __future__ import annotations

import hashlib

import pytest
from conftest import DeterministicRng
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.spqr import mlkem768


def _expanded(seed: bytes) -> bytes:
    # The expanded FIPS 203 key dk_PKE ‖ ek ‖ H(ek) ‖ z is not exported by OpenSSL; rebuild it
    # from K-PKE key generation (Algorithm 13) to test the expanded-key path.
    from e2e.kpke import _byte_encode, _ntt, _prf, _sample_poly_cbd

    d, z = seed[:32], seed[32:]
    rho_sigma = hashlib.sha3_512(d + bytes((3,))).digest()
    sigma = rho_sigma[32:]
    s_hat = [_ntt(_sample_poly_cbd(_prf(2, sigma, i), 2)) for i in range(3)]
    ek = MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    dk_pke = b"".join(_byte_encode(p, 12) for p in s_hat)
    return dk_pke + ek + hashlib.sha3_256(ek).digest() + z


@settings(max_examples=10, deadline=None)
@given(st.binary(min_size=64, max_size=64), st.binary(min_size=32, max_size=32))
def test_split_encapsulation_is_ml_kem_768(seed: bytes, m: bytes) -> None:
    keys = mlkem768.keys_from_seed(seed)
    ek = MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    assert keys.vector + keys.header[:32] == ek
    assert keys.header[32:] == hashlib.sha3_256(ek).digest()
    assert mlkem768.vector_matches_header(keys.vector, keys.header)
    c1, state, shared = mlkem768.encaps1(keys.header, lambda n: m[:n])
    c2 = mlkem768.encaps2(keys.vector, keys.header, state)
    assert len(c1) == 960 and len(c2) == 128 and len(shared) == 32
    # FIPS 203: K = G(m ‖ H(ek))[:32]; OpenSSL decapsulates the concatenation to the same K.
    assert shared == hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()[:32]
    assert MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(c1 + c2) == shared
    assert mlkem768.decaps(seed, c1, c2) == shared


def test_expanded_key_decapsulation_matches_openssl_including_rejection() -> None:
    rng = DeterministicRng(b"mlkem768-expanded")
    keys = mlkem768.generate(rng)
    expanded = _expanded(keys.seed)
    assert expanded[1152 : 1152 + 1152] == keys.vector
    c1, state, shared = mlkem768.encaps1(keys.header, rng)
    c2 = mlkem768.encaps2(keys.vector, keys.header, state)
    assert mlkem768.decaps(expanded, c1, c2) == shared
    tampered = bytes([c2[0] ^ 1]) + c2[1:]
    rejected = mlkem768.decaps(keys.seed, c1, tampered)
    assert rejected != shared
    assert mlkem768.decaps(expanded, c1, tampered) == rejected


def test_a_vector_that_does_not_match_the_header_is_refused() -> None:
    rng = DeterministicRng(b"mlkem768-mismatch")
    keys, other = mlkem768.generate(rng), mlkem768.generate(rng)
    assert not mlkem768.vector_matches_header(other.vector, keys.header)
    assert not mlkem768.vector_matches_header(keys.vector[:-1], keys.header)
    for position in (0, 500, 1151):
        flipped = bytearray(keys.vector)
        flipped[position] ^= 0x10
        assert not mlkem768.vector_matches_header(bytes(flipped), keys.header)


def test_a_vector_encoding_integers_above_q_is_refused() -> None:
    # 12 bits of 0xFFF (4095 ≥ q) in the first coefficient, with a header that hashes it.
    rng = DeterministicRng(b"mlkem768-modulus")
    keys = mlkem768.generate(rng)
    vector = b"\xff\x0f" + keys.vector[2:]
    header = keys.header[:32] + hashlib.sha3_256(vector + keys.header[:32]).digest()
    assert not mlkem768.vector_matches_header(vector, header)


def test_wrong_lengths_raise() -> None:
    rng = DeterministicRng(b"mlkem768-lengths")
    keys = mlkem768.generate(rng)
    with pytest.raises(ValueError):
        mlkem768.encaps1(keys.header[:63], rng)
    with pytest.raises(ValueError):
        mlkem768.encaps2(keys.vector, keys.header, bytes(31))
    with pytest.raises(ValueError):
        mlkem768.decaps(keys.seed[:63], bytes(960), bytes(128))
    with pytest.raises(ValueError):
        mlkem768.keys_from_seed(bytes(63))


def test_keys_repr_redacts_the_seed() -> None:
    keys = mlkem768.keys_from_seed(b"\x5a" * 64)
    assert "5a5a" not in repr(keys) and "redacted" in repr(keys)
