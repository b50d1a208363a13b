"""The lattice public-key encryption at the heart of both Kyber-1024 (round 3) and ML-KEM-1024.

What this module owns
---------------------
The IND-CPA public-key encryption scheme that CRYSTALS-Kyber's round-3 specification (version
3.02, §1.2, Algorithms 4-6, ``Kyber.CPAPKE``) and FIPS 203 (§5, Algorithms 13-15, ``K-PKE``) both
define, for the parameter set with ``k = 4`` (Kyber1024 / ML-KEM-1024), written in plain Python:

* :func:`keygen` — ``K-PKE.KeyGen`` from the two 32-byte seeds ``(ρ, σ)``;
* :func:`encrypt` — ``K-PKE.Encrypt(ek, m, r)``;
* :func:`decrypt` — ``K-PKE.Decrypt(dk, c)``;
* :func:`check_encapsulation_key` — FIPS 203 §7.2's modulus check on ``ek``.

Why one core for two KEMs
-------------------------
The two schemes share this layer bit for bit: the same NTT, the same sampling of ``Â`` from
``ρ`` (``Â[i][j] = SampleNTT(ρ ‖ j ‖ i)``), the same centred-binomial noise from
``PRF(σ, N)``, the same compression and byte encodings.  Where they differ is only above it, in
how the seeds and the shared key are hashed: round 3 derives ``(ρ, σ) = G(d)`` while FIPS 203
derives ``G(d ‖ k)``; round 3 hashes the random message (``m = H(m)``) and the ciphertext into its
key, FIPS 203 does neither.  Those transforms live in :mod:`e2e.kyber` and :mod:`e2e.fips203`, and
the known-answer files of *both* standards check this module (the round-3 NIST KAT for Kyber1024
and FIPS 203's ML-KEM-1024 file), so a fault here cannot hide behind one of them.

Notation follows FIPS 203: ``q = 3329``, ``n = 256``; ``k = 4``, ``η1 = η2 = 2``, ``du = 11``,
``dv = 5``; ``PRF_η(s, b)`` = SHAKE256(s ‖ b) truncated to ``64·η`` bytes; ``XOF`` = SHAKE128.
Polynomials are lists of 256 integers in ``[0, q)``.

What it is not
--------------
Not constant time: Python's integers and lists branch and allocate on their values.  A few
milliseconds per operation (``benchmarks/kem_bench.py`` measures it); the ML-KEM side of the
project uses OpenSSL for its live operations and this module only for pinned-randomness vectors.
It knows nothing of keys' encodings beyond the bytes of ``ek``, ``dk`` and ``c``.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = [
    "K",
    "SEED_LENGTH",
    "MESSAGE_LENGTH",
    "ENCRYPTION_KEY_LENGTH",
    "DECRYPTION_KEY_LENGTH",
    "CIPHERTEXT_LENGTH",
    "keygen",
    "encrypt",
    "decrypt",
    "check_encapsulation_key",
]

_Q: Final = 3329
_N: Final = 256
K: Final = 4
"""The module rank of Kyber1024 / ML-KEM-1024."""
_ETA1: Final = 2
_ETA2: Final = 2
_DU: Final = 11
_DV: Final = 5

SEED_LENGTH: Final = 32
"""The length of ``ρ``, ``σ``, ``m`` and ``r``."""
MESSAGE_LENGTH: Final = 32
ENCRYPTION_KEY_LENGTH: Final = 384 * K + 32
"""``ek = ByteEncode12(t̂) ‖ ρ``: 1568 bytes."""
DECRYPTION_KEY_LENGTH: Final = 384 * K
"""``dk = ByteEncode12(ŝ)``: 1536 bytes."""
CIPHERTEXT_LENGTH: Final = 32 * (_DU * K + _DV)
"""``c = c1 ‖ c2``: 1568 bytes."""

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
    """Algorithm 9: the number-theoretic transform, on a copy.

    Only the products are reduced modulo q inside the loops; sums and differences are left to grow
    (by at most a factor 2^7 over the seven layers, well inside Python's small integers) and are
    reduced once at the end, which gives the same values with a third of the reductions.
    """
    f = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, _N, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % _Q
                a = f[j]
                f[j + length] = a - t
                f[j] = a + t
        length //= 2
    return [x % _Q for x in f]


def _ntt_inverse(f: Poly) -> Poly:
    """Algorithm 10: the inverse transform, on a copy (sums reduced lazily, as in :func:`_ntt`)."""
    f = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, _N, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                b = f[j + length]
                f[j] = t + b
                f[j + length] = zeta * (b - t) % _Q
        length *= 2
    return [x * _N_INVERSE % _Q for x in f]


def _dot(row: list[Poly], vector: list[Poly]) -> Poly:
    """``Σ_j row[j] × vector[j]`` in the NTT domain (Algorithms 11 and 12, summed over ``j``).

    The sum is reduced modulo q once per coefficient, after all ``k`` products.
    """
    h = [0] * _N
    for f, g in zip(row, vector, strict=True):
        for i in range(128):
            a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
            h[2 * i] += a0 * b0 + a1 * b1 % _Q * _GAMMAS[i]
            h[2 * i + 1] += a0 * b1 + a1 * b0
    return [x % _Q for x in h]


def _add(f: Poly, g: Poly) -> Poly:
    return [(a + b) % _Q for a, b in zip(f, g, strict=True)]


def _sample_ntt(seed: bytes) -> Poly:
    """Algorithm 7: rejection-sample a uniform NTT-domain polynomial from SHAKE128(seed).

    Every 3 bytes ``c0, c1, c2`` of the stream give two 12-bit candidates ``d1 = c0 + 256·(c1 mod
    16)`` and ``d2 = ⌊c1 / 16⌋ + 16·c2``; those below q are kept until there are 256.
    """
    length = 168 * 5
    while True:
        stream = hashlib.shake_128(seed).digest(length)
        coefficients: Poly = []
        append = coefficients.append
        for c0, c1, c2 in zip(stream[0::3], stream[1::3], stream[2::3], strict=False):
            d1 = c0 | (c1 & 0x0F) << 8
            if d1 < _Q:
                append(d1)
            d2 = c1 >> 4 | c2 << 4
            if d2 < _Q:
                append(d2)
            if len(coefficients) >= _N:
                # A d2 found beside the 256th coefficient is not part of the polynomial.
                return coefficients[:_N]
        # Rare: read a longer prefix of the same XOF stream and start over.
        length += 168


def _cbd2_pair(byte: int) -> tuple[int, int]:
    """The two coefficients that one byte gives in Algorithm 8 with η = 2: each nibble's low two
    bits counted minus its high two bits counted, modulo q."""
    low, high = byte & 0x0F, byte >> 4
    return (
        ((low & 3).bit_count() - (low >> 2).bit_count()) % _Q,
        ((high & 3).bit_count() - (high >> 2).bit_count()) % _Q,
    )


_CBD2: Final = [_cbd2_pair(byte) for byte in range(256)]


def _sample_poly_cbd(data: bytes, eta: int) -> Poly:
    """Algorithm 8: a centred-binomial polynomial from ``64·η`` bytes.

    For η = 2, the only value Kyber1024 and ML-KEM-1024 use (η1 = η2 = 2), every byte holds two
    coefficients of 4 bits each, read least significant bit first, and a 256-entry table maps a
    byte to its two coefficients.
    """
    if eta != 2 or len(data) != 128:
        raise ValueError("this parameter set samples with η = 2 from 128 bytes")
    return [value for byte in data for value in _CBD2[byte]]


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


def _decompress(f: Poly, d: int) -> Poly:
    """§4.2.1: ``round(q / 2^d · y)``."""
    half = 1 << (d - 1)
    return [(y * _Q + half) >> d for y in f]


def _matrix(rho: bytes) -> list[list[Poly]]:
    """``Â[i][j] = SampleNTT(ρ ‖ j ‖ i)`` (Algorithm 13 lines 3-7, Algorithm 14 lines 4-8)."""
    return [[_sample_ntt(rho + bytes((j, i))) for j in range(K)] for i in range(K)]


def _noise(seed: bytes, eta: int, first: int, count: int) -> list[Poly]:
    return [_sample_poly_cbd(_prf(eta, seed, first + n), eta) for n in range(count)]


def check_encapsulation_key(ek: bytes) -> None:
    """FIPS 203 §7.2's input checks on ``ek``: its length, and ``ByteEncode12(ByteDecode12(t̂))``
    giving back the same bytes (every coefficient below q).  Raises :class:`ValueError`.
    """
    if len(ek) != ENCRYPTION_KEY_LENGTH:
        raise ValueError(f"an encapsulation key is {ENCRYPTION_KEY_LENGTH} bytes")
    for i in range(K):
        block = ek[384 * i : 384 * (i + 1)]
        if _byte_encode(_byte_decode(block, 12), 12) != block:
            raise ValueError("the encapsulation key encodes an integer that is not below q")


def keygen(rho: bytes, sigma: bytes) -> tuple[bytes, bytes]:
    """``K-PKE.KeyGen`` (FIPS 203 Algorithm 13 from line 2; Kyber v3.02 Algorithm 4 from line 2):
    ``(ek, dk)`` from the public seed ``ρ`` and the noise seed ``σ``.
    """
    if len(rho) != SEED_LENGTH or len(sigma) != SEED_LENGTH:
        raise ValueError(f"ρ and σ are {SEED_LENGTH} bytes each")
    a_hat = _matrix(rho)
    s_hat = [_ntt(p) for p in _noise(sigma, _ETA1, 0, K)]
    e_hat = [_ntt(p) for p in _noise(sigma, _ETA1, K, K)]
    # t̂ = Â ∘ ŝ + ê (line 18).
    t_hat = [_add(_dot(a_hat[i], s_hat), e_hat[i]) for i in range(K)]
    ek = b"".join(_byte_encode(p, 12) for p in t_hat) + rho
    dk = b"".join(_byte_encode(p, 12) for p in s_hat)
    return ek, dk


def encrypt(ek: bytes, m: bytes, r: bytes) -> bytes:
    """``K-PKE.Encrypt(ek, m, r)`` (FIPS 203 Algorithm 14; Kyber v3.02 Algorithm 5).

    ``ek`` must already have passed :func:`check_encapsulation_key` (the KEMs check it first).
    """
    if len(m) != MESSAGE_LENGTH or len(r) != SEED_LENGTH:
        raise ValueError(f"m and r are {MESSAGE_LENGTH} bytes each")
    t_hat = [_byte_decode(ek[384 * i : 384 * (i + 1)], 12) for i in range(K)]
    a_hat = _matrix(ek[384 * K :])
    y_hat = [_ntt(p) for p in _noise(r, _ETA1, 0, K)]
    e1 = _noise(r, _ETA2, K, K)
    e2 = _noise(r, _ETA2, 2 * K, 1)[0]
    # u = NTT⁻¹(Âᵀ ∘ ŷ) + e1 (line 19): entry i sums Â[j][i] · ŷ[j] over j.
    u = [_add(_ntt_inverse(_dot([a_hat[j][i] for j in range(K)], y_hat)), e1[i]) for i in range(K)]
    # μ = Decompress_1(ByteDecode_1(m)) (line 20): each bit becomes 0 or ⌈q/2⌉.
    mu = [bit * ((_Q + 1) // 2) for bit in _byte_decode(m, 1)]
    v = _add(_add(_ntt_inverse(_dot(t_hat, y_hat)), e2), mu)
    c1 = b"".join(_byte_encode(_compress(p, _DU), _DU) for p in u)
    c2 = _byte_encode(_compress(v, _DV), _DV)
    return c1 + c2


def decrypt(dk: bytes, c: bytes) -> bytes:
    """``K-PKE.Decrypt(dk, c)`` (FIPS 203 Algorithm 15; Kyber v3.02 Algorithm 6): the 32-byte ``m``."""
    if len(dk) != DECRYPTION_KEY_LENGTH or len(c) != CIPHERTEXT_LENGTH:
        raise ValueError(f"dk is {DECRYPTION_KEY_LENGTH} bytes and c {CIPHERTEXT_LENGTH}")
    step = 32 * _DU
    u = [_decompress(_byte_decode(c[step * i : step * (i + 1)], _DU), _DU) for i in range(K)]
    v = _decompress(_byte_decode(c[step * K :], _DV), _DV)
    s_hat = [_byte_decode(dk[384 * i : 384 * (i + 1)], 12) for i in range(K)]
    # w = v − NTT⁻¹(ŝᵀ ∘ NTT(u)) (line 6), then m = ByteEncode_1(Compress_1(w)) (line 7).
    product = _ntt_inverse(_dot(s_hat, [_ntt(p) for p in u]))
    w = [(a - b) % _Q for a, b in zip(v, product, strict=True)]
    return _byte_encode(_compress(w, 1), 1)
