"""ML-KEM-1024 (FIPS 203) keys, encapsulation and decapsulation, in the project's encoding.

What this module owns
---------------------
* :class:`KemPublicKey`: an ML-KEM-1024 encapsulation key (1568 bytes).  On the wire it is the
  type byte :data:`ML_KEM_1024_TYPE` (``0x0A``) followed by the key (:meth:`KemPublicKey.serialize`),
  PQXDH's ``EncodeKEM`` (PQXDH specification revision 3, §2.1).
* :class:`KemCiphertext`: an ML-KEM-1024 ciphertext (1568 bytes), written the same way, type
  byte first, as libsignal writes its KEM ciphertexts.
* :class:`KemPrivateKey` and :class:`KemKeyPair`: the decapsulation side.  A private key *is* its
  64-byte seed ``d ‖ z`` (FIPS 203 Algorithm 16, ``ML-KEM.KeyGen_internal``): the seed
  determines the key pair, so a seed drawn from the caller's ``rng`` gives reproducible keys
  and the seed is the one thing the state formats need to store.
* :func:`encapsulate` (FIPS 203 Algorithm 20, ``ML-KEM.Encaps``) and
  :meth:`KemKeyPair.decapsulate` (Algorithm 21, ``ML-KEM.Decaps``), on ``cryptography``'s
  OpenSSL-backed ML-KEM.

The type byte
-------------
PQXDH requires the ranges of ``EncodeEC`` and ``EncodeKEM`` to be pairwise disjoint (§2.1), so
that no byte string is both a valid Curve25519 key and a valid KEM key and a signature over one
can never be presented as a signature over the other.  Curve25519 keys start with ``0x05``
(libsignal's ``DJB_TYPE``).  libsignal numbers its KEMs ``0x07`` (Kyber768), ``0x08`` (the
pre-standard Kyber1024 that Signal's PQXDH uses today) and ``0x0A`` (ML-KEM-1024).  We use
``0x0A``: it is libsignal's own byte for exactly this algorithm, so no implementation that
follows libsignal's numbering can read one of our keys as Kyber1024, whose shared secrets differ
from ML-KEM's for the same key and randomness.  Lengths make the encodings distinct as well
(33 bytes against 1569), but the type byte is what the specification asks for.

Randomness
----------
FIPS 203 key generation takes 64 random bytes and encapsulation 32 (the message ``m``).  Key
generation draws its seed from the caller's ``rng`` like every other key in the core.
Encapsulation is the one place where the core lets a library draw randomness itself:
``cryptography`` exposes no encapsulation with caller-supplied ``m``, so :func:`encapsulate`
without ``rng`` lets OpenSSL draw ``m`` from its own generator.  Given an ``rng``, it takes
``m = rng(32)`` and runs :func:`e2e.fips203.encaps_internal`, a slow pure-Python transcription
of FIPS 203 Algorithm 17 that exists for known-answer tests and pinned-randomness vectors.
Both paths compute the same function: the tests check the pure-Python one against the
NIST-format known-answer file and against OpenSSL's decapsulation.

Tampered ciphertexts
--------------------
ML-KEM decapsulation never fails on a well-formed ciphertext: a ciphertext that does not
re-encrypt correctly yields the pseudo-random ``J(z ‖ c)`` instead (implicit rejection, FIPS 203
Algorithm 18, lines 7-11).  So :meth:`KemKeyPair.decapsulate` raises only for ciphertexts of the
wrong length or type.  Tampering shows up one step later: the two sides derive different keys,
and the first message's MAC fails with :class:`~e2e.errors.InvalidMessageError`.

The handling of typed bytes (length and type-byte checks, serialization, comparison, ``repr``)
is :mod:`e2e.typed_kem`'s, shared with :mod:`e2e.kyber`; this module fills in ML-KEM-1024's
type byte, lengths and texts.

What it does not know
---------------------
Prekey ids, signatures, storage, or PQXDH itself (:mod:`e2e.pqxdh`).
"""

from __future__ import annotations

import hmac
from typing import ClassVar, Final

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey, MLKEM1024PublicKey

from e2e import fips203
from e2e.errors import InvalidKeyError
from e2e.keys import Rng
from e2e.typed_kem import TypedKemBytes, TypedKemKeyPair, TypedKemPublicKey

__all__ = [
    "ML_KEM_1024_TYPE",
    "PUBLIC_KEY_LENGTH",
    "CIPHERTEXT_LENGTH",
    "SHARED_SECRET_LENGTH",
    "SEED_LENGTH",
    "KemPublicKey",
    "KemCiphertext",
    "KemPrivateKey",
    "KemKeyPair",
    "encapsulate",
]

ML_KEM_1024_TYPE: Final = 0x0A
"""The type byte of an ML-KEM-1024 public key or ciphertext (libsignal's ``KeyType::MLKEM1024``)."""

PUBLIC_KEY_LENGTH: Final = 1568
CIPHERTEXT_LENGTH: Final = 1568
SHARED_SECRET_LENGTH: Final = 32
SEED_LENGTH: Final = 64
"""``d ‖ z``, the seed of FIPS 203 ``ML-KEM.KeyGen_internal``."""


_WRONG_TYPE: Final = "unknown KEM type byte 0x{byte:02x} for a {what}"


