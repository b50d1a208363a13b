"""Linked devices: the account signature, the device signature and the signed device list.

What this module owns
---------------------
An account is one *primary* device (the first one registered) and up to a few *companion*
devices, each with an identity key of its own.  The primary vouches for a companion, and the
companion for its link to the primary, with the three signatures WhatsApp's Encryption Overview
describes under "Companion Linking" (every signature is XEdDSA by a Curve25519 identity key,
:meth:`e2e.keys.PrivateKey.sign`):

* the **account signature**, by the primary's identity key, over
  ``0x06 0x00 ‖ linking metadata ‖ companion identity key``;
* the **device signature**, by the companion's identity key, over
  ``0x06 0x01 ‖ linking metadata ‖ companion identity key ‖ primary identity key``;
* the **signed device list**, by the primary's identity key, over ``0x06 0x02 ‖ device list``.

Identity keys inside the signed bytes are libsignal's 33-byte form (``0x05 ‖ u``).  The two-byte
prefixes keep each signature from being usable as either of the others, or as any signature the
rest of the protocol makes (a signed prekey signature covers a bare 33-byte key, which never
starts with ``0x06``).

Encodings (integers big-endian, every encoding starts with its format version)::

    LinkingMetadata  = 0x01 ‖ u16 len(account) ‖ account (UTF-8) ‖ u32 device_id ‖ u64 linked_at
    DeviceList       = 0x01 ‖ u16 len(account) ‖ account ‖ u64 version ‖ u64 timestamp
                       ‖ u8 count ‖ count × (u32 device_id ‖ identity key (33))
    SignedDeviceList = 0x01 ‖ u32 len(DeviceList) ‖ DeviceList ‖ signature (64)
    DeviceIdentity   = 0x01 ‖ u16 len(LinkingMetadata) ‖ LinkingMetadata ‖ companion identity key (33)
                       ‖ account signature (64) ‖ device signature (64)

Invariants of a device list, checked by :meth:`DeviceList.decode` and by its constructor: the
devices are listed in increasing device id, no id or identity key appears twice, the primary
(:data:`PRIMARY_DEVICE_ID`) is listed, and there are at most :data:`MAX_DEVICES` entries.  The
``version`` grows by at least one with every list the primary signs; :func:`accept_device_list`
is the rollback check a holder of an earlier list applies (an older version is refused, and so is
a different list under a version already seen).

Verification raises (:class:`~e2e.errors.InvalidSignatureError`, :class:`DeviceListError` and its
subclasses) and returns the decoded value only when everything holds.

What this module does not know
------------------------------
Where the bytes travel (the relay stores the signed list and the device identities; see
``docs/devices.md``), the clock (``linked_at`` and ``timestamp`` are passed in, in seconds) and
how a companion's identity key reaches the primary (that is :mod:`e2e.linking`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from e2e.errors import DecodeError, E2EError, InvalidKeyError
from e2e.keys import PrivateKey, PublicKey, Rng

__all__ = [
    "ACCOUNT_SIGNATURE_PREFIX",
    "DEVICE_SIGNATURE_PREFIX",
    "DEVICE_LIST_PREFIX",
    "PRIMARY_DEVICE_ID",
    "MAX_DEVICES",
    "DeviceListError",
    "DeviceListRollbackError",
    "LinkingMetadata",
    "DeviceIdentity",
    "DeviceEntry",
    "DeviceList",
    "SignedDeviceList",
    "account_signature_message",
    "device_signature_message",
    "sign_account",
    "sign_device",
    "verify_account_signature",
    "verify_device_signature",
    "sign_device_list",
    "verify_device_list",
    "accept_device_list",
]

ACCOUNT_SIGNATURE_PREFIX = b"\x06\x00"
"""Prefix of the bytes the primary signs to vouch for a companion (Encryption Overview)."""
DEVICE_SIGNATURE_PREFIX = b"\x06\x01"
"""Prefix of the bytes a companion signs to confirm its link to the primary."""
DEVICE_LIST_PREFIX = b"\x06\x02"
"""Prefix of the bytes the primary signs over the account's device list."""
PRIMARY_DEVICE_ID = 1
"""The device id of an account's primary device."""
MAX_DEVICES = 32
"""The most entries an encoded device list may hold; the relay enforces its own, smaller cap."""

_FORMAT = 1
_KEY_LENGTH = 33
_SIGNATURE_LENGTH = 64
_MAX_ACCOUNT_BYTES = 255
_MAX_DEVICE_ID = 2**31 - 1
_U64 = 2**64 - 1


class DeviceListError(E2EError):
    """A device list (or linking metadata) that breaks its invariants or names another account."""


