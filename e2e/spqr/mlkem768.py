"""Incremental ML-KEM-768: the encapsulation key in two parts, the ciphertext in two parts.

What this module owns
---------------------
The KEM of the ML-KEM Braid, as libcrux's ``mlkem768::incremental`` API splits it and Signal's
``spqr`` crate uses it.  It is plain FIPS 203 ML-KEM-768 (``k = 3``, ``η1 = η2 = 2``, ``du = 10``,
``dv = 4``); only the order in which the pieces are computed and sent differs:

* :func:`generate`: a key pair from 64 random bytes ``d ‖ z`` (FIPS 203 Algorithm 16).  The
  encapsulation key ``ek = t̂ ‖ ρ`` (1,184 bytes) is split into the **header**
  ``ρ ‖ H(ek)`` (64 bytes, :data:`HEADER_SIZE`) and the **vector** ``t̂`` (1,152 bytes,
  :data:`VECTOR_SIZE`), the ByteEncode₁₂ of the NTT-domain vector ``t̂``.
* :func:`encaps1`: from the header alone, the first ciphertext part ``c1 = Compress_du(u)``
  (960 bytes) and the shared secret.  ``u = NTT⁻¹(Âᵀ ∘ ŷ) + e1`` needs only the matrix ``Â``,
  which ``ρ`` determines, and the encapsulation randomness; ``(K, r) = G(m ‖ H(ek))`` needs only
  ``H(ek)``.  So the shared secret ``K`` exists before the vector arrives.
* :func:`encaps2`: once the vector has arrived (and matched the header,
  :func:`vector_matches_header`), the second part ``c2 = Compress_dv(v)`` (128 bytes) with
  ``v = NTT⁻¹(t̂ᵀ ∘ ŷ) + e2 + μ``.
* :func:`decaps`: ``c1 ‖ c2`` is an ordinary ML-KEM-768 ciphertext; decapsulation is FIPS 203
  Algorithm 18, done by ``cryptography`` (OpenSSL) from the stored seed, or in pure Python from
  an expanded 2,400-byte key (the form libcrux stores, for states imported from the crate).

Between the two encapsulation steps the encapsulating side keeps an *encapsulation state*.
libcrux keeps ``ŷ``, ``e2`` and ``m`` in its own in-memory layout (2,080 bytes); this module
keeps just ``m`` (32 bytes, :data:`ENCAPS_STATE_SIZE`) and recomputes ``ŷ`` and ``e2`` from it and
the header in :func:`encaps2`, which is exact (they are functions of ``r``) and cheaper to store.

Byte compatibility
------------------
Headers, vectors and ciphertexts are the bytes libcrux produces and consumes.  The tests check
that ``encaps1`` reproduces, from the randomness stored in one of the ``spqr`` crate's own states,
the very ``c1`` libcrux made; that the header is ``ρ ‖ H(ek)`` of the key libcrux stored; and that
for pinned ``m`` the shared secret is FIPS 203's ``G(m ‖ H(ek))`` and OpenSSL's ML-KEM-768
decapsulates ``c1 ‖ c2`` to it.

What it is not
--------------
Not constant time: the encapsulation runs in pure Python (reusing the K-PKE building blocks of
:mod:`e2e.kpke`, which are generic in ``k``), about 2 ms for ``encaps1`` and 1 ms for ``encaps2``, once per
epoch.  Key generation and decapsulation are OpenSSL's.

Notation as FIPS 203: ``G`` = SHA3-512, ``H`` = SHA3-256, ``PRF_η`` = SHAKE256, ``q = 3329``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

from e2e.keys import Rng

# The K-PKE building blocks of e2e.kpke are parameter-free (they work polynomial by polynomial,
# and _dot sums over however many polynomials it is given); only the rank and the compression
# widths below are ML-KEM-768's.
from e2e.kpke import (
    _add,
    _byte_decode,
    _byte_encode,
    _compress,
    _decompress,
    _dot,
    _ntt,
    _ntt_inverse,
    _prf,
    _sample_ntt,
    _sample_poly_cbd,
)

__all__ = [
    "SEED_SIZE",
    "HEADER_SIZE",
    "VECTOR_SIZE",
    "ENCAPSULATION_KEY_SIZE",
    "CIPHERTEXT1_SIZE",
    "CIPHERTEXT2_SIZE",
    "ENCAPS_STATE_SIZE",
    "SHARED_SECRET_SIZE",
    "EXPANDED_KEY_SIZE",
    "Keys",
    "generate",
    "keys_from_seed",
    "vector_matches_header",
    "encaps1",
    "encaps2",
    "decaps",
]

_Q: Final = 3329
_K: Final = 3
_ETA1: Final = 2
_ETA2: Final = 2
_DU: Final = 10
_DV: Final = 4

SEED_SIZE: Final = 64
"""``d ‖ z``, the randomness of key generation (FIPS 203 Algorithm 19)."""
HEADER_SIZE: Final = 64
"""``ρ ‖ H(ek)``: libcrux's ``pk1``."""
VECTOR_SIZE: Final = 384 * _K
"""``ByteEncode₁₂(t̂)``: libcrux's ``pk2``, 1,152 bytes."""
ENCAPSULATION_KEY_SIZE: Final = VECTOR_SIZE + 32
"""The whole FIPS 203 encapsulation key ``t̂ ‖ ρ``, 1,184 bytes."""
CIPHERTEXT1_SIZE: Final = 32 * _DU * _K
"""``c1``, 960 bytes."""
CIPHERTEXT2_SIZE: Final = 32 * _DV
"""``c2``, 128 bytes."""
ENCAPS_STATE_SIZE: Final = 32
"""What this module keeps between :func:`encaps1` and :func:`encaps2`: the message ``m``."""
SHARED_SECRET_SIZE: Final = 32
EXPANDED_KEY_SIZE: Final = 768 * _K + 96
"""An expanded FIPS 203 decapsulation key, 2,400 bytes (libcrux's "compressed" key pair)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """A fresh key pair: the seed (the decapsulation key), the header and the vector."""

    seed: bytes
    header: bytes
    vector: bytes

    def __repr__(self) -> str:
        return f"Keys(seed=<redacted>, header={self.header[:8].hex()}…)"


def keys_from_seed(seed: bytes) -> Keys:
    """The key pair FIPS 203 Algorithm 16 derives from ``seed = d ‖ z``."""
    if len(seed) != SEED_SIZE:
        raise ValueError(f"an ML-KEM seed is {SEED_SIZE} bytes")
    ek = MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    vector, rho = ek[:VECTOR_SIZE], ek[VECTOR_SIZE:]
    return Keys(seed, rho + hashlib.sha3_256(ek).digest(), vector)


def generate(rng: Rng) -> Keys:
    """A new key pair from 64 bytes of ``rng``."""
    return keys_from_seed(rng(SEED_SIZE))


def vector_matches_header(vector: bytes, header: bytes) -> bool:
    """Whether ``vector`` completes ``header`` to a valid encapsulation key.

    The check libcrux's ``validate_pk_bytes`` makes: ``H(vector ‖ ρ)`` equals the hash in the
    header, and the vector encodes only integers below ``q`` (FIPS 203 §7.2, the modulus check).
    """
    if len(vector) != VECTOR_SIZE or len(header) != HEADER_SIZE:
        return False
    if hashlib.sha3_256(vector + header[:32]).digest() != header[32:]:
        return False
    for i in range(_K):
        block = vector[384 * i : 384 * (i + 1)]
        if _byte_encode(_byte_decode(block, 12), 12) != block:
            return False
    return True


def _y_hat(r: bytes) -> list[list[int]]:
    """``ŷ = NTT(y)`` from ``r`` (Algorithm 14, lines 9-12 and 18)."""
    return [_ntt(_sample_poly_cbd(_prf(_ETA1, r, i), _ETA1)) for i in range(_K)]


def _e1(r: bytes) -> list[list[int]]:
    """``e1`` from ``r`` (Algorithm 14, lines 13-16)."""
    return [_sample_poly_cbd(_prf(_ETA2, r, _K + i), _ETA2) for i in range(_K)]


def _e2(r: bytes) -> list[int]:
    """``e2`` from ``r`` (Algorithm 14, line 17)."""
    return _sample_poly_cbd(_prf(_ETA2, r, 2 * _K), _ETA2)


def _check_header(header: bytes) -> None:
    if len(header) != HEADER_SIZE:
        raise ValueError(f"an incremental ML-KEM-768 header is {HEADER_SIZE} bytes")


def _encrypt_c1(rho: bytes, y_hat: list[list[int]], e1: list[list[int]]) -> bytes:
    """``c1 = Compress_du(u)``, ``u = NTT⁻¹(Âᵀ ∘ ŷ) + e1`` (Algorithm 14, lines 4-8, 19, 22).

    Entry ``i`` of ``Âᵀ ∘ ŷ`` sums ``Â[j][i] ∘ ŷ[j]``, and ``Â[j][i] = SampleNTT(ρ ‖ i ‖ j)``.
    """
    c1 = b""
    for i in range(_K):
        column = [_sample_ntt(rho + bytes((i, j))) for j in range(_K)]
        c1 += _byte_encode(_compress(_add(_ntt_inverse(_dot(column, y_hat)), e1[i]), _DU), _DU)
    return c1


def _encrypt_c2(vector: bytes, y_hat: list[list[int]], e2: list[int], m: bytes) -> bytes:
    """``c2 = Compress_dv(v)``, ``v = NTT⁻¹(t̂ᵀ ∘ ŷ) + e2 + μ`` (Algorithm 14, lines 20-23)."""
    t_hat = [_byte_decode(vector[384 * i : 384 * (i + 1)], 12) for i in range(_K)]
    mu = [bit * ((_Q + 1) // 2) for bit in _byte_decode(m, 1)]
    v = _add(_add(_ntt_inverse(_dot(t_hat, y_hat)), e2), mu)
    return _byte_encode(_compress(v, _DV), _DV)


def encaps1(header: bytes, rng: Rng) -> tuple[bytes, bytes, bytes]:
    """``(c1, encapsulation state, shared secret)`` for ``header``, drawing ``m`` from ``rng``."""
    _check_header(header)
    m = rng(32)
    if len(m) != 32:
        raise ValueError("rng returned the wrong number of bytes")
    digest = hashlib.sha3_512(m + header[32:]).digest()
    shared_secret, r = digest[:32], digest[32:]
    return _encrypt_c1(header[:32], _y_hat(r), _e1(r)), m, shared_secret


def encaps2(vector: bytes, header: bytes, encaps_state: bytes) -> bytes:
    """``c2`` for the vector that completes ``header``, continuing :func:`encaps1`'s state.

    The caller checks :func:`vector_matches_header` first, as the crate does.
    """
    _check_header(header)
    if len(vector) != VECTOR_SIZE or len(encaps_state) != ENCAPS_STATE_SIZE:
        raise ValueError("wrong vector or encapsulation state length")
    r = hashlib.sha3_512(encaps_state + header[32:]).digest()[32:]
    return _encrypt_c2(vector, _y_hat(r), _e2(r), encaps_state)


def _decaps_expanded(dk: bytes, c1: bytes, c2: bytes) -> bytes:
    """Algorithm 18 (``ML-KEM.Decaps_internal``) on an expanded decapsulation key."""
    dk_pke, ek = dk[: 384 * _K], dk[384 * _K : 768 * _K + 32]
    h, z = dk[768 * _K + 32 : 768 * _K + 64], dk[768 * _K + 64 :]
    # K-PKE.Decrypt (Algorithm 15): w = v' − NTT⁻¹(ŝᵀ ∘ NTT(u')), m' = ByteEncode₁(Compress₁(w)).
    u = [_decompress(_byte_decode(c1[320 * i : 320 * (i + 1)], _DU), _DU) for i in range(_K)]
    v = _decompress(_byte_decode(c2, _DV), _DV)
    s_hat = [_byte_decode(dk_pke[384 * i : 384 * (i + 1)], 12) for i in range(_K)]
    product = _ntt_inverse(_dot(s_hat, [_ntt(p) for p in u]))
    w = [(a - b) % _Q for a, b in zip(v, product, strict=True)]
    m = _byte_encode(_compress(w, 1), 1)
    digest = hashlib.sha3_512(m + h).digest()
    shared_secret, r = digest[:32], digest[32:]
    y_hat, e1, e2 = _y_hat(r), _e1(r), _e2(r)
    rejected = hashlib.shake_256(z + c1 + c2).digest(32)
    reencrypted = _encrypt_c1(ek[384 * _K :], y_hat, e1) + _encrypt_c2(ek[: 384 * _K], y_hat, e2, m)
    return shared_secret if hmac.compare_digest(reencrypted, c1 + c2) else rejected


def decaps(dk: bytes, c1: bytes, c2: bytes) -> bytes:
    """The shared secret of ``c1 ‖ c2`` (FIPS 203 Algorithm 18).

    ``dk`` is a 64-byte seed (what :func:`generate` makes; OpenSSL decapsulates) or a
    2,400-byte expanded decapsulation key ``dk_PKE ‖ ek ‖ H(ek) ‖ z`` (what libcrux stores;
    decapsulated here in pure Python, used only for states imported from elsewhere).
    """
    if (
        len(dk) not in (SEED_SIZE, EXPANDED_KEY_SIZE)
        or len(c1) != CIPHERTEXT1_SIZE
        or len(c2) != CIPHERTEXT2_SIZE
    ):
        raise ValueError("wrong decapsulation key or ciphertext length")
    if len(dk) == EXPANDED_KEY_SIZE:
        return _decaps_expanded(dk, c1, c2)
    return MLKEM768PrivateKey.from_seed_bytes(dk).decapsulate(c1 + c2)
