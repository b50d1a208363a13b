"""ML-KEM-1024 encapsulation with caller-chosen randomness (FIPS 203 ``ML-KEM.Encaps_internal``).

What this module owns
---------------------
One function, :func:`encaps_internal`: FIPS 203 Algorithm 17 (``ML-KEM.Encaps_internal``) with
Algorithm 14 (``K-PKE.Encrypt``) for the ML-KEM-1024 parameter set, written in plain Python.
Given an encapsulation key ``ek`` and the 32-byte message ``m`` that ``ML-KEM.Encaps``
(Algorithm 20) would draw from its random bit generator, it returns the shared key ``K`` and the
ciphertext ``c``, bit for bit what every conforming implementation computes for the same ``m``.

Why it exists
-------------
``cryptography`` (on OpenSSL) offers ML-KEM encapsulation only with randomness OpenSSL draws
itself, so its output cannot be pinned.  Known-answer tests of the KEM and the project's PQXDH
vectors need exactly that: pinned randomness in, fixed bytes out.  This module is the
deterministic path for those vectors and nothing else.  Its results are cross-checked against the
NIST-format ML-KEM-1024 known-answer file and against OpenSSL's decapsulation in the tests.

What it is not
--------------
Not constant time and a few hundred times slower than OpenSSL: live sessions never use it
(:func:`e2e.kem.encapsulate` reaches it only when a caller pins the randomness on purpose).
It implements neither key generation nor decapsulation: OpenSSL's ``from_seed`` key generation
is already deterministic (FIPS 203 Algorithm 16 takes ``d ‖ z``) and decapsulation takes no
randomness, so both are tested directly against the known-answer file.

Notation follows FIPS 203: ``q = 3329``, ``n = 256``; for ML-KEM-1024 ``k = 4``, ``η1 = η2 = 2``,
``du = 11``, ``dv = 5``; ``G`` = SHA3-512, ``H`` = SHA3-256, ``PRF_η(s, b)`` = SHAKE256(s ‖ b)
truncated to ``64·η`` bytes, ``XOF`` = SHAKE128.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["ENCAPSULATION_KEY_LENGTH", "CIPHERTEXT_LENGTH", "MESSAGE_LENGTH", "encaps_internal"]

_Q: Final = 3329
_N: Final = 256
_K: Final = 4
_ETA1: Final = 2
_ETA2: Final = 2
_DU: Final = 11
_DV: Final = 5

ENCAPSULATION_KEY_LENGTH: Final = 384 * _K + 32
"""``ek`` of ML-KEM-1024: 1568 bytes (FIPS 203 §8, Table 3)."""
CIPHERTEXT_LENGTH: Final = 32 * (_DU * _K + _DV)
"""``c`` of ML-KEM-1024: 1568 bytes (FIPS 203 §8, Table 3)."""
MESSAGE_LENGTH: Final = 32
"""``m``, the randomness of one encapsulation (FIPS 203 Algorithm 20, line 1)."""

Poly = list[int]


def _bit_reverse7(value: int) -> int:
    return int(f"{value:07b}"[::-1], 2)


# ζ^BitRev7(i) for the NTT (FIPS 203 §4.3, Appendix A) and ζ^(2·BitRev7(i)+1) for the
# base-case products (Algorithm 11), with ζ = 17, the 256th root of unity modulo q.
_ZETAS: Final = [pow(17, _bit_reverse7(i), _Q) for i in range(128)]
_GAMMAS: Final = [pow(17, 2 * _bit_reverse7(i) + 1, _Q) for i in range(128)]
_N_INVERSE: Final = 3303
"""128⁻¹ mod q, the final scaling of the inverse NTT (Algorithm 10, line 14)."""


def _ntt(f: Poly) -> Poly:
    """Algorithm 9: the number-theoretic transform, in place on a copy."""
    f = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, _N, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % _Q
                f[j + length] = (f[j] - t) % _Q
                f[j] = (f[j] + t) % _Q
        length //= 2
    return f


def _ntt_inverse(f: Poly) -> Poly:
    """Algorithm 10: the inverse transform."""
    f = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, _N, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % _Q
                f[j + length] = zeta * (f[j + length] - t) % _Q
        length *= 2
    return [x * _N_INVERSE % _Q for x in f]


def _multiply_ntts(f: Poly, g: Poly) -> Poly:
    """Algorithms 11 and 12: the product of two polynomials in the NTT domain."""
    h = [0] * _N
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % _Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % _Q
    return h


def _add(f: Poly, g: Poly) -> Poly:
    return [(a + b) % _Q for a, b in zip(f, g, strict=True)]


def _sample_ntt(seed: bytes) -> Poly:
    """Algorithm 7: rejection-sample a uniform NTT-domain polynomial from SHAKE128(seed)."""
    coefficients: Poly = []
    length = 168 * 5
    while True:
        stream = hashlib.shake_128(seed).digest(length)
        coefficients.clear()
        for offset in range(0, length - 2, 3):
            c0, c1, c2 = stream[offset], stream[offset + 1], stream[offset + 2]
            d1 = c0 + 256 * (c1 % 16)
            d2 = c1 // 16 + 16 * c2
            if d1 < _Q:
                coefficients.append(d1)
            if d2 < _Q and len(coefficients) < _N:
                coefficients.append(d2)
            if len(coefficients) == _N:
                return coefficients
        # Vanishingly rare: read a longer prefix of the same XOF stream and start over.
        length += 168


def _sample_poly_cbd(data: bytes, eta: int) -> Poly:
    """Algorithm 8: a centred-binomial polynomial from ``64·η`` bytes."""
    bits = int.from_bytes(data, "little")
    mask = (1 << eta) - 1
    f = []
    for i in range(_N):
        chunk = bits >> (2 * eta * i)
        x = (chunk & mask).bit_count()
        y = ((chunk >> eta) & mask).bit_count()
        f.append((x - y) % _Q)
    return f


def _prf(eta: int, seed: bytes, counter: int) -> bytes:
    return hashlib.shake_256(seed + bytes((counter,))).digest(64 * eta)


def _byte_encode(f: Poly, d: int) -> bytes:
    """Algorithm 5: pack 256 ``d``-bit integers, least significant bit first."""
    packed = 0
    for i, value in enumerate(f):
        packed |= value << (d * i)
    return packed.to_bytes(32 * d, "little")


def _byte_decode(data: bytes, d: int) -> Poly:
    """Algorithm 6: unpack 256 ``d``-bit integers (reduced modulo q when ``d = 12``)."""
    packed = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    modulus = _Q if d == 12 else 1 << d
    return [((packed >> (d * i)) & mask) % modulus for i in range(_N)]


def _compress(f: Poly, d: int) -> Poly:
    """§4.2.1: ``round(2^d / q · x) mod 2^d`` (q is odd, so no value lies exactly on a half)."""
    return [(((x << d) + _Q // 2) // _Q) % (1 << d) for x in f]


def _k_pke_encrypt(ek: bytes, m: bytes, r: bytes) -> bytes:
    """Algorithm 14: ``K-PKE.Encrypt(ek, m, r)``."""
    t_hat = [_byte_decode(ek[384 * i : 384 * (i + 1)], 12) for i in range(_K)]
    rho = ek[384 * _K :]
    # Â[i][j] = SampleNTT(ρ ‖ j ‖ i) (lines 4-8).
    a_hat = [[_sample_ntt(rho + bytes((j, i))) for j in range(_K)] for i in range(_K)]
    counter = 0
    y = []
    for _ in range(_K):
        y.append(_sample_poly_cbd(_prf(_ETA1, r, counter), _ETA1))
        counter += 1
    e1 = []
    for _ in range(_K):
        e1.append(_sample_poly_cbd(_prf(_ETA2, r, counter), _ETA2))
        counter += 1
    e2 = _sample_poly_cbd(_prf(_ETA2, r, counter), _ETA2)
    y_hat = [_ntt(p) for p in y]
    # u = NTT⁻¹(Âᵀ ∘ ŷ) + e1 (line 19): entry i sums Â[j][i] · ŷ[j] over j.
    u = []
    for i in range(_K):
        accumulator = [0] * _N
        for j in range(_K):
            accumulator = _add(accumulator, _multiply_ntts(a_hat[j][i], y_hat[j]))
        u.append(_add(_ntt_inverse(accumulator), e1[i]))
    # μ = Decompress_1(ByteDecode_1(m)) (line 20): each bit becomes 0 or ⌈q/2⌉.
    mu = [bit * ((_Q + 1) // 2) for bit in _byte_decode(m, 1)]
    accumulator = [0] * _N
    for j in range(_K):
        accumulator = _add(accumulator, _multiply_ntts(t_hat[j], y_hat[j]))
    v = _add(_add(_ntt_inverse(accumulator), e2), mu)
    c1 = b"".join(_byte_encode(_compress(p, _DU), _DU) for p in u)
    c2 = _byte_encode(_compress(v, _DV), _DV)
    return c1 + c2


def encaps_internal(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """Algorithm 17: ``(K, c)`` for encapsulation key ``ek`` and randomness ``m``.

    Performs the input checks of Algorithm 20 (length, and ``ek`` encoding only integers below
    q); raises :class:`ValueError` when they fail, as the specification requires.
    """
    if len(ek) != ENCAPSULATION_KEY_LENGTH:
        raise ValueError(f"an ML-KEM-1024 encapsulation key is {ENCAPSULATION_KEY_LENGTH} bytes")
    if len(m) != MESSAGE_LENGTH:
        raise ValueError(f"ML-KEM encapsulation randomness is {MESSAGE_LENGTH} bytes")
    for i in range(_K):
        block = ek[384 * i : 384 * (i + 1)]
        if _byte_encode(_byte_decode(block, 12), 12) != block:
            raise ValueError("the encapsulation key encodes an integer that is not below q")
    digest = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()
    shared_key, r = digest[:32], digest[32:]
    return shared_key, _k_pke_encrypt(ek, m, r)
