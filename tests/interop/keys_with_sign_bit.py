"""Identity keys chosen by the sign of their Edwards form, so both XEdDSA signature cases are hit.

libsignal's signers keep the private scalar as it is and store the sign bit of the Edwards public
key ``A = a·B`` in the top bit of the signature (``signature[63] & 0x80``); about half of all keys
have it set.  A verifier that ignores the bit (a spec-literal XEdDSA verifier) fails on exactly
those keys, so every interop test must see keys of both kinds: this draws one deterministically.
"""

from __future__ import annotations

import hashlib

from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

from e2e.keys import PrivateKey


def clamp(scalar: bytes) -> bytes:
    """Clamp as RFC 7748 does: our :class:`PrivateKey` keeps exactly these bytes."""
    return PrivateKey(scalar).serialize()


def edwards_sign_bit(scalar: bytes) -> int:
    """The sign bit (0 or 1) of the Edwards public key of a (clamped) Curve25519 scalar."""
    return crypto_scalarmult_ed25519_base_noclamp(clamp(scalar))[31] >> 7


def scalar_with_sign_bit(seed: bytes, sign_bit: int) -> bytes:
    """The first scalar derived from ``seed`` whose Edwards public key has ``sign_bit``."""
    for counter in range(256):
        scalar = clamp(hashlib.sha256(seed + counter.to_bytes(2, "big")).digest())
        if edwards_sign_bit(scalar) == sign_bit:
            return scalar
    raise AssertionError("no scalar with that sign bit in 256 tries")  # probability 2**-256
