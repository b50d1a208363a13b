"""Curve25519 keys, in libsignal's encoding, and XEdDSA signatures made with them.

What this module owns
---------------------
* :class:`PublicKey`: a Curve25519 (Montgomery ``u``) public key.  On the wire libsignal
  writes it as the type byte ``0x05`` followed by the 32 key bytes (:meth:`PublicKey.serialize`);
  :meth:`PublicKey.deserialize` accepts exactly that and nothing else.
* :class:`PrivateKey`: a Curve25519 private scalar, clamped on construction as RFC 7748 §5 and
  libsignal do, so that the bytes we store are the bytes every implementation uses.
* :class:`KeyPair`: the two together.  An identity key pair is an ordinary :class:`KeyPair`.
* Diffie-Hellman (:meth:`PrivateKey.agree`), which refuses an all-zero result: that is what
  a low-order or otherwise malicious public key produces (X3DH §4.7 / RFC 7748 §6.1).
* XEdDSA signatures (Signal's XEdDSA and VXEdDSA specification, revision 1, §2.3 and §3),
  with libsignal's one deviation kept for compatibility (see below), and the specification's own
  convention beside it (:meth:`PrivateKey.sign_as_specified`, :meth:`PublicKey.verify_as_specified`)
  for checking against implementations and vectors that follow the text.
* :func:`verify_ed25519`: plain Ed25519 verification (RFC 8032 §5.1.7), the last step of every
  XEdDSA verification, exposed so that it can be checked against Ed25519's own vectors.

XEdDSA in brief
---------------
A Montgomery private scalar ``a`` is also an Edwards scalar: ``A = a·B`` on edwards25519 is the
birationally equivalent point of the Montgomery public key ``u``, up to the sign of its ``x``
coordinate, which the Montgomery form forgets.  Signing is Schnorr on Edwards25519:

* ``r = hash1(a ‖ M ‖ Z) mod q`` where ``hash1`` is SHA-512 over the prefix ``0xFE ‖ 0xFF×31``
  and ``Z`` is 64 fresh random bytes (the specification's nonce hardening);
* ``R = r·B``, ``h = SHA-512(R ‖ A ‖ M) mod q``, ``s = r + h·a mod q``; the signature is ``R ‖ s``.

The specification makes the signer negate ``a`` whenever ``A``'s sign bit is 1, so that the
verifier can always assume sign 0.  libsignal instead keeps ``a`` and stores ``A``'s sign bit in
the otherwise unused top bit of ``s`` (``signature[63] & 0x80``).  Its verifiers read that bit to
rebuild ``A``.  (libsignal also hashes the clamped scalar as it is into ``r``, where the
specification hashes ``a`` reduced modulo ``q``, so the two conventions give different signatures
for every key, though a libsignal verifier accepts both.)

We sign and verify the libsignal way, which is the only way that both verifies
libsignal's signatures and produces signatures that every libsignal verifies.  Verification
then is plain Ed25519 verification against the rebuilt ``A`` (RFC 8032 §5.1.7, without the
cofactor), for which we use libsodium through PyNaCl (about twice as fast here as OpenSSL's
through ``cryptography``), as we do for the Edwards scalar multiplications of signing and for
deriving public keys and for Diffie-Hellman.

What this module does not know
------------------------------
Where randomness comes from: every function that needs some takes an ``rng`` callable
(``rng(n)`` returns ``n`` random bytes).  Callers pass :func:`os.urandom`; known-answer tests
pass a deterministic source.  It also knows nothing of prekeys, sessions or storage.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from nacl.bindings import (
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_sign_open,
)
from nacl.exceptions import CryptoError

from e2e.errors import DecodeError, InvalidKeyError, InvalidSignatureError

__all__ = [
    "DJB_TYPE",
    "KEY_LENGTH",
    "SIGNATURE_LENGTH",
    "Rng",
    "PublicKey",
    "PrivateKey",
    "KeyPair",
    "verify_ed25519",
]

Rng = Callable[[int], bytes]
"""A source of randomness: ``rng(n)`` returns ``n`` bytes.  Pass ``os.urandom`` outside tests."""

DJB_TYPE = 0x05
"""libsignal's type byte for a Curve25519 public key (``Curve.DJB_TYPE``)."""

