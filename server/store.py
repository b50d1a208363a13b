"""The relay's storage and wake-up interface, independent of any database.

Theory
------
The protocol handling (:mod:`server.relay`) never speaks SQL.  It asks a :class:`Store` to do one
whole operation at a time (register a device, add prekeys, claim a bundle, enqueue a message,
remove acknowledged messages) and the store either commits all of it durably or raises and
changes nothing.  Every awaitable a store hands back completes only **after** the commit is
durable, so the relay can acknowledge a client the moment the awaitable completes and never
acknowledges anything that a crash could take back.

Operations are *submitted when the method is called* (not when the awaitable is first awaited),
and writing operations submitted one after another commit in that order.  The relay relies on this
to pipeline a connection's sends while keeping their order, and a backend is free to commit many
submitted operations in one transaction (group commit) as long as it completes none of them before
that transaction commits.  A read-only operation (``identity_key``, ``prekey_counts``,
``signed_prekey``, ``fetch``) sees at least every commit whose awaitable completed before the read
was submitted; it may run beside later writes.

Wake-ups are part of the interface because they have to cross nodes once there is more than one
relay process: a message committed on one node must wake the recipient's connection on another,
and a device connecting to one node must displace its older connection on another.  A listener
subscribes for one device and receives :class:`DeviceEvent` values on the event loop.  The SQLite
backend delivers them in-process after each commit; a PostgreSQL backend would deliver them with
``LISTEN``/``NOTIFY``.

Prekeys come in kinds (:class:`OneTimeKind` and :class:`SignedKind`) so that a new kind of prekey
(for example another KEM) is one more enum member, not another set of methods.

What this module does not know
------------------------------
Wire formats, base64, signatures (the relay verifies every signature before anything reaches a
store) and the clock: callers pass ``now`` in seconds since the epoch.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DeviceAddress",
    "OneTimeKind",
    "SignedKind",
    "PreKeyRecord",
    "PreKeyUpload",
    "PreKeyCounts",
    "ClaimedBundle",
    "NewMessage",
    "StoredMessage",
    "EnqueueResult",
    "EventKind",
    "DeviceEvent",
    "Listener",
    "Subscription",
    "Store",
    "StoreError",
    "IdentityMismatchError",
    "UnknownDeviceError",
    "UnknownAccountError",
    "KeyIdConflictError",
    "QueueFullError",
    "MessageIdReusedError",
    "UnknownMessageError",
    "GroupMemberRecord",
    "GroupRecord",
    "GroupChange",
    "NewGroupMessage",
    "GroupEnqueueResult",
    "UnknownGroupError",
    "NotAMemberError",
    "GroupExistsError",
    "StaleGroupError",
    "TooManyGroupsError",
    "GROUP_CHANGE_TYPE",
    "TooManyDevicesError",
]


@dataclass(frozen=True, slots=True)
class DeviceAddress:
    """One device of one account: the unit that registers, authenticates and owns a queue."""

    account: str
    device_id: int

    def __str__(self) -> str:
        return f"{self.account}/{self.device_id}"


class OneTimeKind(enum.Enum):
    """Prekeys handed out at most once each."""

    EC = "ec"
    """Curve25519 one-time prekeys (X3DH's OPK); unsigned."""
    KEM = "kem"
    """Signed one-time KEM prekeys (PQXDH's PQOPK)."""
    KYBER = "kyber"
    """Signed one-time Kyber1024 prekeys (Signal's PQXDH, message version 4: libsignal's
    ``KyberPreKey``); kept apart from :attr:`KEM` so that a bundle can offer one of each."""


class SignedKind(enum.Enum):
    """Prekeys that stay current until their owner rotates them."""

    EC = "ec"
    """The Curve25519 signed prekey (X3DH's SPK)."""
    KEM_LAST_RESORT = "kem_last_resort"
    """The last-resort KEM prekey (PQXDH's PQSPK), handed out when no one-time KEM prekey is left."""
    KYBER_LAST_RESORT = "kyber_last_resort"
    """The last-resort Kyber1024 prekey, handed out when no one-time Kyber prekey is left."""


@dataclass(frozen=True, slots=True)
class PreKeyRecord:
    """A public prekey as its owner uploaded it: id, encoded public key, optional signature."""

    key_id: int
    public_key: bytes
    signature: bytes | None = None

    def __repr__(self) -> str:
        return f"PreKeyRecord(key_id={self.key_id}, public_key=<{len(self.public_key)} bytes>)"


@dataclass(frozen=True, slots=True)
class PreKeyUpload:
    """One upload: new signed prekeys (each rotates the current one of its kind) and one-time prekeys."""

    signed: Mapping[SignedKind, PreKeyRecord] = field(default_factory=dict)
    one_time: Mapping[OneTimeKind, Sequence[PreKeyRecord]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PreKeyCounts:
    """How many unclaimed one-time prekeys a device has left, and its current signed prekey ids."""

    one_time: Mapping[OneTimeKind, int]
    signed_ids: Mapping[SignedKind, int]


@dataclass(frozen=True, slots=True)
class ClaimedBundle:
    """What one bundle fetch took from the directory for one device.

    ``one_time`` holds the prekey of each kind that this fetch claimed (and that no other fetch
    will ever receive); a kind is absent when the device had none left.
    """

    device: DeviceAddress
    registration_id: int
    identity_key: bytes
    signed: Mapping[SignedKind, PreKeyRecord]
    one_time: Mapping[OneTimeKind, PreKeyRecord]
    remaining: Mapping[OneTimeKind, int]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message as the relay accepts it from a sender; ``body`` is opaque ciphertext."""

    sender: DeviceAddress
    recipient: DeviceAddress
    client_id: str
    type: int
    body: bytes

    def __repr__(self) -> str:
        return (
            f"NewMessage(sender={self.sender}, recipient={self.recipient}, client_id={self.client_id!r}, "
            f"type={self.type}, body=<{len(self.body)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A queued message with the id the relay gave it; ids grow in commit order."""

    server_id: int
    sender: DeviceAddress
    recipient: DeviceAddress
    client_id: str
    type: int
    body: bytes
    created_at: float
    group_id: bytes | None = None
    """Set for a message fanned out to a group's members: the group it was sent to."""

    def __repr__(self) -> str:
        return (
            f"StoredMessage(server_id={self.server_id}, sender={self.sender}, recipient={self.recipient}, "
            f"body=<{len(self.body)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The server id of a message; ``duplicate`` when the same (sender, client id) was seen before."""

    server_id: int
    duplicate: bool


class EventKind(enum.Enum):
    """Why a device's connection is woken."""

    MESSAGES = "messages"
    """New messages were committed to its queue."""
    PREKEYS_LOW = "prekeys_low"
    """A bundle fetch left it with fewer one-time prekeys than the low-water mark."""
    DISPLACED = "displaced"
    """A newer connection of the same device authenticated; older ones must close."""
    REMOVED = "removed"
    """The primary's new device list dropped this device (server/device_store.py); it must close."""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """A wake-up for one device.  ``epoch`` is set for DISPLACED: the winning connection's epoch."""

    kind: EventKind
    epoch: int = 0


Listener = Callable[[DeviceEvent], None]
"""Called on the event loop, never concurrently with itself; it must not block."""


class Subscription(Protocol):
    """The handle :meth:`Store.subscribe` returns; ``close`` stops the events."""

    def close(self) -> None: ...


class StoreError(Exception):
    """Base of the errors a store raises; the operation that raised it changed nothing."""


class IdentityMismatchError(StoreError):
    """The account is bound to a different identity key."""


class UnknownDeviceError(StoreError):
    """No such device is registered."""


class UnknownAccountError(StoreError):
    """No such account is registered."""


class KeyIdConflictError(StoreError):
    """A prekey id that is already in use with different key material, or repeated in one upload."""


class QueueFullError(StoreError):
    """The recipient's queue is at its message or byte cap."""


class MessageIdReusedError(StoreError):
    """A client message id the sender already used for a different message."""


class TooManyDevicesError(StoreError):
    """A new device for an account that already has as many devices as allowed."""


class UnknownMessageError(StoreError):
    """An acknowledgement naming a message that is not in the acknowledging device's queue."""

    def __init__(self, message: str, server_ids: Sequence[int]) -> None:
        super().__init__(message)
        self.server_ids = tuple(server_ids)


# Groups.

GROUP_CHANGE_TYPE = 250
"""The message type of a membership change fanned out by the relay (a group send may not use it)."""


@dataclass(frozen=True, slots=True)
class GroupMemberRecord:
    """One member of a group as the relay keeps it: the account, its identity key, admin or not."""

    account: str
    identity_key: bytes
    admin: bool


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A group's current state: its epoch, the digest and bytes of its newest change, its members."""

    group_id: bytes
    epoch: int
    digest: bytes
    change: bytes
    members: tuple[GroupMemberRecord, ...]

    def member(self, account: str) -> GroupMemberRecord | None:
        for member in self.members:
            if member.account == account:
                return member
        return None

    def __repr__(self) -> str:
        return f"GroupRecord(group_id={self.group_id.hex()}, epoch={self.epoch}, members={len(self.members)})"


@dataclass(frozen=True, slots=True)
class GroupChange:
    """A membership change the relay has verified, to commit: the new state and who sent it.

    ``previous_digest`` is the digest of the change at ``epoch - 1`` (None when ``epoch`` is 0, the
    group's creation); the store commits the change only if that is still the group's newest one.
    """

    group_id: bytes
    epoch: int
    previous_digest: bytes | None
    digest: bytes
    change: bytes
    members: tuple[GroupMemberRecord, ...]
    sender: DeviceAddress

    def __repr__(self) -> str:
        return f"GroupChange(group_id={self.group_id.hex()}, epoch={self.epoch}, members={len(self.members)})"


@dataclass(frozen=True, slots=True)
class NewGroupMessage:
    """A message for every member device of a group but the sender's; ``body`` is opaque ciphertext."""

    sender: DeviceAddress
    group_id: bytes
    client_id: str
    type: int
    body: bytes

    def __repr__(self) -> str:
        return (
            f"NewGroupMessage(sender={self.sender}, group_id={self.group_id.hex()}, "
            f"client_id={self.client_id!r}, type={self.type}, body=<{len(self.body)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class GroupEnqueueResult:
    """The server id of a group message's first copy and how many devices it was queued for."""

    server_id: int
    duplicate: bool
    recipients: int


class UnknownGroupError(StoreError):
    """No such group."""


class NotAMemberError(StoreError):
    """The account is not a member of the group."""


class GroupExistsError(StoreError):
    """A group with this id was already created."""


class StaleGroupError(StoreError):
    """The change does not follow the group's newest change (another change was committed first)."""


class TooManyGroupsError(StoreError):
    """An account added to a group is already in as many groups as the relay allows."""


class Store(Protocol):
    """Durable storage for devices, prekeys and queues, and the wake-ups between connections.

    Every method that returns an :class:`~collections.abc.Awaitable` submits its operation at call
    time; the awaitable completes after the operation is durably committed, or raises a
    :class:`StoreError` subclass (or another exception) after the operation changed nothing.
    """

    async def open(self) -> None:
        """Create or migrate the schema and start any worker; idempotent."""
        ...

    async def close(self) -> None:
        """Finish submitted operations and release every resource."""
        ...

    # Devices.

    def register_device(
        self,
        device: DeviceAddress,
        identity_key: bytes,
        registration_id: int,
        now: float,
        *,
        max_devices: int | None = None,
    ) -> Awaitable[bool]:
        """Bind ``device`` to ``identity_key``; True when newly created.

        The first registration of an account binds its identity key; later devices of the account
        must present the same key (:class:`IdentityMismatchError` otherwise).  Registering an
        existing device again updates its registration id (libsignal's per-install number, which
        bundles carry).  A new device beyond ``max_devices`` of its account raises
        :class:`TooManyDevicesError` (None: no cap); concurrent registrations cannot overshoot it.
        """
        ...

    def identity_key(self, device: DeviceAddress) -> Awaitable[bytes]:
        """The identity key ``device`` registered with (:class:`UnknownDeviceError` if none)."""
        ...

    def begin_connection(self, device: DeviceAddress, now: float) -> Awaitable[int]:
        """Record a newly authenticated connection; returns its epoch, larger than any before.

        After the commit, every subscriber of ``device`` receives ``DeviceEvent(DISPLACED, epoch)``.
        """
        ...

    # Prekeys.

    def put_prekeys(
        self, device: DeviceAddress, upload: PreKeyUpload, now: float, grace: float
    ) -> Awaitable[PreKeyCounts]:
        """Store an upload whose signatures the caller has verified, all or nothing.

        A signed prekey with a new id becomes current and the previous one is kept (retired) for
        ``grace`` seconds.  One-time prekey ids must be new (:class:`KeyIdConflictError`).
        """
        ...

    def prekey_counts(self, device: DeviceAddress) -> Awaitable[PreKeyCounts]:
        """The device's remaining one-time prekeys per kind and its current signed prekey ids."""
        ...

    def signed_prekey(
        self, device: DeviceAddress, kind: SignedKind, key_id: int, now: float, grace: float
    ) -> Awaitable[PreKeyRecord | None]:
        """A current signed prekey, or a retired one still inside its grace period."""
        ...

    def claim_bundles(
        self, account: str, device_id: int | None, low_water: int
    ) -> Awaitable[list[ClaimedBundle]]:
        """Claim, atomically and at most once each, one one-time prekey of every kind per device.

        Covers the one device named, or every device of the account that has a signed prekey when
        ``device_id`` is None.  Devices left below ``low_water`` one-time prekeys of a kind get a
        PREKEYS_LOW event after the commit.  Raises :class:`UnknownAccountError` or
        :class:`UnknownDeviceError`.
        """
        ...

    # Messages.

    def enqueue(
        self, message: NewMessage, now: float, ttl: float, max_messages: int, max_bytes: int
    ) -> Awaitable[EnqueueResult]:
        """Commit ``message`` to its recipient's queue, or return the first copy's id.

        A repeated (sender, client id) with the same recipient, type and body stores nothing and
        returns the earlier server id with ``duplicate`` set; with different content it raises
        :class:`MessageIdReusedError`.  Raises :class:`UnknownDeviceError` for an unknown recipient
        and :class:`QueueFullError` at the caps.  Messages expired by ``now`` do not count against
        the caps.  The recipient's subscribers get MESSAGES after the commit.
        """
        ...

    def fetch(
        self, recipient: DeviceAddress, after_server_id: int, limit: int, now: float
    ) -> Awaitable[list[StoredMessage]]:
        """Up to ``limit`` unexpired messages of ``recipient`` with larger ids, in id order."""
        ...

    def ack(self, recipient: DeviceAddress, server_ids: Sequence[int], now: float) -> Awaitable[int]:
        """Delete the named messages from ``recipient``'s own queue, all or nothing.

        Raises :class:`UnknownMessageError` (deleting nothing) if any id is not in that queue, or
        names a message that expired by ``now`` (expired messages are gone for their recipient
        even before :meth:`expire` deletes them).
        """
        ...

    def expire(self, now: float) -> Awaitable[int]:
        """Delete expired messages and forgotten duplicate-detection entries; returns messages removed."""
        ...

    # Wake-ups.

    def subscribe(self, device: DeviceAddress, listener: Listener) -> Subscription:
        """Deliver ``device``'s events to ``listener`` until the subscription is closed."""
        ...

    # Groups.

    def group(self, group_id: bytes) -> Awaitable[GroupRecord | None]:
        """The group's current state, or None for an unknown group."""
        ...

    def apply_group_change(
        self, change: GroupChange, now: float, ttl: float, max_groups_per_account: int
    ) -> Awaitable[int]:
        """Commit a verified membership change and queue it for the members' devices; all or nothing.

        The change replaces the member list and is queued (type :data:`GROUP_CHANGE_TYPE`, with the
        group id, client id ``membership:<group id hex>:<epoch>``) for every device of every account
        in the old or the new list, the sender's own device included (so that a sender that lost its
        local commit of the change still learns it); returns how many devices that is.

        Raises :class:`GroupExistsError` (epoch 0 for an existing group), :class:`UnknownGroupError`,
        :class:`StaleGroupError` (the group's newest change is not ``change.previous_digest``),
        :class:`UnknownAccountError`, :class:`IdentityMismatchError` (a member's identity key is
        not its account's) and :class:`TooManyGroupsError`.  The devices' subscribers get MESSAGES
        after the commit.
        """
        ...

    def group_changes(self, group_id: bytes, after_epoch: int, limit: int) -> Awaitable[list[bytes]]:
        """Up to ``limit`` of the group's changes with epochs above ``after_epoch`` (-1: all), in order."""
        ...

    def enqueue_group(
        self, message: NewGroupMessage, now: float, ttl: float, max_messages: int, max_bytes: int
    ) -> Awaitable[GroupEnqueueResult]:
        """Queue one body for every device of every member but the sender's device, in one commit.

        Deduplicated by (sender, client id) as :meth:`enqueue` is.  Raises
        :class:`UnknownGroupError`, :class:`NotAMemberError` (the sender's account is not a member)
        and :class:`QueueFullError` (any recipient at its caps: nothing is queued for anyone).
        """
        ...
