"""Versioned storage formats for what a client keeps: identity, prekeys, signed prekeys.

What this module owns
---------------------
The two-byte header every stored record starts with, and the formats of the key records:

* ``serialize_identity`` / ``deserialize_identity``: the identity key pair with the local
  registration id (:class:`IdentityRecord`);
* :class:`PreKeyRecord`: a one-time prekey and its id;
* :class:`SignedPreKeyRecord`: a signed prekey, its id, its signature and its creation time.
* :class:`KemPreKeyRecord`: a signed ML-KEM-1024 prekey for PQXDH (one-time or last-resort), its
  id, its signature and its creation time.
* :class:`KyberPreKeyRecord`: the same for a Kyber-1024 prekey of Signal's PQXDH (message
  version 4), its secret key in libsignal's serialization.  The two share one implementation
  (fields, checks, format and ``repr``) and differ only in their kind and key fields.

Session records (:class:`e2e.session.SessionRecord`) use the same header.

Format, version 1
-----------------
``kind (1 byte) ‖ version (1 byte) ‖ protobuf-style fields``.  The kinds are ASCII letters, so a
hex dump says what it is: ``I`` identity, ``P`` prekey, ``K`` signed prekey, ``Q`` KEM prekey,
``S`` session record, ``G`` sender-key record (:mod:`e2e.sender_key_state`), ``Y`` Kyber prekey.
The fields use the same encoding as libsignal's messages (:mod:`e2e.protobuf`): compact, fast to
read and write in pure Python, and a later version may add fields that this one skips.  A record
of another kind, or of a version other than :data:`FORMAT_VERSION`, raises
:class:`~e2e.errors.StateFormatError` naming what it found; so does any malformed content.

=========== ======================================================================================
record      fields
=========== ======================================================================================
identity    1: private key (32 bytes), 2: public key (``0x05 ‖ 32``), 3: registration id
prekey      1: id, 2: private key (32), 3: public key (``0x05 ‖ 32``)
signed      1: id, 2: private key (32), 3: public key (``0x05 ‖ 32``), 4: signature (64),
prekey      5: timestamp (milliseconds since the epoch, as libsignal stores it)
KEM prekey  1: id, 2: ML-KEM-1024 seed ``d ‖ z`` (64), 3: public key (``0x0A ‖ 1568``),
            4: signature (64) over the public key, 5: timestamp (ms), 6: last resort (0 or 1)
Kyber       1: id, 2: Kyber1024 secret key as libsignal serializes it (``0x08 ‖ 3168``),
prekey      3: public key (``0x08 ‖ 1568``), 4: signature (64) over the public key,
            5: timestamp (ms), 6: last resort (0 or 1)
=========== ======================================================================================

The public key is stored with its private key and checked against it when read, so a corrupted
record is refused rather than used.

Secrets
-------
These records hold private keys; their ``repr`` shows the public parts only.  Nothing here is
pickled, and nothing here encrypts: protecting the bytes at rest is the storage layer's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final, Generic, Self, TypeVar

from e2e import protobuf
from e2e.errors import DecodeError, InvalidKeyError, StateFormatError
from e2e.kem import SEED_LENGTH, KemKeyPair, KemPrivateKey, KemPublicKey
from e2e.keys import KEY_LENGTH, SIGNATURE_LENGTH, KeyPair, PrivateKey, PublicKey
from e2e.kyber import KyberKeyPair, KyberPrivateKey, KyberPublicKey

__all__ = [
    "FORMAT_VERSION",
    "IDENTITY_KIND",
    "PRE_KEY_KIND",
    "SIGNED_PRE_KEY_KIND",
    "SESSION_RECORD_KIND",
    "header",
    "check_header",
    "IdentityRecord",
    "serialize_identity",
    "deserialize_identity",
    "PreKeyRecord",
    "SignedPreKeyRecord",
    "KEM_PRE_KEY_KIND",
    "KemPreKeyRecord",
    "SENDER_KEY_RECORD_KIND",
    "KYBER_PRE_KEY_KIND",
    "KyberPreKeyRecord",
]

FORMAT_VERSION: Final = 1
"""The storage format version this code writes and the only one it reads."""

IDENTITY_KIND: Final = ord("I")
PRE_KEY_KIND: Final = ord("P")
SIGNED_PRE_KEY_KIND: Final = ord("K")
SESSION_RECORD_KIND: Final = ord("S")
KEM_PRE_KEY_KIND: Final = ord("Q")
# Sender-key records (e2e.sender_key_state) share the header.
SENDER_KEY_RECORD_KIND: Final = ord("G")
KYBER_PRE_KEY_KIND: Final = ord("Y")
_KIND_NAMES: Final = {
    IDENTITY_KIND: "identity",
    PRE_KEY_KIND: "prekey",
    SIGNED_PRE_KEY_KIND: "signed prekey",
    SESSION_RECORD_KIND: "session record",
    KEM_PRE_KEY_KIND: "KEM prekey",
    SENDER_KEY_RECORD_KIND: "sender-key record",
    KYBER_PRE_KEY_KIND: "Kyber prekey",
}
_UINT32_MAX: Final = 0xFFFF_FFFF
_UINT64_MAX: Final = (1 << 64) - 1


def header(kind: int, version: int = FORMAT_VERSION) -> bytes:
    """The two bytes that open a record of ``kind`` in format ``version`` (1 unless a kind has more)."""
    return bytes((kind, version))


def check_header(data: bytes, kind: int, versions: tuple[int, ...] = (FORMAT_VERSION,)) -> bytes:
    """Check that ``data`` is a record of ``kind`` in one of ``versions`` (by default version 1 only);
    return the bytes after the header.  ``data[1]`` then says which version it is.
    """
    name = _KIND_NAMES[kind]
    if not isinstance(data, bytes):
        raise StateFormatError(f"a stored {name} is bytes, not {type(data).__name__}")
    if len(data) < 2:
        raise StateFormatError(f"a stored {name} of {len(data)} bytes has no header")
    if data[0] != kind:
        found = _KIND_NAMES.get(data[0], f"unknown kind 0x{data[0]:02x}")
        raise StateFormatError(f"expected a stored {name}, found a {found}")
    if data[1] not in versions:
        readable = " and ".join(str(version) for version in versions)
        raise StateFormatError(
            f"stored {name} format version {data[1]} is not supported (this code reads version {readable})"
        )
    return data[2:]


# The two signed KEM prekey records have one field layout (module docstring).
_SIGNED_KEM_PRE_KEY_SCHEMA: Final[dict[int, protobuf.Field]] = {
    1: protobuf.Field(protobuf.VARINT),
    2: protobuf.Field(protobuf.LEN),
    3: protobuf.Field(protobuf.LEN),
    4: protobuf.Field(protobuf.LEN),
    5: protobuf.Field(protobuf.VARINT),
    6: protobuf.Field(protobuf.VARINT),
}

_SCHEMAS: Final = {
    IDENTITY_KIND: {
        1: protobuf.Field(protobuf.LEN),
        2: protobuf.Field(protobuf.LEN),
        3: protobuf.Field(protobuf.VARINT),
    },
    PRE_KEY_KIND: {
        1: protobuf.Field(protobuf.VARINT),
        2: protobuf.Field(protobuf.LEN),
        3: protobuf.Field(protobuf.LEN),
    },
    SIGNED_PRE_KEY_KIND: {
        1: protobuf.Field(protobuf.VARINT),
        2: protobuf.Field(protobuf.LEN),
        3: protobuf.Field(protobuf.LEN),
        4: protobuf.Field(protobuf.LEN),
        5: protobuf.Field(protobuf.VARINT),
    },
    KEM_PRE_KEY_KIND: _SIGNED_KEM_PRE_KEY_SCHEMA,
    KYBER_PRE_KEY_KIND: _SIGNED_KEM_PRE_KEY_SCHEMA,
}


def _read(data: bytes, kind: int) -> protobuf.Record:
    body = check_header(data, kind)
    try:
        return protobuf.parse(body, _SCHEMAS[kind])
    except DecodeError as error:
        raise StateFormatError(f"stored {_KIND_NAMES[kind]}: {error}") from None


def _key_pair(fields: protobuf.Record, private_field: int, public_field: int, what: str) -> KeyPair:
    try:
        private = protobuf.get_bytes(fields, private_field, f"{what} private key")
        public = PublicKey.deserialize(protobuf.get_bytes(fields, public_field, f"{what} public key"))
        if len(private) != KEY_LENGTH:
            raise StateFormatError(f"a {what} private key is {KEY_LENGTH} bytes")
        return KeyPair(PrivateKey(private), public)
    except StateFormatError:
        raise
    except (DecodeError, InvalidKeyError) as error:
        raise StateFormatError(f"stored {what}: {error}") from None


def _uint(fields: protobuf.Record, number: int, what: str, maximum: int) -> int:
    try:
        return protobuf.get_uint(fields, number, what, maximum)
    except DecodeError as error:
        raise StateFormatError(str(error)) from None


def _check_uint(value: int, what: str, maximum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise ValueError(f"{what} must be an integer between 0 and {maximum}")


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """Our identity key pair and registration id, as stored."""

    key_pair: KeyPair
    registration_id: int

    def __post_init__(self) -> None:
        _check_uint(self.registration_id, "a registration id", _UINT32_MAX)

    def serialize(self) -> bytes:
        """Storage format 1 (module docstring)."""
        return b"".join(
            (
                header(IDENTITY_KIND),
                protobuf.encode_bytes_field(1, self.key_pair.private_key.serialize()),
                protobuf.encode_bytes_field(2, self.key_pair.public_key.serialize()),
                protobuf.encode_uint_field(3, self.registration_id),
            )
        )

    @classmethod
    def deserialize(cls, data: bytes) -> IdentityRecord:
        """Read storage format 1; anything else raises :class:`StateFormatError`."""
        fields = _read(data, IDENTITY_KIND)
        return cls(_key_pair(fields, 1, 2, "identity key"), _uint(fields, 3, "registration id", _UINT32_MAX))

    def __repr__(self) -> str:
        return (
            f"IdentityRecord(public_key={self.key_pair.public_key!r}, registration_id={self.registration_id})"
        )


def serialize_identity(key_pair: KeyPair, registration_id: int) -> bytes:
    """Our identity key pair and registration id in storage format 1."""
    return IdentityRecord(key_pair, registration_id).serialize()


def deserialize_identity(data: bytes) -> tuple[KeyPair, int]:
    """Invert :func:`serialize_identity`: the key pair and the registration id."""
    record = IdentityRecord.deserialize(data)
    return record.key_pair, record.registration_id


@dataclass(frozen=True, slots=True)
class PreKeyRecord:
    """A one-time prekey (X3DH's ``OPK``) with its id."""

    id: int
    key_pair: KeyPair

    def __post_init__(self) -> None:
        _check_uint(self.id, "a prekey id", _UINT32_MAX)

    def serialize(self) -> bytes:
        """Storage format 1 (module docstring)."""
        return b"".join(
            (
                header(PRE_KEY_KIND),
                protobuf.encode_uint_field(1, self.id),
                protobuf.encode_bytes_field(2, self.key_pair.private_key.serialize()),
                protobuf.encode_bytes_field(3, self.key_pair.public_key.serialize()),
            )
        )

    @classmethod
    def deserialize(cls, data: bytes) -> PreKeyRecord:
        """Read storage format 1; anything else raises :class:`StateFormatError`."""
        fields = _read(data, PRE_KEY_KIND)
        return cls(_uint(fields, 1, "prekey id", _UINT32_MAX), _key_pair(fields, 2, 3, "prekey"))

    def __repr__(self) -> str:
        return f"PreKeyRecord(id={self.id}, public_key={self.key_pair.public_key!r})"


@dataclass(frozen=True, slots=True)
class SignedPreKeyRecord:
    """A signed prekey (X3DH's ``SPK``) with its id, signature and creation time (ms since the epoch)."""

    id: int
    key_pair: KeyPair
    signature: bytes
    timestamp: int

    def __post_init__(self) -> None:
        _check_uint(self.id, "a signed prekey id", _UINT32_MAX)
        _check_uint(self.timestamp, "a timestamp", _UINT64_MAX)
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LENGTH:
            raise ValueError(f"a signature is {SIGNATURE_LENGTH} bytes")

    def serialize(self) -> bytes:
        """Storage format 1 (module docstring)."""
        return b"".join(
            (
                header(SIGNED_PRE_KEY_KIND),
                protobuf.encode_uint_field(1, self.id),
                protobuf.encode_bytes_field(2, self.key_pair.private_key.serialize()),
                protobuf.encode_bytes_field(3, self.key_pair.public_key.serialize()),
                protobuf.encode_bytes_field(4, self.signature),
                protobuf.encode_uint_field(5, self.timestamp),
            )
        )

    @classmethod
    def deserialize(cls, data: bytes) -> SignedPreKeyRecord:
        """Read storage format 1; anything else raises :class:`StateFormatError`."""
        fields = _read(data, SIGNED_PRE_KEY_KIND)
        signature = protobuf.get_bytes(fields, 4, "signature") if 4 in fields else b""
        if len(signature) != SIGNATURE_LENGTH:
            raise StateFormatError(f"a stored signed prekey needs a {SIGNATURE_LENGTH}-byte signature")
        return cls(
            _uint(fields, 1, "signed prekey id", _UINT32_MAX),
            _key_pair(fields, 2, 3, "signed prekey"),
            signature,
            _uint(fields, 5, "timestamp", _UINT64_MAX),
        )

    def __repr__(self) -> str:
        return (
            f"SignedPreKeyRecord(id={self.id}, public_key={self.key_pair.public_key!r}, "
            f"signature={self.signature.hex()[:16]}…, timestamp={self.timestamp})"
        )


KeyPairT = TypeVar("KeyPairT", KemKeyPair, KyberKeyPair)


@dataclass(frozen=True, slots=True)
class _SignedKemPreKeyRecord(Generic[KeyPairT]):
    """What :class:`KemPreKeyRecord` and :class:`KyberPreKeyRecord` share: the fields, their
    checks, storage format 1 but for the key fields, and the ``repr``.

    A subclass sets ``KIND`` (its record kind), ``WHAT`` (its name in error texts),
    ``KEY_PAIR`` (the key pair class it holds) and reads its key pair from fields 2 and 3 in
    :meth:`_read_key_pair`.
    """

    KIND: ClassVar[int]
    WHAT: ClassVar[str]
    KEY_PAIR: ClassVar[type[KemKeyPair] | type[KyberKeyPair]]

    id: int
    key_pair: KeyPairT
    signature: bytes
    timestamp: int
    last_resort: bool = False

    def __post_init__(self) -> None:
        _check_uint(self.id, f"a {self.WHAT} id", _UINT32_MAX)
        _check_uint(self.timestamp, "a timestamp", _UINT64_MAX)
        if not isinstance(self.key_pair, self.KEY_PAIR):
            raise ValueError(f"a {self.WHAT} record holds a {self.KEY_PAIR.__name__}")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_LENGTH:
            raise ValueError(f"a signature is {SIGNATURE_LENGTH} bytes")
        if not isinstance(self.last_resort, bool):
            raise ValueError("last_resort is a bool")

    def serialize(self) -> bytes:
        """Storage format 1 (module docstring)."""
        return b"".join(
            (
                header(self.KIND),
                protobuf.encode_uint_field(1, self.id),
                protobuf.encode_bytes_field(2, self.key_pair.private_key.serialize()),
                protobuf.encode_bytes_field(3, self.key_pair.public_key.serialize()),
                protobuf.encode_bytes_field(4, self.signature),
                protobuf.encode_uint_field(5, self.timestamp),
                protobuf.encode_uint_field(6, int(self.last_resort)),
            )
        )

    @classmethod
    def _read_key_pair(cls, fields: protobuf.Record) -> KeyPairT:
        raise NotImplementedError

    @classmethod
    def deserialize(cls, data: bytes) -> Self:
        """Read storage format 1; anything else raises :class:`StateFormatError`."""
        fields = _read(data, cls.KIND)
        try:
            key_pair = cls._read_key_pair(fields)
            signature = protobuf.get_bytes(fields, 4, "signature")
        except StateFormatError:
            raise
        except (DecodeError, InvalidKeyError) as error:
            raise StateFormatError(f"stored {cls.WHAT}: {error}") from None
        if len(signature) != SIGNATURE_LENGTH:
            raise StateFormatError(f"a stored {cls.WHAT} needs a {SIGNATURE_LENGTH}-byte signature")
        return cls(
            _uint(fields, 1, f"{cls.WHAT} id", _UINT32_MAX),
            key_pair,
            signature,
            _uint(fields, 5, "timestamp", _UINT64_MAX),
            bool(_uint(fields, 6, "last-resort flag", 1)),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id}, public_key={self.key_pair.public_key!r}, "
            f"signature={self.signature.hex()[:16]}…, timestamp={self.timestamp}, "
            f"last_resort={self.last_resort})"
        )


