"""Kyber-1024 as the round-3 specification defines it (CRYSTALS-Kyber v3.02), in libsignal's encoding.

What this module owns
---------------------
The pre-standard KEM that Signal's PQXDH runs today (libsignal's ``KeyType::Kyber1024``):

* :func:`keygen_internal`, :func:`encaps_internal`, :func:`decaps_internal` — ``Kyber.CCAKEM``
  (Kyber v3.02 §1.3, Algorithms 7, 8 and 9) with the caller's randomness, on the lattice core
  :mod:`e2e.kpke` that ML-KEM shares;
* :class:`KyberPublicKey`, :class:`KyberCiphertext`, :class:`KyberPrivateKey`,
  :class:`KyberKeyPair` and :func:`encapsulate`: typed keys whose ``serialize`` gives libsignal's
  bytes — the type byte :data:`KYBER_1024_TYPE` (``0x08``) followed by the key, 1,569 bytes for a
  public key and a ciphertext, 3,169 for a secret key.

Round 3 against FIPS 203
------------------------
The lattice encryption is the same; the hashing around it is not, so the two KEMs give different
keys and shared secrets for the same randomness and must never be confused (which is what the
distinct type bytes ``0x08`` and ``0x0A`` are for):

=========================  ==================================  ==============================
step                       round 3 (this module)               FIPS 203 (:mod:`e2e.fips203`)
=========================  ==================================  ==============================
key seeds                  ``(ρ, σ) = G(d)``                   ``(ρ, σ) = G(d ‖ k)``
encapsulation message      ``m = H(m)`` before use             ``m`` as drawn
shared key                 ``K = KDF(K̄ ‖ H(c))``               ``K = K̄``
implicit rejection         ``K = KDF(z ‖ H(c))``               ``K = J(z ‖ c)``
=========================  ==================================  ==============================

``G`` = SHA3-512, ``H`` = SHA3-256, ``KDF`` = SHAKE256 with 32 bytes of output (§1.4).  Because
round 3 hashes the ciphertext into the key, a changed ciphertext changes the key even where the
re-encryption check would not notice; FIPS 203 dropped that hash for its own binding argument.

Randomness
----------
Key generation takes 64 bytes of the caller's ``rng``: ``d`` first, then ``z``, the order in
which the round-3 reference implementation draws them (and libcrux's ``generate_key_pair``, which
libsignal uses, splits its 64-byte seed).  Encapsulation takes 32 bytes, which it hashes before
use.  Nothing here draws randomness of its own.

Checks on the network's bytes
-----------------------------
A public key or ciphertext of the wrong length or type byte raises
:class:`~e2e.errors.DecodeError` from ``deserialize`` (:class:`~e2e.errors.InvalidKeyError` from
the constructors).  A public key must also encode every coefficient below q (FIPS 203's §7.2
check; round 3 asks nothing, and honest keys always pass it).  A serialized secret key must hold
the hash of the public key it contains.  Decapsulation never fails on a well-formed ciphertext: a
tampered one yields the pseudo-random rejection key, and the protocol notices one step later, at
the first message's MAC.

The handling of typed bytes (length and type-byte checks, serialization, comparison, ``repr``)
is :mod:`e2e.typed_kem`'s, shared with :mod:`e2e.kem`; this module fills in Kyber1024's type
byte, lengths and texts.

What it does not know
---------------------
Prekey ids, signatures, storage, or PQXDH itself (:mod:`e2e.pqxdh_v4`).  It is not constant
time (see :mod:`e2e.kpke`).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import ClassVar, Final

from e2e import kpke
from e2e.errors import DecodeError, InvalidKeyError
from e2e.keys import Rng
from e2e.typed_kem import TypedKemBytes, TypedKemKeyPair, TypedKemPublicKey, strip_type_byte

__all__ = [
    "KYBER_1024_TYPE",
    "KYBER_PUBLIC_KEY_LENGTH",
    "KYBER_SECRET_KEY_LENGTH",
    "KYBER_CIPHERTEXT_LENGTH",
    "KYBER_SHARED_SECRET_LENGTH",
    "KYBER_KEYGEN_SEED_LENGTH",
    "KYBER_ENCAPS_SEED_LENGTH",
    "KyberPublicKey",
    "KyberCiphertext",
    "KyberPrivateKey",
    "KyberKeyPair",
    "encapsulate",
    "keygen_internal",
    "encaps_internal",
    "decaps_internal",
]

KYBER_1024_TYPE: Final = 0x08
"""The type byte of a Kyber1024 key or ciphertext (libsignal's ``KeyType::Kyber1024``)."""

KYBER_PUBLIC_KEY_LENGTH: Final = kpke.ENCRYPTION_KEY_LENGTH
"""``pk = ByteEncode12(t̂) ‖ ρ``: 1568 bytes."""
KYBER_SECRET_KEY_LENGTH: Final = kpke.DECRYPTION_KEY_LENGTH + kpke.ENCRYPTION_KEY_LENGTH + 64
"""``sk = ByteEncode12(ŝ) ‖ pk ‖ H(pk) ‖ z``: 3168 bytes (Algorithm 7, line 3)."""
KYBER_CIPHERTEXT_LENGTH: Final = kpke.CIPHERTEXT_LENGTH
"""1568 bytes."""
KYBER_SHARED_SECRET_LENGTH: Final = 32
KYBER_KEYGEN_SEED_LENGTH: Final = 64
"""``d ‖ z``, the randomness of one key generation."""
KYBER_ENCAPS_SEED_LENGTH: Final = 32
"""The randomness of one encapsulation, hashed into ``m`` before use."""

_SK_PKE_END: Final = kpke.DECRYPTION_KEY_LENGTH
_SK_PK_END: Final = _SK_PKE_END + KYBER_PUBLIC_KEY_LENGTH


def _g(data: bytes) -> tuple[bytes, bytes]:
    digest = hashlib.sha3_512(data).digest()
    return digest[:32], digest[32:]


def _h(data: bytes) -> bytes:
    return hashlib.sha3_256(data).digest()


def _kdf(data: bytes) -> bytes:
    return hashlib.shake_256(data).digest(KYBER_SHARED_SECRET_LENGTH)


def keygen_internal(d: bytes, z: bytes) -> tuple[bytes, bytes]:
    """Algorithm 7 (``Kyber.CCAKEM.KeyGen``) with Algorithm 4 (``Kyber.CPAPKE.KeyGen``) given
    their random bytes: ``(pk, sk)`` with ``(ρ, σ) = G(d)`` and ``sk = sk' ‖ pk ‖ H(pk) ‖ z``.
    """
    if len(d) != 32 or len(z) != 32:
        raise ValueError("d and z are 32 bytes each")
    rho, sigma = _g(d)
    pk, sk_pke = kpke.keygen(rho, sigma)
    return pk, sk_pke + pk + _h(pk) + z


def encaps_internal(pk: bytes, seed: bytes) -> tuple[bytes, bytes]:
    """Algorithm 8 (``Kyber.CCAKEM.Enc``) given its 32 random bytes: ``(K, c)``.

    ``m = H(seed)``, ``(K̄, r) = G(m ‖ H(pk))``, ``c = CPAPKE.Enc(pk, m, r)``,
    ``K = KDF(K̄ ‖ H(c))``.  Raises :class:`ValueError` for a key that fails
    :func:`e2e.kpke.check_encapsulation_key`.
    """
    if len(seed) != KYBER_ENCAPS_SEED_LENGTH:
        raise ValueError(f"Kyber encapsulation randomness is {KYBER_ENCAPS_SEED_LENGTH} bytes")
    kpke.check_encapsulation_key(pk)
    m = _h(seed)
    k_bar, r = _g(m + _h(pk))
    c = kpke.encrypt(pk, m, r)
    return _kdf(k_bar + _h(c)), c


def decaps_internal(sk: bytes, c: bytes) -> bytes:
    """Algorithm 9 (``Kyber.CCAKEM.Dec``): ``K = KDF(K̄' ‖ H(c))`` when ``c`` re-encrypts to itself,
    ``KDF(z ‖ H(c))`` otherwise.  Raises :class:`ValueError` for wrong lengths only.
    """
    if len(sk) != KYBER_SECRET_KEY_LENGTH or len(c) != KYBER_CIPHERTEXT_LENGTH:
        raise ValueError(f"sk is {KYBER_SECRET_KEY_LENGTH} bytes and c {KYBER_CIPHERTEXT_LENGTH}")
    pk = sk[_SK_PKE_END:_SK_PK_END]
    h = sk[_SK_PK_END : _SK_PK_END + 32]
    z = sk[_SK_PK_END + 32 :]
    m_prime = kpke.decrypt(sk[:_SK_PKE_END], c)
    k_bar, r_prime = _g(m_prime + h)
    # Both candidates are computed, and the choice is a comparison of the whole ciphertext.
    accepted = _kdf(k_bar + _h(c))
    rejected = _kdf(z + _h(c))
    return accepted if hmac.compare_digest(kpke.encrypt(pk, m_prime, r_prime), c) else rejected


_WRONG_TYPE: Final = "KEM type byte 0x{byte:02x} is not Kyber1024's (0x08) for a {what}"


def _strip_type_byte(data: bytes, length: int, what: str) -> bytes:
    return strip_type_byte(
        data,
        type_byte=KYBER_1024_TYPE,
        length=length,
        algorithm="Kyber1024",
        what=what,
        wrong_type=_WRONG_TYPE,
    )


class KyberPublicKey(TypedKemPublicKey):
    """A Kyber1024 public key ``pk``.  Immutable, hashable, compares by value.

    The constructor checks the length and that every coefficient of ``t̂`` is below q; a key that
    fails raises :class:`~e2e.errors.InvalidKeyError`.
    :meth:`~e2e.typed_kem.TypedKemBytes.serialize` is PQXDH's ``EncodeKEM`` as libsignal writes
    it, ``0x08 ‖ pk`` (1569 bytes).
    """

    __slots__ = ()

    TYPE_BYTE: ClassVar[int] = KYBER_1024_TYPE
    LENGTH: ClassVar[int] = KYBER_PUBLIC_KEY_LENGTH
    ALGORITHM: ClassVar[str] = "Kyber1024"
    ARTICLE: ClassVar[str] = "a"
    WRONG_TYPE: ClassVar[str] = _WRONG_TYPE

    def _check_raw(self, raw: bytes) -> None:
        try:
            kpke.check_encapsulation_key(raw)
        except ValueError:
            raise InvalidKeyError("not a valid Kyber1024 public key (a coefficient is not below q)") from None


class KyberCiphertext(TypedKemBytes):
    """A Kyber1024 ciphertext ``c``, as Alice sends it in field 8 of her PreKeySignalMessage.

    Serialized as ``0x08 ‖ c`` (1569 bytes).
    """

    __slots__ = ()

    TYPE_BYTE: ClassVar[int] = KYBER_1024_TYPE
    LENGTH: ClassVar[int] = KYBER_CIPHERTEXT_LENGTH
    ALGORITHM: ClassVar[str] = "Kyber1024"
    ARTICLE: ClassVar[str] = "a"
    WHAT: ClassVar[str] = "ciphertext"
    WRONG_TYPE: ClassVar[str] = _WRONG_TYPE


class KyberPrivateKey:
    """A Kyber1024 secret key ``sk = sk' ‖ pk ‖ H(pk) ‖ z`` (3168 bytes), libsignal's form.

    Its ``repr`` never shows the key; :meth:`serialize` is the one way out, for the versioned
    state formats.
    """

    __slots__ = ("_sk", "_public")

    def __init__(self, sk: bytes) -> None:
        if not isinstance(sk, bytes) or len(sk) != KYBER_SECRET_KEY_LENGTH:
            raise InvalidKeyError(f"a Kyber1024 secret key is {KYBER_SECRET_KEY_LENGTH} bytes")
        pk = sk[_SK_PKE_END:_SK_PK_END]
        if not hmac.compare_digest(_h(pk), sk[_SK_PK_END : _SK_PK_END + 32]):
            raise InvalidKeyError("the Kyber1024 secret key does not hold the hash of its public key")
        self._sk = sk
        self._public = KyberPublicKey(pk)

    @classmethod
    def generate(cls, rng: Rng) -> KyberPrivateKey:
        """A new key from 64 bytes of ``rng`` (``d`` then ``z``, Algorithm 7)."""
        seed = rng(KYBER_KEYGEN_SEED_LENGTH)
        pk, sk = keygen_internal(seed[:32], seed[32:])
        key = cls.__new__(cls)
        key._sk = sk
        key._public = KyberPublicKey._trusted(pk)
        return key

    @classmethod
    def deserialize(cls, data: bytes) -> KyberPrivateKey:
        """Parse libsignal's ``0x08 ‖ sk`` (3169 bytes); anything else raises :class:`DecodeError`."""
        raw = _strip_type_byte(data, KYBER_SECRET_KEY_LENGTH, "secret key")
        try:
            return cls(raw)
        except InvalidKeyError as error:
            raise DecodeError(str(error)) from None

    def serialize(self) -> bytes:
        """libsignal's ``0x08 ‖ sk`` (3169 bytes).  Handle with care: this is the secret."""
        return bytes((KYBER_1024_TYPE,)) + self._sk

    def public_key(self) -> KyberPublicKey:
        """The public key the secret key holds."""
        return self._public

    def decapsulate(self, ciphertext: KyberCiphertext) -> bytes:
        """``Kyber.CCAKEM.Dec`` (Algorithm 9): the 32-byte shared secret.

        Never fails for a well-formed ciphertext: a tampered one gives an unrelated secret
        (implicit rejection), which the protocol detects at the first MAC.
        """
        if not isinstance(ciphertext, KyberCiphertext):
            raise InvalidKeyError("Kyber decapsulation needs a KyberCiphertext")
        return decaps_internal(self._sk, ciphertext.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KyberPrivateKey):
            return NotImplemented
        return hmac.compare_digest(self._sk, other._sk)

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return "KyberPrivateKey(Kyber1024, <redacted>)"


class KyberKeyPair(TypedKemKeyPair[KyberPrivateKey, KyberPublicKey, KyberCiphertext]):
    """A Kyber1024 secret key and its public key: what Bob keeps for each Kyber prekey.

    :meth:`~e2e.typed_kem.TypedKemKeyPair.decapsulate` is :meth:`KyberPrivateKey.decapsulate`.
    """

    __slots__ = ()

    MISMATCH: ClassVar[str] = "the Kyber public key does not belong to the secret key"

    @classmethod
    def generate(cls, rng: Rng) -> KyberKeyPair:
        """A new key pair from 64 bytes of ``rng``."""
        return cls(KyberPrivateKey.generate(rng))


def encapsulate(their_public_key: KyberPublicKey, rng: Rng) -> tuple[KyberCiphertext, bytes]:
    """``Kyber.CCAKEM.Enc`` (Algorithm 8) with 32 bytes of ``rng``: a ciphertext for
    ``their_public_key`` and the 32-byte shared secret it carries.
    """
    if not isinstance(their_public_key, KyberPublicKey):
        raise InvalidKeyError("Kyber encapsulation needs a KyberPublicKey")
    shared_secret, ciphertext = encaps_internal(their_public_key.raw, rng(KYBER_ENCAPS_SEED_LENGTH))
    return KyberCiphertext(ciphertext), shared_secret