class DeviceListRollbackError(DeviceListError):
    """A device list older than one already seen, or a different list under a version already seen."""


def _account_bytes(account: str) -> bytes:
    if not isinstance(account, str) or not account:
        raise DeviceListError("an account name is a non-empty string")
    raw = account.encode("utf-8")
    if len(raw) > _MAX_ACCOUNT_BYTES:
        raise DeviceListError(f"an account name is at most {_MAX_ACCOUNT_BYTES} bytes of UTF-8")
    return raw


def _check_device_id(device_id: int) -> None:
    if not isinstance(device_id, int) or isinstance(device_id, bool) or not 1 <= device_id <= _MAX_DEVICE_ID:
        raise DeviceListError(f"a device id is an integer in [1, {_MAX_DEVICE_ID}]")


def _check_u64(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64:
        raise DeviceListError(f"{name} is an integer in [0, 2**64 - 1]")


class _Reader:
    """Reads an encoding front to back; every shortfall is a :class:`DecodeError`."""

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes):
            raise DecodeError(f"{what} must be bytes")
        self._data = data
        self._at = 0
        self._what = what

    def take(self, length: int) -> bytes:
        if self._at + length > len(self._data):
            raise DecodeError(f"{self._what} is truncated")
        chunk = self._data[self._at : self._at + length]
        self._at += length
        return chunk

    def integer(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def version(self) -> None:
        version = self.integer(1)
        if version != _FORMAT:
            raise DecodeError(f"{self._what} has unknown format version {version}")

    def account(self) -> str:
        raw = self.take(self.integer(2))
        try:
            account = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"{self._what} names an account that is not UTF-8") from None
        return account

    def key(self) -> PublicKey:
        return PublicKey.deserialize(self.take(_KEY_LENGTH))

    def end(self) -> None:
        if self._at != len(self._data):
            raise DecodeError(f"{self._what} has trailing bytes")


@dataclass(frozen=True)
class LinkingMetadata:
    """What the primary assigns a companion when it links it: account, device id and link time."""

    account: str
    device_id: int
    linked_at: int
    """Seconds since the epoch, as the primary's clock read it."""

    def __post_init__(self) -> None:
        _account_bytes(self.account)
        _check_device_id(self.device_id)
        if self.device_id == PRIMARY_DEVICE_ID:
            raise DeviceListError("the primary's device id cannot be given to a companion")
        _check_u64(self.linked_at, "linked_at")

    def encode(self) -> bytes:
        account = _account_bytes(self.account)
        return (
            bytes((_FORMAT,))
            + struct.pack(">H", len(account))
            + account
            + struct.pack(">IQ", self.device_id, self.linked_at)
        )

    @classmethod
    def decode(cls, data: bytes) -> LinkingMetadata:
        reader = _Reader(data, "linking metadata")
        reader.version()
        account = reader.account()
        device_id = reader.integer(4)
        linked_at = reader.integer(8)
        reader.end()
        try:
            return cls(account, device_id, linked_at)
        except DeviceListError as exc:
            raise DecodeError(f"linking metadata: {exc}") from None


def account_signature_message(metadata: LinkingMetadata, companion_identity_key: PublicKey) -> bytes:
    """``0x06 0x00 ‖ metadata ‖ companion identity key``: what the primary signs."""
    return ACCOUNT_SIGNATURE_PREFIX + metadata.encode() + companion_identity_key.serialize()


def device_signature_message(
    metadata: LinkingMetadata, companion_identity_key: PublicKey, primary_identity_key: PublicKey
) -> bytes:
    """``0x06 0x01 ‖ metadata ‖ companion identity key ‖ primary identity key``: what the companion signs."""
    return (
        DEVICE_SIGNATURE_PREFIX
        + metadata.encode()
        + companion_identity_key.serialize()
        + primary_identity_key.serialize()
    )


def sign_account(
    primary_identity_private: PrivateKey,
    metadata: LinkingMetadata,
    companion_identity_key: PublicKey,
    rng: Rng,
) -> bytes:
    """The account signature: the primary vouches that ``companion_identity_key`` is its device."""
    return primary_identity_private.sign(account_signature_message(metadata, companion_identity_key), rng)


def sign_device(
    companion_identity_private: PrivateKey,
    metadata: LinkingMetadata,
    primary_identity_key: PublicKey,
    rng: Rng,
) -> bytes:
    """The device signature: the companion confirms its link to ``primary_identity_key``."""
    message = device_signature_message(
        metadata, companion_identity_private.public_key(), primary_identity_key
    )
    return companion_identity_private.sign(message, rng)


