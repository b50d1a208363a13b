"""Linked devices in the PostgreSQL backend: the device-list operations of ``0004_devices.sql``.

:class:`PostgresDeviceOps` is a mixin of :class:`server.pg_store.PostgresStore`; its operations run
like every other one there (``_submit`` orders them per key, each is one transaction, wake-ups go
out after the commit through the store's LISTEN/NOTIFY machinery).  What they mean is
:mod:`server.device_store`'s docstring.

Concurrency: every operation that reads or changes an account's list or its set of devices first
locks the account's ``accounts`` row, so on any number of nodes list updates and companion
registrations of one account take turns.  Removing a device locks its ``queues`` row before it
deletes the queue's messages, the same order every enqueue and acknowledgement uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any

from server.device_store import (
    MAX_PENDING_LINKS,
    DeviceListUpdate,
    MailboxFullError,
    NotOnDeviceListError,
    StaleDeviceListError,
    StoredDeviceList,
)
from server.store import DeviceAddress, EventKind, KeyIdConflictError, UnknownAccountError

__all__ = ["PostgresDeviceOps", "remove_device_rows"]


async def remove_device_rows(conn: Any, account: str, device_id: int) -> None:
    """Delete a device with its prekeys and its queue (inside the caller's transaction)."""
    await conn.execute(
        "SELECT 1 FROM queues WHERE account = $1 AND device_id = $2 FOR UPDATE", account, device_id
    )
    for statement in (
        "DELETE FROM one_time_prekeys WHERE account = $1 AND device_id = $2",
        "DELETE FROM signed_prekeys WHERE account = $1 AND device_id = $2",
        "DELETE FROM messages WHERE recipient_account = $1 AND recipient_device = $2",
        "DELETE FROM queues WHERE account = $1 AND device_id = $2",
        "DELETE FROM devices WHERE account = $1 AND device_id = $2",
    ):
        await conn.execute(statement, account, device_id)


async def _lock_account(conn: Any, account: str) -> None:
    if await conn.fetchval("SELECT 1 FROM accounts WHERE account = $1 FOR UPDATE", account) is None:
        raise UnknownAccountError(f"no account {account!r}")


class PostgresDeviceOps:
    """The :class:`server.device_store.DeviceStore` operations on the PostgreSQL store's pool."""

    _submit: Callable[[Sequence[Hashable], Callable[[Any], Awaitable[tuple[Any, list[Any]]]]], Any]

    def device_list(self, account: str) -> Any:
        async def op(conn: Any) -> tuple[StoredDeviceList | None, list[Any]]:
            row = await conn.fetchrow(
                "SELECT version, signed, updated_at FROM device_lists WHERE account = $1", account
            )
            if row is None:
                return None, []
            return StoredDeviceList(account, int(row[0]), bytes(row[1]), float(row[2])), []

        return self._submit((("account", account),), op)

    def put_device_list(
        self, account: str, version: int, signed: bytes, listed: Mapping[int, bytes], now: float
    ) -> Any:
        async def op(conn: Any) -> tuple[DeviceListUpdate, list[Any]]:
            events = []
            async with conn.transaction():
                await _lock_account(conn, account)
                stored = await conn.fetchval("SELECT version FROM device_lists WHERE account = $1", account)
                if stored is not None and version <= int(stored):
                    raise StaleDeviceListError(
                        f"device list version {version} is not above the stored {stored}"
                    )
                await conn.execute(
                    "INSERT INTO device_lists (account, version, signed, updated_at) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (account) DO UPDATE SET version = excluded.version, "
                    "signed = excluded.signed, updated_at = excluded.updated_at",
                    account,
                    version,
                    signed,
                    now,
                )
                removed = []
                for row in await conn.fetch(
                    "SELECT device_id, identity_key FROM devices WHERE account = $1 ORDER BY device_id",
                    account,
                ):
                    device_id = int(row[0])
                    if listed.get(device_id) != bytes(row[1]):
                        await remove_device_rows(conn, account, device_id)
                        removed.append(device_id)
                        events.append((DeviceAddress(account, device_id), EventKind.REMOVED, 0))
            return DeviceListUpdate(version, tuple(removed)), events

        return self._submit((("account", account),), op)

    def register_companion(
        self, device: DeviceAddress, identity_key: bytes, registration_id: int, list_version: int, now: float
    ) -> Any:
        async def op(conn: Any) -> tuple[bool, list[Any]]:
            async with conn.transaction():
                await _lock_account(conn, device.account)
                stored = await conn.fetchval(
                    "SELECT version FROM device_lists WHERE account = $1", device.account
                )
                if stored is None or int(stored) != list_version:
                    raise NotOnDeviceListError("the account's device list changed; try again")
                existing = await conn.fetchval(
                    "SELECT identity_key FROM devices WHERE account = $1 AND device_id = $2",
                    device.account,
                    device.device_id,
                )
                if existing is not None and bytes(existing) != identity_key:
                    raise NotOnDeviceListError("this device id is registered with another identity key")
                await conn.execute(
                    "INSERT INTO devices "
                    "(account, device_id, registration_id, created_at, last_seen, identity_key) "
                    "VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (account, device_id) "
                    "DO UPDATE SET registration_id = excluded.registration_id",
                    device.account,
                    device.device_id,
                    registration_id,
                    now,
                    identity_key,
                )
                await conn.execute(
                    "INSERT INTO queues (account, device_id) VALUES ($1, $2) "
                    "ON CONFLICT (account, device_id) DO NOTHING",
                    device.account,
                    device.device_id,
                )
            return existing is None, []

        return self._submit((device, ("account", device.account)), op)

    def put_link_payload(self, account: str, mailbox: bytes, payload: bytes, now: float, ttl: float) -> Any:
        async def op(conn: Any) -> tuple[None, list[Any]]:
            async with conn.transaction():
                await _lock_account(conn, account)
                await conn.execute("DELETE FROM link_mailboxes WHERE expires_at <= $1", now)
                holder = await conn.fetchval("SELECT account FROM link_mailboxes WHERE mailbox = $1", mailbox)
                if holder is not None and holder != account:
                    raise KeyIdConflictError("another account holds this mailbox")
                if holder is None:
                    waiting = await conn.fetchval(
                        "SELECT count(*) FROM link_mailboxes WHERE account = $1", account
                    )
                    if int(waiting) >= MAX_PENDING_LINKS:
                        raise MailboxFullError(
                            f"at most {MAX_PENDING_LINKS} linking payloads may wait at once"
                        )
                await conn.execute(
                    "INSERT INTO link_mailboxes (mailbox, account, payload, expires_at) "
                    "VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (mailbox) DO UPDATE SET payload = excluded.payload, "
                    "expires_at = excluded.expires_at",
                    mailbox,
                    account,
                    payload,
                    now + ttl,
                )
            return None, []

        return self._submit((("account", account),), op)

    def take_link_payload(self, mailbox: bytes, now: float) -> Any:
        async def op(conn: Any) -> tuple[bytes | None, list[Any]]:
            row = await conn.fetchrow(
                "DELETE FROM link_mailboxes WHERE mailbox = $1 RETURNING payload, expires_at", mailbox
            )
            if row is None or float(row[1]) <= now:
                return None, []
            return bytes(row[0]), []

        return self._submit((("mailbox", mailbox),), op)