@dataclass(frozen=True, slots=True, repr=False)  # The repr is the shared one, without secrets.
class KemPreKeyRecord(_SignedKemPreKeyRecord[KemKeyPair]):
    """A signed ML-KEM-1024 prekey (PQXDH's ``PQOPK_B``, or with ``last_resort`` its ``PQSPK_B``)
    with its id, its signature ``Sig(IK_B, EncodeKEM(PQPK_B))`` and its creation time (ms).

    The owner deletes a one-time KEM prekey after its first message decrypted and keeps the
    last-resort one until it is rotated (PQXDH §3.4); the record says which is which.
    """

    KIND: ClassVar[int] = KEM_PRE_KEY_KIND
    WHAT: ClassVar[str] = "KEM prekey"
    KEY_PAIR: ClassVar[type[KemKeyPair]] = KemKeyPair

    @classmethod
    def _read_key_pair(cls, fields: protobuf.Record) -> KemKeyPair:
        seed = protobuf.get_bytes(fields, 2, "KEM prekey seed")
        public = KemPublicKey.deserialize(protobuf.get_bytes(fields, 3, "KEM prekey public key"))
        if len(seed) != SEED_LENGTH:
            raise StateFormatError(f"a KEM prekey seed is {SEED_LENGTH} bytes")
        return KemKeyPair(KemPrivateKey(seed), public)