def verify_account_signature(
    primary_identity_key: PublicKey,
    metadata: LinkingMetadata,
    companion_identity_key: PublicKey,
    signature: bytes,
) -> None:
    """Raise :class:`~e2e.errors.InvalidSignatureError` unless the primary signed this link."""
    primary_identity_key.verify(account_signature_message(metadata, companion_identity_key), signature)


def verify_device_signature(
    companion_identity_key: PublicKey,
    metadata: LinkingMetadata,
    primary_identity_key: PublicKey,
    signature: bytes,
) -> None:
    """Raise :class:`~e2e.errors.InvalidSignatureError` unless the companion signed this link."""
    message = device_signature_message(metadata, companion_identity_key, primary_identity_key)
    companion_identity_key.verify(message, signature)


@dataclass(frozen=True)
class DeviceIdentity:
    """A companion's credentials: its metadata, its identity key and both linking signatures.

    The relay checks :meth:`verify` against the account's primary identity key before it
    registers the companion.
    """

    metadata: LinkingMetadata
    identity_key: PublicKey
    account_signature: bytes
    device_signature: bytes

    def verify(self, primary_identity_key: PublicKey) -> None:
        """Check both signatures; raises :class:`~e2e.errors.InvalidSignatureError`."""
        if self.identity_key == primary_identity_key:
            raise DeviceListError("a companion's identity key must differ from the primary's")
        verify_account_signature(
            primary_identity_key, self.metadata, self.identity_key, self.account_signature
        )
        verify_device_signature(self.identity_key, self.metadata, primary_identity_key, self.device_signature)

    def encode(self) -> bytes:
        metadata = self.metadata.encode()
        return (
            bytes((_FORMAT,))
            + struct.pack(">H", len(metadata))
            + metadata
            + self.identity_key.serialize()
            + self.account_signature
            + self.device_signature
        )

    @classmethod
    def decode(cls, data: bytes) -> DeviceIdentity:
        reader = _Reader(data, "device identity")
        reader.version()
        metadata = LinkingMetadata.decode(reader.take(reader.integer(2)))
        identity_key = reader.key()
        account_signature = reader.take(_SIGNATURE_LENGTH)
        device_signature = reader.take(_SIGNATURE_LENGTH)
        reader.end()
        return cls(metadata, identity_key, account_signature, device_signature)


@dataclass(frozen=True)
class DeviceEntry:
    """One device of a list: its id and its identity key."""

    device_id: int
    identity_key: PublicKey


@dataclass(frozen=True)
class DeviceList:
    """The account's devices at one version; the primary signs it (:func:`sign_device_list`)."""

    account: str
    version: int
    timestamp: int
    devices: tuple[DeviceEntry, ...]

    def __post_init__(self) -> None:
        _account_bytes(self.account)
        _check_u64(self.version, "version")
        _check_u64(self.timestamp, "timestamp")
        if not isinstance(self.devices, tuple) or not all(isinstance(d, DeviceEntry) for d in self.devices):
            raise DeviceListError("devices is a tuple of DeviceEntry")
        if len(self.devices) > MAX_DEVICES:
            raise DeviceListError(f"a device list holds at most {MAX_DEVICES} devices")
        for entry in self.devices:
            _check_device_id(entry.device_id)
        ids = [entry.device_id for entry in self.devices]
        if ids != sorted(set(ids)):
            raise DeviceListError("devices are listed in increasing device id, each once")
        if len({entry.identity_key for entry in self.devices}) != len(self.devices):
            raise DeviceListError("two devices of a list share an identity key")
        if PRIMARY_DEVICE_ID not in ids:
            raise DeviceListError("a device list always lists the primary")

    @classmethod
    def of(
        cls, account: str, version: int, timestamp: int, devices: Iterable[tuple[int, PublicKey]]
    ) -> DeviceList:
        """Build a list from ``(device_id, identity_key)`` pairs in any order."""
        entries = tuple(DeviceEntry(i, k) for i, k in sorted(devices, key=lambda pair: pair[0]))
        return cls(account, version, timestamp, entries)

    @property
    def primary_identity_key(self) -> PublicKey:
        return self.identity_key(PRIMARY_DEVICE_ID)

    @property
    def device_ids(self) -> tuple[int, ...]:
        return tuple(entry.device_id for entry in self.devices)

    def identity_key(self, device_id: int) -> PublicKey:
        """The identity key listed for ``device_id``; :class:`DeviceListError` if it is not listed."""
        for entry in self.devices:
            if entry.device_id == device_id:
                return entry.identity_key
        raise DeviceListError(f"device {device_id} is not on the list")

    def with_device(self, device_id: int, identity_key: PublicKey, timestamp: int) -> DeviceList:
        """The next version with ``device_id`` added (or its key replaced)."""
        kept = [(e.device_id, e.identity_key) for e in self.devices if e.device_id != device_id]
        return DeviceList.of(self.account, self.version + 1, timestamp, [*kept, (device_id, identity_key)])

    def without_device(self, device_id: int, timestamp: int) -> DeviceList:
        """The next version with ``device_id`` removed; the primary cannot be removed."""
        if device_id == PRIMARY_DEVICE_ID:
            raise DeviceListError("the primary cannot be removed from its own list")
        self.identity_key(device_id)
        kept = [(e.device_id, e.identity_key) for e in self.devices if e.device_id != device_id]
        return DeviceList.of(self.account, self.version + 1, timestamp, kept)

    def encode(self) -> bytes:
        account = _account_bytes(self.account)
        parts = [
            bytes((_FORMAT,)),
            struct.pack(">H", len(account)),
            account,
            struct.pack(">QQB", self.version, self.timestamp, len(self.devices)),
        ]
        for entry in self.devices:
            parts.append(struct.pack(">I", entry.device_id) + entry.identity_key.serialize())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> DeviceList:
        reader = _Reader(data, "device list")
        reader.version()
        account = reader.account()
        version = reader.integer(8)
        timestamp = reader.integer(8)
        count = reader.integer(1)
        if count > MAX_DEVICES:
            raise DecodeError(f"a device list holds at most {MAX_DEVICES} devices")
        devices = []
        for _ in range(count):
            device_id = reader.integer(4)
            devices.append(DeviceEntry(device_id, reader.key()))
        reader.end()
        try:
            return cls(account, version, timestamp, tuple(devices))
        except DeviceListError as exc:
            raise DecodeError(f"device list: {exc}") from None


