"""ML-KEM-1024 with caller-chosen randomness (FIPS 203 ``ML-KEM.*_internal``), in plain Python.

What this module owns
---------------------
FIPS 203's three internal algorithms for the ML-KEM-1024 parameter set, on the shared lattice
core :mod:`e2e.kpke`:

* :func:`keygen_internal` — Algorithm 16 (``ML-KEM.KeyGen_internal(d, z)``), with
  ``(ρ, σ) = G(d ‖ k)``;
* :func:`encaps_internal` — Algorithm 17 (``ML-KEM.Encaps_internal(ek, m)``);
* :func:`decaps_internal` — Algorithm 18 (``ML-KEM.Decaps_internal(dk, c)``), with implicit
  rejection ``J(z ‖ c)``.

Given the randomness that Algorithms 19 and 20 would draw, each returns exactly what every
conforming implementation computes.

Why it exists
-------------
``cryptography`` (on OpenSSL) offers ML-KEM encapsulation only with randomness OpenSSL draws
itself, so its output cannot be pinned.  Known-answer tests of the KEM and the project's PQXDH
vectors need exactly that: pinned randomness in, fixed bytes out.  :func:`encaps_internal` is the
deterministic path for those vectors (:func:`e2e.kem.encapsulate` reaches it only when a caller
pins the randomness on purpose).  Key generation and decapsulation are here so that the NIST-format
ML-KEM-1024 known-answer file checks every part of :mod:`e2e.kpke`, the core that the round-3
Kyber of :mod:`e2e.kyber` runs on live; the ML-KEM key types of :mod:`e2e.kem` keep using
OpenSSL for both.

What it is not
--------------
Not constant time, and a few hundred times slower than OpenSSL.  ``G`` = SHA3-512, ``H`` =
SHA3-256, ``J`` = SHAKE256 with 32 bytes of output (FIPS 203 §4.1).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from e2e import kpke

__all__ = [
    "ENCAPSULATION_KEY_LENGTH",
    "DECAPSULATION_KEY_LENGTH",
    "CIPHERTEXT_LENGTH",
    "MESSAGE_LENGTH",
    "keygen_internal",
    "encaps_internal",
    "decaps_internal",
]

ENCAPSULATION_KEY_LENGTH: Final = kpke.ENCRYPTION_KEY_LENGTH
"""``ek`` of ML-KEM-1024: 1568 bytes (FIPS 203 §8, Table 3)."""
DECAPSULATION_KEY_LENGTH: Final = kpke.DECRYPTION_KEY_LENGTH + kpke.ENCRYPTION_KEY_LENGTH + 64
"""``dk = dk_PKE ‖ ek ‖ H(ek) ‖ z``: 3168 bytes (Algorithm 16, line 3)."""
CIPHERTEXT_LENGTH: Final = kpke.CIPHERTEXT_LENGTH
"""``c`` of ML-KEM-1024: 1568 bytes (FIPS 203 §8, Table 3)."""
MESSAGE_LENGTH: Final = 32
"""``m``, the randomness of one encapsulation (FIPS 203 Algorithm 20, line 1)."""


def keygen_internal(d: bytes, z: bytes) -> tuple[bytes, bytes]:
    """Algorithm 16: ``(ek, dk)`` from the 32-byte seeds ``d`` and ``z``."""
    if len(d) != 32 or len(z) != 32:
        raise ValueError("d and z are 32 bytes each")
    digest = hashlib.sha3_512(d + bytes((kpke.K,))).digest()
    ek, dk_pke = kpke.keygen(digest[:32], digest[32:])
    return ek, dk_pke + ek + hashlib.sha3_256(ek).digest() + z


def encaps_internal(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """Algorithm 17: ``(K, c)`` for encapsulation key ``ek`` and randomness ``m``.

    Performs the input checks of Algorithm 20 (length, and ``ek`` encoding only integers below
    q); raises :class:`ValueError` when they fail, as the specification requires.
    """
    if len(ek) != ENCAPSULATION_KEY_LENGTH:
        raise ValueError(f"an ML-KEM-1024 encapsulation key is {ENCAPSULATION_KEY_LENGTH} bytes")
    if len(m) != MESSAGE_LENGTH:
        raise ValueError(f"ML-KEM encapsulation randomness is {MESSAGE_LENGTH} bytes")
    kpke.check_encapsulation_key(ek)
    digest = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()
    shared_key, r = digest[:32], digest[32:]
    return shared_key, kpke.encrypt(ek, m, r)


def decaps_internal(dk: bytes, c: bytes) -> bytes:
    """Algorithm 18: the shared key ``K`` for ciphertext ``c``, or ``J(z ‖ c)`` when ``c`` does
    not re-encrypt to itself (implicit rejection).  Checks the lengths (Algorithm 21's input
    checks); raises :class:`ValueError`.
    """
    if len(dk) != DECAPSULATION_KEY_LENGTH or len(c) != CIPHERTEXT_LENGTH:
        raise ValueError(f"dk is {DECAPSULATION_KEY_LENGTH} bytes and c {CIPHERTEXT_LENGTH}")
    dk_pke = dk[: kpke.DECRYPTION_KEY_LENGTH]
    ek = dk[kpke.DECRYPTION_KEY_LENGTH : kpke.DECRYPTION_KEY_LENGTH + ENCAPSULATION_KEY_LENGTH]
    h = dk[-64:-32]
    z = dk[-32:]
    m_prime = kpke.decrypt(dk_pke, c)
    digest = hashlib.sha3_512(m_prime + h).digest()
    k_prime, r_prime = digest[:32], digest[32:]
    k_bar = hashlib.shake_256(z + c).digest(32)
    if hmac.compare_digest(kpke.encrypt(ek, m_prime, r_prime), c):
        return k_prime
    return k_bar