KEY_LENGTH = 32
SIGNATURE_LENGTH = 64

# The field prime of Curve25519 and the order of the prime-order subgroup of edwards25519
# (RFC 7748 §4.1, RFC 8032 §5.1).
_P = 2**255 - 19
_Q = 2**252 + 27742317777372353535851937790883648493

# XEdDSA's hash_1 prefix: 2**256 - 1 - 1 as 32 little-endian bytes (XEdDSA §2.5, §3.3).
_HASH1_PREFIX = b"\xfe" + b"\xff" * 31


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 signature (RFC 8032 §5.1.7, cofactorless) by the Edwards point ``public_key``.

    libsodium does the work and is strict: besides a signature that does not verify, it refuses a
    signature or key of the wrong length, a non-canonical ``S`` (``S ≥ L``), and small-order or
    non-canonical encodings of ``R`` and ``A``.  Every refusal raises
    :class:`~e2e.errors.InvalidSignatureError`; returns ``None`` only for a good signature.
    """
    if not isinstance(public_key, bytes) or len(public_key) != KEY_LENGTH:
        raise InvalidSignatureError(f"an Ed25519 public key is {KEY_LENGTH} bytes")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
        raise InvalidSignatureError(f"a signature is {SIGNATURE_LENGTH} bytes")
    try:
        crypto_sign_open(signature + message, public_key)
    except (CryptoError, ValueError):
        raise InvalidSignatureError("the signature does not verify") from None


def _edwards_y(u_bytes: bytes, *, masked: bool) -> bytes:
    """The Edwards ``y = (u - 1) / (u + 1)`` of a Montgomery ``u`` (XEdDSA §2.4), sign bit 0.

    libsignal reads ``u`` modulo ``2**255`` and then modulo ``p`` (``masked``); the specification
    refuses ``u ≥ p``.  ``u = p - 1`` has no Edwards equivalent.  Raises
    :class:`~e2e.errors.InvalidSignatureError`.
    """
    u = int.from_bytes(u_bytes, "little")
    if masked:
        u = (u & ((1 << 255) - 1)) % _P
    elif u >= _P:
        raise InvalidSignatureError("the public key is not a canonical field element")
    if u == _P - 1:
        raise InvalidSignatureError("the public key has no Edwards equivalent")
    y = (u - 1) * pow(u + 1, -1, _P) % _P
    return y.to_bytes(32, "little")


def _clamp(scalar: bytes) -> bytes:
    """Clamp a 32-byte scalar as RFC 7748 §5 (``decodeScalar25519``) does."""
    clamped = bytearray(scalar)
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    return bytes(clamped)


class PublicKey:
    """A Curve25519 public key: the Montgomery ``u`` coordinate, 32 bytes little-endian.

    Instances are immutable, hashable and compare by value.  ``raw`` is the bare 32 bytes;
    :meth:`serialize` is libsignal's 33-byte form with the ``0x05`` type byte.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != KEY_LENGTH:
            raise InvalidKeyError(f"a Curve25519 public key is {KEY_LENGTH} bytes")
        self._raw = raw

    @classmethod
    def deserialize(cls, data: bytes) -> PublicKey:
        """Parse libsignal's encoding, ``0x05 ‖ u``; anything else raises :class:`DecodeError`."""
        if not isinstance(data, bytes) or len(data) != KEY_LENGTH + 1:
            raise DecodeError(f"a serialized public key is {KEY_LENGTH + 1} bytes")
        if data[0] != DJB_TYPE:
            raise DecodeError(f"unknown public key type byte 0x{data[0]:02x}")
        return cls(data[1:])

    def serialize(self) -> bytes:
        """libsignal's encoding: ``0x05 ‖ u`` (33 bytes)."""
        return bytes((DJB_TYPE,)) + self._raw

    @property
    def raw(self) -> bytes:
        """The bare 32-byte ``u`` coordinate."""
        return self._raw

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify an XEdDSA signature by this key's owner over ``message``.

        Accepts libsignal's signatures, which carry the Edwards sign bit in ``signature[63]``,
        and therefore also spec-literal XEdDSA signatures (whose sign bit is always 0).
        Raises :class:`InvalidSignatureError`; returns ``None`` only when the signature is good.
        """
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
            raise InvalidSignatureError(f"a signature is {SIGNATURE_LENGTH} bytes")
        sign_bit = signature[63] & 0x80
        # XEdDSA §2.4 / libsignal: u is read modulo 2**255 and mapped to Edwards y = (u-1)/(u+1).
        edwards = bytearray(_edwards_y(self._raw, masked=True))
        edwards[31] |= sign_bit
        stripped = signature[:63] + bytes((signature[63] & 0x7F,))
        verify_ed25519(bytes(edwards), message, stripped)

    def verify_as_specified(self, message: bytes, signature: bytes) -> None:
        """Verify an XEdDSA signature exactly as the specification's ``xeddsa_verify`` (§3.4).

        Unlike :meth:`verify` this reads no sign bit: ``A`` always has sign 0, and a signature
        whose ``s`` is not below ``2**253`` (as every libsignal signature by a key of sign 1 is),
        or a key ``u ≥ p``, is refused.  Raises :class:`InvalidSignatureError`.
        """
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
            raise InvalidSignatureError(f"a signature is {SIGNATURE_LENGTH} bytes")
        if signature[63] & 0xE0:
            raise InvalidSignatureError("s is not below 2**253")
        verify_ed25519(_edwards_y(self._raw, masked=False), message, signature)

    def fingerprint(self, length: int = 8) -> str:
        """A short hexadecimal prefix of the key, for humans and logs (not for verification)."""
        return self._raw.hex()[:length]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey({self._raw.hex()})"


class PrivateKey:
    """A Curve25519 private key, clamped on construction (RFC 7748 §5).

    Its ``repr`` never shows the key.  :meth:`serialize` is the one way to get the bytes out,
    and is meant for the versioned state formats only.
    """

    __slots__ = ("_scalar", "_public", "_edwards_public")

    def __init__(self, scalar: bytes) -> None:
        if not isinstance(scalar, bytes) or len(scalar) != KEY_LENGTH:
            raise InvalidKeyError(f"a Curve25519 private key is {KEY_LENGTH} bytes")
        self._scalar = _clamp(scalar)
        self._public: PublicKey | None = None
        self._edwards_public: bytes | None = None

    @classmethod
    def generate(cls, rng: Rng) -> PrivateKey:
        """A new private key from 32 bytes of ``rng``."""
        return cls(rng(KEY_LENGTH))

    def serialize(self) -> bytes:
        """The 32 clamped scalar bytes.  Handle with care: this is the secret."""
        return self._scalar

    def public_key(self) -> PublicKey:
        """The matching public key, ``X25519(a, 9)``."""
        if self._public is None:
            self._public = PublicKey(crypto_scalarmult_base(self._scalar))
        return self._public

    def agree(self, their_public_key: PublicKey) -> bytes:
        """``DH(our private, their public)``: X25519, refusing an all-zero shared secret."""
        # libsodium's X25519 (RFC 7748 §5) straight from the scalar: building a cryptography
        # X25519PrivateKey first costs another scalar multiplication per new ratchet key.
        # libsodium refuses low-order points and an all-zero result (RFC 7748 §6.1).
        try:
            return crypto_scalarmult(self._scalar, their_public_key.raw)
        except CryptoError:
            raise InvalidKeyError(
                "Diffie-Hellman with this public key gives an all-zero result (a low-order point)"
            ) from None

    def sign(self, message: bytes, rng: Rng) -> bytes:
        """An XEdDSA signature over ``message`` in libsignal's form (see the module docstring)."""
        if self._edwards_public is None:
            self._edwards_public = crypto_scalarmult_ed25519_base_noclamp(self._scalar)
        edwards_public = self._edwards_public
        sign_bit = edwards_public[31] & 0x80
        a = int.from_bytes(self._scalar, "little")
        nonce = rng(64)
        r = (
            int.from_bytes(hashlib.sha512(_HASH1_PREFIX + self._scalar + message + nonce).digest(), "little")
            % _Q
        )
        big_r = crypto_scalarmult_ed25519_base_noclamp(r.to_bytes(32, "little"))
        h = int.from_bytes(hashlib.sha512(big_r + edwards_public + message).digest(), "little")
        s = (r + h * a) % _Q
        signature = bytearray(big_r + s.to_bytes(32, "little"))
        signature[63] |= sign_bit
        return bytes(signature)

    def sign_as_specified(self, message: bytes, rng: Rng) -> bytes:
        """An XEdDSA signature exactly as the specification's ``xeddsa_sign`` (§2.3, §3.3).

        ``calculate_key_pair`` takes ``a = k mod q`` and negates it when ``A = a·B`` has sign 1,
        so that ``A`` always has sign 0; ``r = hash1(a ‖ M ‖ Z) mod q`` hashes that ``a``.  The
        result never carries a sign bit and differs from :meth:`sign`'s for every key.  ``Z`` is
        64 bytes of ``rng``.  Both :meth:`PublicKey.verify` and
        :meth:`PublicKey.verify_as_specified` accept it.
        """
        a = int.from_bytes(self._scalar, "little") % _Q
        edwards_public = crypto_scalarmult_ed25519_base_noclamp(a.to_bytes(32, "little"))
        if edwards_public[31] & 0x80:
            a = _Q - a
            edwards_public = crypto_scalarmult_ed25519_base_noclamp(a.to_bytes(32, "little"))
        a_bytes = a.to_bytes(32, "little")
        nonce = rng(64)
        r = int.from_bytes(hashlib.sha512(_HASH1_PREFIX + a_bytes + message + nonce).digest(), "little") % _Q
        big_r = crypto_scalarmult_ed25519_base_noclamp(r.to_bytes(32, "little"))
        h = int.from_bytes(hashlib.sha512(big_r + edwards_public + message).digest(), "little")
        return big_r + ((r + h * a) % _Q).to_bytes(32, "little")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return hmac.compare_digest(self._scalar, other._scalar)

    def __hash__(self) -> int:
        return hash(self.public_key())

    def __repr__(self) -> str:
        return "PrivateKey(<redacted>)"


class KeyPair:
    """A private key and its public key.  Identity keys, prekeys and ratchet keys are all this."""

    __slots__ = ("private_key", "public_key")

    def __init__(self, private_key: PrivateKey, public_key: PublicKey | None = None) -> None:
        derived = private_key.public_key()
        if public_key is not None and public_key != derived:
            raise InvalidKeyError("the public key does not belong to the private key")
        self.private_key = private_key
        self.public_key = derived

    @classmethod
    def generate(cls, rng: Rng) -> KeyPair:
        """A new key pair from 32 bytes of ``rng``."""
        return cls(PrivateKey.generate(rng))

    def agree(self, their_public_key: PublicKey) -> bytes:
        """``DH(our private, their public)``; see :meth:`PrivateKey.agree`."""
        return self.private_key.agree(their_public_key)

    def sign(self, message: bytes, rng: Rng) -> bytes:
        """An XEdDSA signature by this key pair; see :meth:`PrivateKey.sign`."""
        return self.private_key.sign(message, rng)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyPair):
            return NotImplemented
        return self.private_key == other.private_key

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"KeyPair(public_key={self.public_key!r}, private_key=<redacted>)"