@dataclass(frozen=True)
class SignedDeviceList:
    """A device list's encoding and the primary's signature over ``0x06 0x02 ‖ encoding``."""

    list_bytes: bytes
    signature: bytes

    def encode(self) -> bytes:
        return bytes((_FORMAT,)) + struct.pack(">I", len(self.list_bytes)) + self.list_bytes + self.signature

    @classmethod
    def decode(cls, data: bytes) -> SignedDeviceList:
        reader = _Reader(data, "signed device list")
        reader.version()
        list_bytes = reader.take(reader.integer(4))
        signature = reader.take(_SIGNATURE_LENGTH)
        reader.end()
        return cls(list_bytes, signature)

    def __repr__(self) -> str:
        return f"SignedDeviceList(<{len(self.list_bytes)} bytes>)"


def sign_device_list(
    primary_identity_private: PrivateKey, device_list: DeviceList, rng: Rng
) -> SignedDeviceList:
    """Sign ``device_list`` with the primary's identity key; the list must name that key as device 1."""
    if device_list.primary_identity_key != primary_identity_private.public_key():
        raise InvalidKeyError("a device list is signed by the identity key it lists for the primary")
    list_bytes = device_list.encode()
    return SignedDeviceList(list_bytes, primary_identity_private.sign(DEVICE_LIST_PREFIX + list_bytes, rng))


def verify_device_list(
    signed: SignedDeviceList | bytes, primary_identity_key: PublicKey, account: str
) -> DeviceList:
    """Check a signed list against the account's primary identity key; return the decoded list.

    Raises :class:`~e2e.errors.DecodeError` (malformed), :class:`~e2e.errors.InvalidSignatureError`
    (not signed by ``primary_identity_key``) or :class:`DeviceListError` (another account's list, or
    one that lists another key as the primary).
    """
    if isinstance(signed, bytes):
        signed = SignedDeviceList.decode(signed)
    primary_identity_key.verify(DEVICE_LIST_PREFIX + signed.list_bytes, signed.signature)
    device_list = DeviceList.decode(signed.list_bytes)
    if device_list.account != account:
        raise DeviceListError("the device list is another account's")
    if device_list.primary_identity_key != primary_identity_key:
        raise DeviceListError("the device list names another identity key as the primary")
    return device_list


def accept_device_list(seen: DeviceList | None, new: DeviceList) -> DeviceList:
    """The rollback check: return ``new`` if it may replace ``seen`` (the newest list held so far).

    A list of a lower version than ``seen`` is refused, and so is a list of the same version with
    other contents (the primary never signs two lists under one version, so that is equivocation or
    forgery).  The same list again is accepted unchanged.  Raises :class:`DeviceListRollbackError`.
    """
    if seen is None:
        return new
    if new.account != seen.account:
        raise DeviceListError("the device lists are of different accounts")
    if new.version < seen.version:
        raise DeviceListRollbackError(
            f"device list version {new.version} is older than {seen.version}, already seen"
        )
    if new.version == seen.version and new != seen:
        raise DeviceListRollbackError(f"a different device list under version {new.version}, already seen")
    return new
