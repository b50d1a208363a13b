"""The client's local group state: verified membership chains, sender keys, shares and held messages.

What this module owns
---------------------
:class:`GroupStore`, tables in the device's own SQLite file (the same connection and transactions
as :class:`client.store.Store`, so one transaction can hold a session's new state *and* a group's),
versioned separately in ``group_meta`` so that the client store's own schema steps stay untouched:

* ``groups``: one row per group we have verified, with its title, newest epoch and change, and
  whether we are still in it; ``group_changes``: every verified change, in epoch order;
* ``sender_keys``: one serialized :class:`e2e.sender_key_state.SenderKeyRecord` per
  (sender, device, distribution), ours included (:class:`SenderKeyStoreAdapter` is the core's
  :class:`e2e.group_cipher.SenderKeyStore` over it);
* ``sender_key_shares``: to which member device we handed our *current* chain, the exact
  distribution message we gave it (sent again, and only that, when it asks), and how many times it
  asked (the bound on answers);
* ``group_history``: group plaintexts in and out; ``group_outbox``: our encrypted group messages
  not yet acknowledged by the relay;
* ``group_pending``: group ciphertexts we could not decrypt yet for want of a sender key, with the
  retry requests we sent for them; ``group_pending_keys``: distribution messages that arrived before
  their group did; ``group_sync``: groups whose chain must be fetched from the relay (kept until
  it is, across reconnections and restarts); ``group_refused``: what was refused and why (shown to
  the user).

Invariants
----------
Every record is the core's versioned serialization or a membership change's own bytes; nothing is
pickled.  A file whose ``group_meta`` version is unknown is refused with
:class:`client.store.StoreFormatError`.

What it does not know
---------------------
The protocol: it stores bytes and never verifies anything (:mod:`client.groups` does).
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field

from client.store import Store, StoreFormatError
from e2e.group_cipher import SenderKeyName
from e2e.sender_key_state import SenderKeyRecord

__all__ = [
    "GROUP_SCHEMA_VERSION",
    "GroupRow",
    "GroupHistoryEntry",
    "PendingGroupMessage",
    "Share",
    "GroupStore",
    "SenderKeyStoreAdapter",
]

GROUP_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS group_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    group_id BLOB PRIMARY KEY,
    title TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    change BLOB NOT NULL,
    active INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_changes (
    group_id BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    change BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
);
CREATE TABLE IF NOT EXISTS sender_keys (
    sender TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    distribution_id BLOB NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (sender, device_id, distribution_id)
);
CREATE TABLE IF NOT EXISTS sender_key_shares (
    group_id BLOB NOT NULL,
    member TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    chain_id INTEGER NOT NULL,
    distribution BLOB NOT NULL,
    answers INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, member, device_id)
);
CREATE TABLE IF NOT EXISTS group_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    direction TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS group_history_by_group ON group_history (group_id, seq);
CREATE TABLE IF NOT EXISTS group_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    client_id TEXT NOT NULL,
    message_type INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS group_pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    relay_timestamp INTEGER NOT NULL,
    chain_id INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_retries (
    group_id BLOB NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    chain_id INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender, sender_device, chain_id)
);
CREATE TABLE IF NOT EXISTS group_pending_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    content BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS group_sync (
    group_id BLOB PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS group_refused (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id BLOB NOT NULL,
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    what TEXT NOT NULL,
    error TEXT NOT NULL,
    at INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class GroupRow:
    group_id: bytes
    title: str
    epoch: int
    change: bytes
    active: bool


@dataclass(frozen=True, slots=True)
class GroupHistoryEntry:
    seq: int
    group_id: bytes
    direction: str
    sender: str
    sender_device: int
    message_id: str
    timestamp: int
    body: bytes

    def __repr__(self) -> str:
        return f"GroupHistoryEntry(seq={self.seq}, {self.direction} {self.sender}/{self.sender_device})"


@dataclass(frozen=True, slots=True)
class PendingGroupMessage:
    seq: int
    group_id: bytes
    sender: str
    sender_device: int
    client_id: str
    relay_timestamp: int
    chain_id: int
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Share:
    """The distribution message (which holds our chain key) we gave one member device."""

    chain_id: int
    distribution: bytes = field(repr=False)
    answers: int = 0


class GroupStore:
    """Group tables in ``store``'s file, used inside ``store.transaction()`` like the rest."""

    def __init__(self, store: Store) -> None:
        self._store = store
        db: sqlite3.Connection = store._db
        self._db = db
        with store.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM group_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO group_meta (key, value) VALUES ('schema_version', ?)",
                    (str(GROUP_SCHEMA_VERSION),),
                )
            elif row[0] != str(GROUP_SCHEMA_VERSION):
                raise StoreFormatError(
                    f"group tables of version {row[0]}; this code reads {GROUP_SCHEMA_VERSION}"
                )

    def _write(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self._store.transaction():
            return self._db.execute(sql, parameters)

    # -- groups and their chains ------------------------------------------------------------------

    def group(self, group_id: bytes) -> GroupRow | None:
        row = self._db.execute(
            "SELECT group_id, title, epoch, change, active FROM groups WHERE group_id = ?", (group_id,)
        ).fetchone()
        return (
            None if row is None else GroupRow(bytes(row[0]), row[1], int(row[2]), bytes(row[3]), bool(row[4]))
        )

    def groups(self) -> list[GroupRow]:
        return [
            GroupRow(bytes(r[0]), r[1], int(r[2]), bytes(r[3]), bool(r[4]))
            for r in self._db.execute(
                "SELECT group_id, title, epoch, change, active FROM groups ORDER BY title"
            )
        ]

    def put_group(
        self, group_id: bytes, title: str, epoch: int, change: bytes, active: bool, now: int
    ) -> None:
        self._write(
            "INSERT INTO groups (group_id, title, epoch, change, active, updated_at) VALUES (?, ?, ?, ?, ?, "
            "?) "
            "ON CONFLICT (group_id) DO UPDATE SET epoch = excluded.epoch, change = excluded.change, "
            "active = excluded.active, updated_at = excluded.updated_at",
            (group_id, title, epoch, change, int(active), now),
        )

    def set_title(self, group_id: bytes, title: str) -> None:
        self._write("UPDATE groups SET title = ? WHERE group_id = ?", (title, group_id))

    def add_change(self, group_id: bytes, epoch: int, change: bytes) -> None:
        self._write(
            "INSERT OR REPLACE INTO group_changes (group_id, epoch, change) VALUES (?, ?, ?)",
            (group_id, epoch, change),
        )

    def change_at(self, group_id: bytes, epoch: int) -> bytes | None:
        row = self._db.execute(
            "SELECT change FROM group_changes WHERE group_id = ? AND epoch = ?", (group_id, epoch)
        ).fetchone()
        return None if row is None else bytes(row[0])

    # -- sender keys --------------------------------------------------------------------------------

    def sender_key(self, name: SenderKeyName) -> bytes | None:
        row = self._db.execute(
            "SELECT record FROM sender_keys WHERE sender = ? AND device_id = ? AND distribution_id = ?",
            (name.sender_name, name.device_id, name.distribution_id.bytes),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put_sender_key(self, name: SenderKeyName, record: bytes) -> None:
        self._write(
            "INSERT OR REPLACE INTO sender_keys (sender, device_id, distribution_id, record) VALUES (?, ?, "
            "?, ?)",
            (name.sender_name, name.device_id, name.distribution_id.bytes, record),
        )

    def remove_sender_keys(
        self, distribution_id: uuid.UUID, sender: str, device_id: int | None = None
    ) -> None:
        """Forget ``sender``'s chains for a distribution: every device's, or only ``device_id``'s."""
        if device_id is None:
            self._write(
                "DELETE FROM sender_keys WHERE distribution_id = ? AND sender = ?",
                (distribution_id.bytes, sender),
            )
            return
        self._write(
            "DELETE FROM sender_keys WHERE distribution_id = ? AND sender = ? AND device_id = ?",
            (distribution_id.bytes, sender, device_id),
        )

    # -- shares of our sender key -------------------------------------------------------------------

    def share(self, group_id: bytes, member: str, device_id: int) -> Share | None:
        row = self._db.execute(
            "SELECT chain_id, distribution, answers FROM sender_key_shares "
            "WHERE group_id = ? AND member = ? AND device_id = ?",
            (group_id, member, device_id),
        ).fetchone()
        return None if row is None else Share(int(row[0]), bytes(row[1]), int(row[2]))

    def put_share(
        self, group_id: bytes, member: str, device_id: int, chain_id: int, distribution: bytes
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO sender_key_shares (group_id, member, device_id, chain_id, distribution, "
            "answers) "
            "VALUES (?, ?, ?, ?, ?, 0)",
            (group_id, member, device_id, chain_id, distribution),
        )

    def count_answer(self, group_id: bytes, member: str, device_id: int) -> None:
        self._write(
            "UPDATE sender_key_shares SET answers = answers + 1 WHERE group_id = ? AND member = ? AND "
            "device_id = ?",
            (group_id, member, device_id),
        )

    def forget_shares(self, group_id: bytes, member: str | None = None) -> None:
        if member is None:
            self._write("DELETE FROM sender_key_shares WHERE group_id = ?", (group_id,))
        else:
            self._write("DELETE FROM sender_key_shares WHERE group_id = ? AND member = ?", (group_id, member))

    # -- history and outbox -------------------------------------------------------------------------

    def add_history(
        self,
        group_id: bytes,
        direction: str,
        sender: str,
        device: int,
        message_id: str,
        timestamp: int,
        body: bytes,
    ) -> None:
        self._write(
            "INSERT INTO group_history (group_id, direction, sender, sender_device, message_id, timestamp, "
            "body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (group_id, direction, sender, device, message_id, timestamp, body),
        )

    def history(self, group_id: bytes, limit: int | None = None) -> list[GroupHistoryEntry]:
        rows = self._db.execute(
            "SELECT seq, group_id, direction, sender, sender_device, message_id, timestamp, body FROM ("
            "SELECT * FROM group_history WHERE group_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (group_id, -1 if limit is None else limit),
        )
        return [GroupHistoryEntry(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], bytes(r[7])) for r in rows]

    def add_outbox(self, group_id: bytes, client_id: str, message_type: int, body: bytes) -> None:
        self._write(
            "INSERT INTO group_outbox (group_id, client_id, message_type, body) VALUES (?, ?, ?, ?)",
            (group_id, client_id, message_type, body),
        )

    def outbox(self) -> list[tuple[int, bytes, str, int, bytes]]:
        return [
            (int(r[0]), bytes(r[1]), r[2], int(r[3]), bytes(r[4]))
            for r in self._db.execute(
                "SELECT seq, group_id, client_id, message_type, body FROM group_outbox ORDER BY seq"
            )
        ]

    def remove_outbox(self, seq: int) -> None:
        self._write("DELETE FROM group_outbox WHERE seq = ?", (seq,))

    # -- held ciphertexts and retry requests --------------------------------------------------------

    def hold(
        self,
        group_id: bytes,
        sender: str,
        device: int,
        client_id: str,
        relay_timestamp: int,
        chain_id: int,
        body: bytes,
        now: int,
    ) -> None:
        self._write(
            "INSERT INTO group_pending (group_id, sender, sender_device, client_id, relay_timestamp, "
            "chain_id, "
            "body, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (group_id, sender, device, client_id, relay_timestamp, chain_id, body, now),
        )

    def pending(
        self, group_id: bytes, sender: str | None = None, device: int | None = None
    ) -> list[PendingGroupMessage]:
        sql = (
            "SELECT seq, group_id, sender, sender_device, client_id, relay_timestamp, chain_id, body "
            "FROM group_pending WHERE group_id = ?"
        )
        parameters: list[object] = [group_id]
        if sender is not None:
            sql += " AND sender = ? AND sender_device = ?"
            parameters += [sender, device]
        rows = self._db.execute(sql + " ORDER BY seq", parameters)
        return [
            PendingGroupMessage(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], bytes(r[7])) for r in rows
        ]

    def count_pending(self, group_id: bytes, sender: str, device: int) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM group_pending WHERE group_id = ? AND sender = ? AND sender_device = ?",
            (group_id, sender, device),
        ).fetchone()
        return int(count)

    def release(self, seq: int) -> None:
        self._write("DELETE FROM group_pending WHERE seq = ?", (seq,))

    def retries_sent(self, group_id: bytes, sender: str, device: int, chain_id: int) -> int:
        row = self._db.execute(
            "SELECT sent FROM group_retries WHERE group_id = ? AND sender = ? AND sender_device = ? AND "
            "chain_id = ?",
            (group_id, sender, device, chain_id),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def count_retry(self, group_id: bytes, sender: str, device: int, chain_id: int) -> None:
        self._write(
            "INSERT INTO group_retries (group_id, sender, sender_device, chain_id, sent) VALUES (?, ?, ?, ?, "
            "1) "
            "ON CONFLICT DO UPDATE SET sent = sent + 1",
            (group_id, sender, device, chain_id),
        )

    def hold_key(self, group_id: bytes, sender: str, device: int, content: bytes) -> None:
        self._write(
            "INSERT INTO group_pending_keys (group_id, sender, sender_device, content) VALUES (?, ?, ?, ?)",
            (group_id, sender, device, content),
        )

    def pending_keys(self, group_id: bytes) -> list[tuple[int, str, int, bytes]]:
        return [
            (int(r[0]), r[1], int(r[2]), bytes(r[3]))
            for r in self._db.execute(
                "SELECT seq, sender, sender_device, content FROM group_pending_keys WHERE group_id = ? ORDER "
                "BY seq",
                (group_id,),
            )
        ]

    def release_key(self, seq: int) -> None:
        self._write("DELETE FROM group_pending_keys WHERE seq = ?", (seq,))

    def need_sync(self, group_id: bytes) -> None:
        self._write("INSERT OR IGNORE INTO group_sync (group_id) VALUES (?)", (group_id,))

    def sync_needed(self, group_id: bytes) -> bool:
        return (
            self._db.execute("SELECT 1 FROM group_sync WHERE group_id = ?", (group_id,)).fetchone()
            is not None
        )

    def syncs(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._db.execute("SELECT group_id FROM group_sync ORDER BY group_id")]

    def synced(self, group_id: bytes) -> None:
        self._write("DELETE FROM group_sync WHERE group_id = ?", (group_id,))

    def count_pending_keys(self, sender: str) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM group_pending_keys WHERE sender = ?", (sender,)
        ).fetchone()
        return int(count)

    def refuse(self, group_id: bytes, sender: str, device: int, what: str, error: str, now: int) -> None:
        self._write(
            "INSERT INTO group_refused (group_id, sender, sender_device, what, error, at) VALUES (?, ?, ?, "
            "?, ?, ?)",
            (group_id, sender, device, what, error, now),
        )

    def refused(self, group_id: bytes | None = None) -> list[tuple[bytes, str, int, str, str]]:
        sql = "SELECT group_id, sender, sender_device, what, error FROM group_refused"
        parameters: tuple[object, ...] = ()
        if group_id is not None:
            sql += " WHERE group_id = ?"
            parameters = (group_id,)
        return [
            (bytes(r[0]), r[1], int(r[2]), r[3], r[4])
            for r in self._db.execute(sql + " ORDER BY seq", parameters)
        ]


class SenderKeyStoreAdapter:
    """The core's :class:`e2e.group_cipher.SenderKeyStore` over :class:`GroupStore` (each load is fresh)."""

    def __init__(self, groups: GroupStore) -> None:
        self._groups = groups

    def load_sender_key(self, name: SenderKeyName) -> SenderKeyRecord | None:
        data = self._groups.sender_key(name)
        return None if data is None else SenderKeyRecord.deserialize(data)

    def store_sender_key(self, name: SenderKeyName, record: SenderKeyRecord) -> None:
        self._groups.put_sender_key(name, record.serialize())

    def __repr__(self) -> str:
        return "SenderKeyStoreAdapter()"
