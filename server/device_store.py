"""The store's half of linked devices: signed device lists, companions and linking mailboxes.

Theory
------
An account is a **primary** (device 1, whose identity key the account row holds) and the
**companions** the primary has linked, each with an identity key of its own.  The primary publishes
a *signed device list* (``e2e.devices``); the relay verifies the signature against the account's
primary identity key before it calls :meth:`DeviceStore.put_device_list`, and the store keeps only
the newest list per account, refusing any version that is not larger than the stored one.  Putting a
list is also how a device is **removed**: every registered device of the account that the new list
does not name (with the same identity key) is deleted in the same transaction, with its prekeys and
its queue, and its connections get a REMOVED wake-up after the commit.

A companion is registered only when the stored list names it with the identity key it presents
(:meth:`DeviceStore.register_companion`; the relay has checked its account and device signatures
before).  So at every commit the registered devices of an account that has a list are exactly the
listed ones that have registered, and a removed device can neither connect nor upload prekeys
(it has no row any more).  An account without a list is a primary alone (or, in a store migrated
from schema version 1, its devices that shared the primary's key until the primary's first list).

A **linking mailbox** holds one sealed linking payload from a primary for a companion that is not
registered yet, under a 16-byte id derived from the linking secret the relay never sees
(``e2e.linking``).  Taking it deletes it, so a payload is delivered at most once; it expires after a
TTL, and one account has at most a few waiting at a time.

What this module does not know
------------------------------
Signatures and encodings (the relay checks them), SQL (the backends), the clock (``now`` is passed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Protocol

from server.store import DeviceAddress, Store, StoreError

__all__ = [
    "StoredDeviceList",
    "DeviceListUpdate",
    "DeviceStore",
    "RelayStore",
    "StaleDeviceListError",
    "NotOnDeviceListError",
    "MailboxFullError",
    "MAX_PENDING_LINKS",
]

MAX_PENDING_LINKS = 4
"""Linking payloads one account may have waiting at once."""


@dataclass(frozen=True, slots=True)
class StoredDeviceList:
    """The newest signed device list of an account, as the primary uploaded it."""

    account: str
    version: int
    signed: bytes
    updated_at: float

    def __repr__(self) -> str:
        return (
            f"StoredDeviceList(account={self.account!r}, version={self.version}, <{len(self.signed)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class DeviceListUpdate:
    """What putting a list changed: the version now stored and the devices it removed."""

    version: int
    removed: tuple[int, ...]


class StaleDeviceListError(StoreError):
    """A device list whose version is not larger than the stored one (a rollback or a replay)."""


class NotOnDeviceListError(StoreError):
    """A companion that the account's signed device list does not name with this identity key."""


class MailboxFullError(StoreError):
    """The account already has as many linking payloads waiting as it may."""


class DeviceStore(Protocol):
    """The device-list operations every :class:`server.store.Store` backend offers."""

    def device_list(self, account: str) -> Awaitable[StoredDeviceList | None]:
        """The account's newest list, or None (an account without a list, or no such account)."""
        ...

    def put_device_list(
        self, account: str, version: int, signed: bytes, listed: Mapping[int, bytes], now: float
    ) -> Awaitable[DeviceListUpdate]:
        """Store a verified list, removing every registered device not named in ``listed``.

        ``listed`` maps each listed device id to its identity key.  Raises
        :class:`StaleDeviceListError` when ``version`` is not above the stored one and
        :class:`~server.store.UnknownAccountError` for an unknown account.  Every removed device's
        subscribers get REMOVED after the commit.
        """
        ...

    def register_companion(
        self, device: DeviceAddress, identity_key: bytes, registration_id: int, list_version: int, now: float
    ) -> Awaitable[bool]:
        """Register a companion that list ``list_version`` names with ``identity_key``; True when new.

        The relay has read the stored list, checked that it names the companion with this key and
        passes its version; the store refuses (:class:`NotOnDeviceListError`) unless that version is
        still the stored one, so a list put in between cannot miss the new device.  Also raises
        :class:`NotOnDeviceListError` when the device id is registered with another key, and
        :class:`~server.store.UnknownAccountError`.
        """
        ...

    def put_link_payload(
        self, account: str, mailbox: bytes, payload: bytes, now: float, ttl: float
    ) -> Awaitable[None]:
        """Leave a sealed linking payload at ``mailbox`` (replacing one the same account left there).

        Raises :class:`MailboxFullError` when the account has :data:`MAX_PENDING_LINKS` others
        waiting, and :class:`~server.store.KeyIdConflictError` when another account holds the mailbox.
        """
        ...

    def take_link_payload(self, mailbox: bytes, now: float) -> Awaitable[bytes | None]:
        """Remove and return the unexpired payload at ``mailbox``, or None."""
        ...


class RelayStore(Store, DeviceStore, Protocol):
    """What the relay runs on: the core store interface and the device-list operations."""
