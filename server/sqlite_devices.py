"""Linked devices in the SQLite backend: the ``devices`` schema migration and the device-list operations.

:class:`SQLiteDeviceOps` is a mixin of :class:`server.sqlite_store.SQLiteStore`; its operations run
like every other one there (writes on the writer thread inside the batch transaction, reads on the
loop).  What the operations mean is :mod:`server.device_store`'s docstring.

The migration (schema version 1 → the ``devices`` version) gives every device its own identity key
column, filled from its account's key (so a version 1 account, whose devices all shared one key,
becomes a primary whose key is that key), and adds the ``device_lists`` and ``link_mailboxes``
tables.  It runs inside the writer's opening transaction with the version bump, so it is applied
entirely or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.device_store import (
    MAX_PENDING_LINKS,
    DeviceListUpdate,
    MailboxFullError,
    NotOnDeviceListError,
    StaleDeviceListError,
    StoredDeviceList,
)
from server.store import DeviceAddress, DeviceEvent, EventKind, KeyIdConflictError, UnknownAccountError

__all__ = ["DEVICES_MIGRATION", "SQLiteDeviceOps", "remove_device_rows"]

DEVICES_MIGRATION = """
ALTER TABLE devices ADD COLUMN identity_key BLOB;
UPDATE devices SET identity_key = (SELECT a.identity_key FROM accounts a WHERE a.account = devices.account);
CREATE TABLE device_lists (
    account TEXT PRIMARY KEY REFERENCES accounts(account),
    version INTEGER NOT NULL,
    signed BLOB NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE link_mailboxes (
    mailbox BLOB PRIMARY KEY,
    account TEXT NOT NULL,
    payload BLOB NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX link_mailboxes_by_account ON link_mailboxes (account);
"""
"""Schema version 1 → 2 ("devices"): per-device identity keys, device lists, linking mailboxes."""


def remove_device_rows(db: Any, account: str, device_id: int) -> None:
    """Delete a device with its prekeys and its queue (inside the caller's transaction)."""
    owner = (account, device_id)
    db.execute("DELETE FROM one_time_prekeys WHERE account = ? AND device_id = ?", owner)
    db.execute("DELETE FROM signed_prekeys WHERE account = ? AND device_id = ?", owner)
    db.execute("DELETE FROM messages WHERE recipient_account = ? AND recipient_device = ?", owner)
    db.execute("DELETE FROM queues WHERE account = ? AND device_id = ?", owner)
    db.execute("DELETE FROM devices WHERE account = ? AND device_id = ?", owner)


class SQLiteDeviceOps:
    """The :class:`server.device_store.DeviceStore` operations on the SQLite store's connections."""

    _submit: Callable[[Callable[[Any], Any]], Any]
    _read: Callable[[Callable[[Any], Any]], Any]

    def device_list(self, account: str) -> Any:
        def op(txn: Any) -> StoredDeviceList | None:
            row = txn.db.execute(
                "SELECT version, signed, updated_at FROM device_lists WHERE account = ?", (account,)
            ).fetchone()
            if row is None:
                return None
            return StoredDeviceList(account, int(row[0]), bytes(row[1]), float(row[2]))

        return self._read(op)

    def put_device_list(
        self, account: str, version: int, signed: bytes, listed: Mapping[int, bytes], now: float
    ) -> Any:
        def op(txn: Any) -> DeviceListUpdate:
            db = txn.db
            if db.execute("SELECT 1 FROM accounts WHERE account = ?", (account,)).fetchone() is None:
                raise UnknownAccountError(f"no account {account!r}")
            row = db.execute("SELECT version FROM device_lists WHERE account = ?", (account,)).fetchone()
            if row is not None and version <= int(row[0]):
                raise StaleDeviceListError(f"device list version {version} is not above the stored {row[0]}")
            db.execute(
                "INSERT INTO device_lists (account, version, signed, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (account) DO UPDATE SET version = excluded.version, signed = excluded.signed, "
                "updated_at = excluded.updated_at",
                (account, version, signed, now),
            )
            removed = []
            for device_id, key in db.execute(
                "SELECT device_id, identity_key FROM devices WHERE account = ? ORDER BY device_id", (account,)
            ).fetchall():
                if listed.get(int(device_id)) != bytes(key):
                    remove_device_rows(db, account, int(device_id))
                    removed.append(int(device_id))
                    txn.notify(DeviceAddress(account, int(device_id)), DeviceEvent(EventKind.REMOVED))
            return DeviceListUpdate(version, tuple(removed))

        return self._submit(op)

    def register_companion(
        self, device: DeviceAddress, identity_key: bytes, registration_id: int, list_version: int, now: float
    ) -> Any:
        def op(txn: Any) -> bool:
            db = txn.db
            if db.execute("SELECT 1 FROM accounts WHERE account = ?", (device.account,)).fetchone() is None:
                raise UnknownAccountError(f"no account {device.account!r}")
            row = db.execute(
                "SELECT version FROM device_lists WHERE account = ?", (device.account,)
            ).fetchone()
            if row is None or int(row[0]) != list_version:
                raise NotOnDeviceListError("the account's device list changed; try again")
            existing = db.execute(
                "SELECT identity_key FROM devices WHERE account = ? AND device_id = ?",
                (device.account, device.device_id),
            ).fetchone()
            if existing is not None and bytes(existing[0]) != identity_key:
                raise NotOnDeviceListError("this device id is registered with another identity key")
            db.execute(
                "INSERT INTO devices "
                "(account, device_id, registration_id, created_at, last_seen, identity_key) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (account, device_id) DO UPDATE SET registration_id = excluded.registration_id",
                (device.account, device.device_id, registration_id, now, now, identity_key),
            )
            return existing is None

        return self._submit(op)

    def put_link_payload(self, account: str, mailbox: bytes, payload: bytes, now: float, ttl: float) -> Any:
        def op(txn: Any) -> None:
            db = txn.db
            db.execute("DELETE FROM link_mailboxes WHERE expires_at <= ?", (now,))
            holder = db.execute("SELECT account FROM link_mailboxes WHERE mailbox = ?", (mailbox,)).fetchone()
            if holder is not None and holder[0] != account:
                raise KeyIdConflictError("another account holds this mailbox")
            if holder is None:
                (waiting,) = db.execute(
                    "SELECT COUNT(*) FROM link_mailboxes WHERE account = ?", (account,)
                ).fetchone()
                if int(waiting) >= MAX_PENDING_LINKS:
                    raise MailboxFullError(f"at most {MAX_PENDING_LINKS} linking payloads may wait at once")
            db.execute(
                "INSERT INTO link_mailboxes (mailbox, account, payload, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (mailbox) DO UPDATE SET payload = excluded.payload, "
                "expires_at = excluded.expires_at",
                (mailbox, account, payload, now + ttl),
            )

        return self._submit(op)

    def take_link_payload(self, mailbox: bytes, now: float) -> Any:
        def op(txn: Any) -> bytes | None:
            row = txn.db.execute(
                "DELETE FROM link_mailboxes WHERE mailbox = ? RETURNING payload, expires_at", (mailbox,)
            ).fetchone()
            if row is None or float(row[1]) <= now:
                return None
            return bytes(row[0])

        return self._submit(op)