@dataclass(frozen=True, slots=True, repr=False)  # The repr is the shared one, without secrets.
class KyberPreKeyRecord(_SignedKemPreKeyRecord[KyberKeyPair]):
    """A signed Kyber-1024 prekey of Signal's PQXDH (one-time, or with ``last_resort`` the one that
    serves when the relay has no one-time prekey left), with its id, its signature
    ``Sig(IK_B, 0x08 ‖ pk)`` and its creation time (ms), as libsignal's ``KyberPreKeyRecord``.

    The owner deletes a one-time Kyber prekey after its first message decrypted.  A last-resort one
    stays until it is rotated; libsignal's store also refuses a second PreKey message that uses it
    with the same signed prekey and base key, which is the owner's to remember (the record does not).
    """

    KIND: ClassVar[int] = KYBER_PRE_KEY_KIND
    WHAT: ClassVar[str] = "Kyber prekey"
    KEY_PAIR: ClassVar[type[KyberKeyPair]] = KyberKeyPair

    @classmethod
    def _read_key_pair(cls, fields: protobuf.Record) -> KyberKeyPair:
        private = KyberPrivateKey.deserialize(protobuf.get_bytes(fields, 2, "Kyber prekey secret key"))
        public = KyberPublicKey.deserialize(protobuf.get_bytes(fields, 3, "Kyber prekey public key"))
        return KyberKeyPair(private, public)
