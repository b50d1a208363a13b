"""The shape every KEM key and ciphertext of the core shares: fixed-length bytes behind a type byte.

What this module owns
---------------------
ML-KEM-1024 (:mod:`e2e.kem`) and round-3 Kyber-1024 (:mod:`e2e.kyber`) compute different
functions, but their public keys and ciphertexts are handled alike: a bare value of a fixed
length, written on the wire as one type byte followed by the value (PQXDH's ``EncodeKEM``,
specification revision 3, §2.1, in libsignal's numbering).  This module holds that handling once:

* :class:`TypedKemBytes`: the value, its length check, ``0xNN ‖ raw`` serialization and parsing,
  constant-time comparison by value, hashing and a ``repr`` that shows only a digest;
* :class:`TypedKemPublicKey`: the same, plus :meth:`TypedKemPublicKey.fingerprint`;
* :class:`TypedKemKeyPair`: a private key with the public key derived from it, refusing a public
  key that does not belong to it;
* :func:`strip_type_byte`: the parse of ``0xNN ‖ raw`` for a given type byte and length.

Each algorithm's module subclasses these and fills in its type byte, lengths, name and error
texts as class attributes; the algorithms themselves (key generation, encapsulation,
decapsulation) and the private keys stay in those modules.

Invariants
----------
An instance always holds a value of exactly its class's ``LENGTH``.  Values of different classes
never compare equal, even when their bytes do: a Kyber1024 key is not an ML-KEM-1024 key.
Parsing refuses a wrong length or type byte with :class:`~e2e.errors.DecodeError`; the
constructors refuse a wrong length (and whatever the subclass's ``_check_raw`` refuses) with
:class:`~e2e.errors.InvalidKeyError`.

What it does not know
---------------------
Any KEM algorithm, prekey ids, signatures, storage, or the handshakes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

from e2e.errors import DecodeError, InvalidKeyError

__all__ = [
    "strip_type_byte",
    "TypedKemBytes",
    "TypedKemPublicKey",
    "TypedKemKeyPair",
]


def strip_type_byte(
    data: bytes, *, type_byte: int, length: int, algorithm: str, what: str, wrong_type: str
) -> bytes:
    """The ``length`` bytes after the type byte of ``type_byte ‖ value``.

    A wrong length or type byte raises :class:`~e2e.errors.DecodeError`; ``wrong_type`` is the
    text of the latter, a format string with the fields ``byte`` (the byte found) and ``what``.
    """
    if not isinstance(data, bytes) or len(data) != length + 1:
        raise DecodeError(f"a serialized {algorithm} {what} is {length + 1} bytes")
    if data[0] != type_byte:
        raise DecodeError(wrong_type.format(byte=data[0], what=what))
    return data[1:]


class TypedKemBytes:
    """A KEM value of fixed length, serialized as its type byte followed by the value.

    Subclasses set ``TYPE_BYTE``, ``LENGTH``, ``ALGORITHM`` (the name in texts and ``repr``),
    ``ARTICLE`` (``"a"`` or ``"an"``, for that name), ``WHAT`` (``"public key"``,
    ``"ciphertext"``) and ``WRONG_TYPE`` (see :func:`strip_type_byte`).
    """

    __slots__ = ("_raw",)

    TYPE_BYTE: ClassVar[int]
    LENGTH: ClassVar[int]
    ALGORITHM: ClassVar[str]
    ARTICLE: ClassVar[str]
    WHAT: ClassVar[str]
    WRONG_TYPE: ClassVar[str]

    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != self.LENGTH:
            raise InvalidKeyError(f"{self.ARTICLE} {self.ALGORITHM} {self.WHAT} is {self.LENGTH} bytes")
        self._check_raw(raw)
        self._raw = raw

    def _check_raw(self, raw: bytes) -> None:
        """Further checks on a value of the right length; raises :class:`InvalidKeyError`."""

    @classmethod
    def _trusted(cls, raw: bytes) -> Self:
        # A value the core derived itself needs no second check.
        value = cls.__new__(cls)
        value._raw = raw
        return value

    @classmethod
    def deserialize(cls, data: bytes) -> Self:
        """Parse ``TYPE_BYTE ‖ raw``.  A wrong length, type byte or value raises :class:`DecodeError`."""
        raw = strip_type_byte(
            data,
            type_byte=cls.TYPE_BYTE,
            length=cls.LENGTH,
            algorithm=cls.ALGORITHM,
            what=cls.WHAT,
            wrong_type=cls.WRONG_TYPE,
        )
        try:
            return cls(raw)
        except InvalidKeyError as error:
            raise DecodeError(str(error)) from None

    def serialize(self) -> bytes:
        """``TYPE_BYTE ‖ raw`` (``LENGTH + 1`` bytes), the form the wire and the signatures carry."""
        return bytes((self.TYPE_BYTE,)) + self._raw

    @property
    def raw(self) -> bytes:
        """The bare value, without the type byte."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ALGORITHM}, sha256:{hashlib.sha256(self._raw).hexdigest()[:16]})"


class TypedKemPublicKey(TypedKemBytes):
    """A KEM public key: a :class:`TypedKemBytes` with a fingerprint for humans."""

    __slots__ = ()

    WHAT: ClassVar[str] = "public key"

    def fingerprint(self, length: int = 8) -> str:
        """A short hexadecimal digest of the key, for humans and logs (not for verification)."""
        return hashlib.sha256(self._raw).hexdigest()[:length]


PublicKeyT = TypeVar("PublicKeyT", bound=TypedKemPublicKey)
CiphertextT = TypeVar("CiphertextT", bound=TypedKemBytes)
PublicKeyT_co = TypeVar("PublicKeyT_co", bound=TypedKemPublicKey, covariant=True)
CiphertextT_contra = TypeVar("CiphertextT_contra", bound=TypedKemBytes, contravariant=True)


class _PrivateKey(Protocol[PublicKeyT_co, CiphertextT_contra]):
    def public_key(self) -> PublicKeyT_co: ...

    def decapsulate(self, ciphertext: CiphertextT_contra) -> bytes: ...


PrivateKeyT = TypeVar("PrivateKeyT", bound=_PrivateKey[Any, Any])


class TypedKemKeyPair(Generic[PrivateKeyT, PublicKeyT, CiphertextT]):
    """A KEM private key and the public key derived from it.

    Given a public key as well, the constructor checks that it is the derived one and raises
    :class:`~e2e.errors.InvalidKeyError` with the subclass's ``MISMATCH`` text otherwise.
    Compares by private key; ``repr`` shows only the public key.
    """

    __slots__ = ("private_key", "public_key")

    MISMATCH: ClassVar[str]

    def __init__(self, private_key: PrivateKeyT, public_key: PublicKeyT | None = None) -> None:
        derived = cast(PublicKeyT, private_key.public_key())
        if public_key is not None and public_key != derived:
            raise InvalidKeyError(self.MISMATCH)
        self.private_key = private_key
        self.public_key = derived

    def decapsulate(self, ciphertext: CiphertextT) -> bytes:
        """The private key's decapsulation: the shared secret ``ciphertext`` carries."""
        return self.private_key.decapsulate(ciphertext)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return bool(self.private_key == other.private_key)

    def __hash__(self) -> int:
        return hash(self.public_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public_key={self.public_key!r}, private_key=<redacted>)"