class KemPublicKey(TypedKemPublicKey):
    """An ML-KEM-1024 encapsulation key ``ek``.  Immutable, hashable, compares by value.

    The constructor performs FIPS 203's input checks on ``ek`` (length, and every coefficient
    below q, §7.2); a key that fails them raises :class:`~e2e.errors.InvalidKeyError`.
    :meth:`~e2e.typed_kem.TypedKemBytes.serialize` is PQXDH's ``EncodeKEM``, ``0x0A ‖ ek``
    (1569 bytes).
    """

    __slots__ = ("_key",)

    TYPE_BYTE: ClassVar[int] = ML_KEM_1024_TYPE
    LENGTH: ClassVar[int] = PUBLIC_KEY_LENGTH
    ALGORITHM: ClassVar[str] = "ML-KEM-1024"
    ARTICLE: ClassVar[str] = "an"
    WRONG_TYPE: ClassVar[str] = _WRONG_TYPE

    _key: MLKEM1024PublicKey

    def _check_raw(self, raw: bytes) -> None:
        try:
            self._key = MLKEM1024PublicKey.from_public_bytes(raw)
        except ValueError:
            raise InvalidKeyError(
                "not a valid ML-KEM-1024 public key (a coefficient is not below q)"
            ) from None

    @classmethod
    def _from_openssl(cls, key: MLKEM1024PublicKey) -> KemPublicKey:
        # A key OpenSSL derived itself needs no second parse and check.
        public_key = cls._trusted(key.public_bytes_raw())
        public_key._key = key
        return public_key


class KemCiphertext(TypedKemBytes):
    """An ML-KEM-1024 ciphertext ``c``, as Alice sends it in her initial message.

    Serialized as ``0x0A ‖ c`` (1569 bytes), the form the initial message carries.
    """

    __slots__ = ()

    TYPE_BYTE: ClassVar[int] = ML_KEM_1024_TYPE
    LENGTH: ClassVar[int] = CIPHERTEXT_LENGTH
    ALGORITHM: ClassVar[str] = "ML-KEM-1024"
    ARTICLE: ClassVar[str] = "an"
    WHAT: ClassVar[str] = "ciphertext"
    WRONG_TYPE: ClassVar[str] = _WRONG_TYPE


class KemPrivateKey:
    """An ML-KEM-1024 decapsulation key, held as its 64-byte seed ``d ‖ z``.

    Its ``repr`` never shows the seed; :meth:`serialize` is the one way out, for the versioned
    state formats.
    """

    __slots__ = ("_seed", "_key", "_public")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_LENGTH:
            raise InvalidKeyError(f"an ML-KEM-1024 private key seed is {SEED_LENGTH} bytes")
        self._seed = seed
        self._key = MLKEM1024PrivateKey.from_seed_bytes(seed)
        self._public = KemPublicKey._from_openssl(self._key.public_key())

    @classmethod
    def generate(cls, rng: Rng) -> KemPrivateKey:
        """A new key from 64 bytes of ``rng`` (FIPS 203 Algorithm 19 with ``d ‖ z = rng(64)``)."""
        return cls(rng(SEED_LENGTH))

    def serialize(self) -> bytes:
        """The 64-byte seed.  Handle with care: this is the secret."""
        return self._seed

    def public_key(self) -> KemPublicKey:
        """The matching encapsulation key."""
        return self._public

    def decapsulate(self, ciphertext: KemCiphertext) -> bytes:
        """``ML-KEM.Decaps`` (FIPS 203 Algorithm 21): the 32-byte shared secret.

        Never fails for a well-formed ciphertext: a tampered one gives an unrelated secret
        (implicit rejection), which the protocol detects at the first MAC.
        """
        if not isinstance(ciphertext, KemCiphertext):
            raise InvalidKeyError("decapsulation needs a KemCiphertext")
        return self._key.decapsulate(ciphertext.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KemPrivateKey):
            return NotImplemented
        return hmac.compare_digest(self._seed, other._seed)

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return "KemPrivateKey(ML-KEM-1024, <redacted>)"


class KemKeyPair(TypedKemKeyPair[KemPrivateKey, KemPublicKey, KemCiphertext]):
    """A KEM private key and its public key: what Bob keeps for each KEM prekey he publishes.

    :meth:`~e2e.typed_kem.TypedKemKeyPair.decapsulate` is :meth:`KemPrivateKey.decapsulate`.
    """

    __slots__ = ()

    MISMATCH: ClassVar[str] = "the KEM public key does not belong to the private key"

    @classmethod
    def generate(cls, rng: Rng) -> KemKeyPair:
        """A new key pair from 64 bytes of ``rng``."""
        return cls(KemPrivateKey.generate(rng))


def encapsulate(their_public_key: KemPublicKey, rng: Rng | None = None) -> tuple[KemCiphertext, bytes]:
    """``ML-KEM.Encaps`` (FIPS 203 Algorithm 20): a ciphertext for ``their_public_key`` and the
    32-byte shared secret it carries.

    Without ``rng``, OpenSSL draws the 32 bytes of ``m`` and computes everything (the fast path
    every session uses).  With ``rng``, ``m = rng(32)`` and the pure-Python
    :func:`e2e.fips203.encaps_internal` computes the same function reproducibly; it is slow and
    not constant time, and meant for known-answer tests and vectors only.
    """
    if not isinstance(their_public_key, KemPublicKey):
        raise InvalidKeyError("encapsulation needs a KemPublicKey")
    if rng is None:
        shared_secret, ciphertext = their_public_key._key.encapsulate()
    else:
        shared_secret, ciphertext = fips203.encaps_internal(their_public_key.raw, rng(fips203.MESSAGE_LENGTH))
    return KemCiphertext(ciphertext), shared_secret
