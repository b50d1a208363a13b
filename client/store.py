"""The client's local state: one SQLite file per device.

What this module owns
---------------------
:class:`Store`, a thin, synchronous layer over one SQLite database that holds everything a device
must not forget:

* its account (name, device id) and its identity key pair with its registration id;
* its one-time prekeys and signed prekeys (current and recently retired), and its signed ML-KEM
  prekeys for PQXDH (one-time ones and the last-resort one);
* one session record per remote device;
* its contacts: the identity key first seen for each remote account, whether the user verified it
  by safety number, and an identity key that changed and waits for the user's decision;
* the message history (plaintexts, in and out) and the ids of processed incoming messages;
* the outbox: encrypted messages committed but not yet acknowledged by the relay;
* held messages (from a contact whose identity key changed) and quarantined ones (that failed to
  decrypt), each with the raw ciphertext so that nothing the relay delivered is lost.

Invariants
----------
* Every key and session is stored as the bytes of the protocol core's versioned serialization
  (``e2e.records``, ``SessionRecord.serialize``); this module never interprets them and never pickles.
  Identity keys of contacts are stored in libsignal's public-key encoding (``0x05 ‖ u``).
* The file runs in WAL mode with ``synchronous=FULL``: a transaction that returned from ``COMMIT`` is
  on disk and survives a crash of the process or of the machine.
* :meth:`Store.transaction` is the unit of atomicity.  The client groups every change caused by one
  event (a decrypted message: new session state, plaintext, processed id, used one-time prekey) into
  one transaction, and acknowledges the event to the relay only after it committed.
* The file and its ``-wal`` and ``-shm`` companions are readable and writable by their owner alone
  (0600): a new file is created so before SQLite opens it (SQLite gives its companions the main
  file's mode), and an older, looser file is tightened when it is opened.  The identity key is in
  there.
* The schema carries a version (``PRAGMA user_version``): an older file is migrated in place, in
  one transaction per step; a file of an unknown version is refused with :class:`StoreFormatError`
  rather than misread.

What it does not know
---------------------
The protocol: it neither encrypts nor parses records.  The network, the clock (callers pass times
in as integers, milliseconds since the epoch) and asyncio: every call is synchronous and quick, so
the client calls it directly from the event loop, and a read-modify-write sequence without an
``await`` in the middle cannot interleave with another.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SCHEMA_VERSION",
    "StoreError",
    "StoreFormatError",
    "Account",
    "Contact",
    "StoredMessage",
    "OutboxEntry",
    "HeldMessage",
    "Store",
]

SCHEMA_VERSION = 5
"""The version of the tables below; stored in ``PRAGMA user_version``.

Version 1 had no KEM prekeys; version 2 did not record why a sent message failed; version 3 had
ML-KEM-1024 prekeys only (no ``kem`` column: every row is ``'mlkem'``); version 4 keeps Kyber1024
prekeys (``kem = 'kyber'``, for version-4 sessions) in the same table; version 5 adds device lists.
:data:`_MIGRATIONS` brings an older file up to date in place.
"""

_MESSAGE_FAILURE = """
ALTER TABLE messages ADD COLUMN failure TEXT;
"""

KEM_MLKEM = "mlkem"
"""The ``kem`` of an ML-KEM-1024 prekey (the project's PQXDH, message version 3)."""
KEM_KYBER = "kyber"
"""The ``kem`` of a Kyber1024 prekey (Signal's PQXDH, message version 4)."""

_KEM_PRE_KEYS = """
CREATE TABLE kem_pre_keys (
    id INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    last_resort INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    uploaded INTEGER NOT NULL DEFAULT 0
);
"""

# Linked devices (client/fanout.py): the newest signed device list verified per account, ours too.
_DEVICE_LISTS = """
CREATE TABLE device_lists (
    account TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    signed BLOB NOT NULL
);
"""

_SCHEMA = (
    """
CREATE TABLE account (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    name TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    identity BLOB NOT NULL,
    registered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE pre_keys (
    id INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE signed_pre_keys (
    id INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    uploaded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sessions (
    name TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (name, device_id)
);
CREATE TABLE contacts (
    name TEXT PRIMARY KEY,
    identity_key BLOB NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    first_seen INTEGER NOT NULL,
    changed_identity_key BLOB
);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer TEXT NOT NULL,
    peer_device INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    body BLOB NOT NULL,
    failure TEXT
);
CREATE INDEX messages_by_peer ON messages (peer, seq);
CREATE TABLE processed (
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    processed_at INTEGER NOT NULL,
    PRIMARY KEY (sender, sender_device, message_id)
);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    recipient_device INTEGER NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    message_type INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE held (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    reason TEXT NOT NULL CHECK (reason IN ('identity_changed', 'undecryptable')),
    sender TEXT NOT NULL,
    sender_device INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    relay_timestamp INTEGER NOT NULL,
    message_type INTEGER NOT NULL,
    body BLOB NOT NULL,
    error TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
"""
    + _KEM_PRE_KEYS
    + "ALTER TABLE kem_pre_keys ADD COLUMN kem TEXT NOT NULL DEFAULT 'mlkem';"
    + _DEVICE_LISTS
)

# From version 3 to 4: which KEM a prekey is; every older row is ML-KEM-1024.  Ids stay one space
# across both KEMs (the core's KEM prekey store is keyed by id alone).
_KEM_COLUMN = "ALTER TABLE kem_pre_keys ADD COLUMN kem TEXT NOT NULL DEFAULT 'mlkem';"

_SELECT_CONTACTS = "SELECT name, identity_key, verified, first_seen, changed_identity_key FROM contacts"

_MIGRATIONS = {
    # From version 1 to 2: signed ML-KEM prekeys for PQXDH.
    1: _KEM_PRE_KEYS,
    # From version 2 to 3: why the relay refused a sent message, if it did.
    2: _MESSAGE_FAILURE,
    # From version 3 to 4: Kyber1024 prekeys beside the ML-KEM ones.
    3: _KEM_COLUMN,
    # From version 4 to 5: the device lists of linked devices.
    4: _DEVICE_LISTS,
}
"""For each old schema version, the statements that turn it into the next one."""


class StoreError(Exception):
    """A local-store operation that cannot be carried out (the file, not the protocol, is at fault)."""


class StoreFormatError(StoreError):
    """A database file that is not a client store of the version this code understands."""


@dataclass(frozen=True, slots=True)
class Account:
    """Who this device is: its account name and device id, and its serialized identity record."""

    name: str
    device_id: int
    identity: bytes
    registered: bool

    def __repr__(self) -> str:
        return f"Account(name={self.name!r}, device_id={self.device_id}, registered={self.registered})"


@dataclass(frozen=True, slots=True)
class Contact:
    """A remote account and the identity key we trust for it (libsignal's ``0x05 ‖ u`` encoding).

    All devices of an account share its identity key (the relay binds an account to one key).
    """

    name: str
    identity_key: bytes
    verified: bool
    first_seen: int
    changed_identity_key: bytes | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One entry of the history: a plaintext sent or received.

    ``failure`` is set on a sent message the relay refused for good: its error code (e.g.
    ``"too_large"``), as the relay sent it.
    """

    seq: int
    direction: str
    peer: str
    peer_device: int
    message_id: str
    timestamp: int
    body: bytes
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An encrypted message committed locally and not yet acknowledged by the relay."""

    seq: int
    recipient: str
    recipient_device: int
    message_id: str
    message_type: int
    body: bytes
    created_at: int


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A ciphertext the client acknowledged to the relay but could not (yet) turn into a message."""

    seq: int
    reason: str
    sender: str
    sender_device: int
    message_id: str
    relay_timestamp: int
    message_type: int
    body: bytes
    error: str
    received_at: int


class Store:
    """One device's SQLite file.  Open with ``Store(path)``; close with :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _private_file(self.path)
        # isolation_level=None: the module issues BEGIN/COMMIT itself, so that a transaction spans
        # exactly what the caller put inside ``with store.transaction()``.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._depth = 0
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreFormatError(f"{self.path} is not a client store: {error}") from None

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            (tables,) = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if tables:
                raise StoreFormatError("the file holds tables of something other than a client store")
            self._run(_SCHEMA, SCHEMA_VERSION)
            return
        if version not in _MIGRATIONS:
            raise StoreFormatError(f"store schema version {version}; this code reads {SCHEMA_VERSION}")
        while version < SCHEMA_VERSION:
            self._run(_MIGRATIONS[version], version + 1)
            version += 1

    def _run(self, script: str, new_version: int) -> None:
        """Run ``script`` and set the schema version, in one transaction."""
        with self.transaction():
            for statement in script.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {int(new_version)}")

    def close(self) -> None:
        """Close the file.  Committed transactions are already durable."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Group changes atomically: all of them are committed, or none (on any exception).

        Transactions nest: an inner ``with`` joins the outer one, and only the outermost commits.
        An exception that leaves an inner block must also leave the outer one (as every caller in
        the client lets it): the writes an inner block made before failing are undone only when
        the outermost transaction rolls back.
        """
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    def _write(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self.transaction():
            return self._db.execute(sql, parameters)

    # -- account and identity ------------------------------------------------------------------

    def account(self) -> Account | None:
        """This device's account, or ``None`` for a new file."""
        row = self._db.execute("SELECT name, device_id, identity, registered FROM account").fetchone()
        if row is None:
            return None
        return Account(row[0], row[1], row[2], bool(row[3]))

    def create_account(self, name: str, device_id: int, identity: bytes) -> None:
        """Record the device's name, id and serialized identity (once per file)."""
        try:
            self._write(
                "INSERT INTO account (singleton, name, device_id, identity) VALUES (1, ?, ?, ?)",
                (name, device_id, identity),
            )
        except sqlite3.IntegrityError:
            raise StoreError("this store already belongs to an account") from None

    def mark_registered(self) -> None:
        """Remember that the relay accepted the registration."""
        self._write("UPDATE account SET registered = 1")

    def mark_unregistered(self) -> None:
        """Forget that the relay knew this device (it said it does not), so it registers again.

        The relay lost our prekeys with the registration: they are uploaded again too.
        """
        with self.transaction():
            self._db.execute("UPDATE account SET registered = 0")
            self._db.execute("UPDATE pre_keys SET uploaded = 0")
            self._db.execute("UPDATE signed_pre_keys SET uploaded = 0 WHERE retired_at IS NULL")
            self._db.execute("UPDATE kem_pre_keys SET uploaded = 0 WHERE retired_at IS NULL")

    def next_id(self, counter: str, start: int = 1) -> int:
        """Allocate the next value of a named counter (prekey ids, signed prekey ids)."""
        with self.transaction():
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()
            value = start if row is None else row[0]
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (counter, value + 1),
            )
            return int(value)

    # -- one-time prekeys ----------------------------------------------------------------------

    def add_pre_keys(self, records: list[tuple[int, bytes]]) -> None:
        """Store new one-time prekeys (id, serialized record), not yet uploaded."""
        with self.transaction():
            self._db.executemany("INSERT INTO pre_keys (id, record) VALUES (?, ?)", records)

    def mark_pre_keys_uploaded(self, ids: list[int]) -> None:
        with self.transaction():
            self._db.executemany("UPDATE pre_keys SET uploaded = 1 WHERE id = ?", [(i,) for i in ids])

    def pending_pre_keys(self) -> list[tuple[int, bytes]]:
        """One-time prekeys generated but not yet accepted by the relay, oldest first."""
        rows = self._db.execute("SELECT id, record FROM pre_keys WHERE uploaded = 0 ORDER BY id").fetchall()
        return [(row[0], row[1]) for row in rows]

    def pre_key(self, pre_key_id: int) -> bytes | None:
        row = self._db.execute("SELECT record FROM pre_keys WHERE id = ?", (pre_key_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def remove_pre_key(self, pre_key_id: int) -> None:
        self._write("DELETE FROM pre_keys WHERE id = ?", (pre_key_id,))

    def pre_key_ids(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM pre_keys ORDER BY id")]

    def count_pre_keys(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM pre_keys").fetchone()
        return int(count)

    # -- signed prekeys ------------------------------------------------------------------------

    def add_signed_pre_key(self, signed_pre_key_id: int, record: bytes, created_at: int) -> None:
        """Store a new signed prekey; it becomes current once :meth:`mark_signed_pre_key_uploaded`."""
        self._write(
            "INSERT INTO signed_pre_keys (id, record, created_at) VALUES (?, ?, ?)",
            (signed_pre_key_id, record, created_at),
        )

    def mark_signed_pre_key_uploaded(self, signed_pre_key_id: int, now: int) -> None:
        """Make this signed prekey current: the relay serves it, and every older one is retired now."""
        with self.transaction():
            self._db.execute("UPDATE signed_pre_keys SET uploaded = 1 WHERE id = ?", (signed_pre_key_id,))
            self._db.execute(
                "UPDATE signed_pre_keys SET retired_at = ? WHERE id != ? AND retired_at IS NULL",
                (now, signed_pre_key_id),
            )

    def signed_pre_key(self, signed_pre_key_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT record FROM signed_pre_keys WHERE id = ?", (signed_pre_key_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def current_signed_pre_key(self) -> tuple[int, bytes, int, bool] | None:
        """The newest signed prekey that is not retired: (id, record, created_at, uploaded)."""
        row = self._db.execute(
            "SELECT id, record, created_at, uploaded FROM signed_pre_keys WHERE retired_at IS NULL "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]), row[2], bool(row[3]))

    def signed_pre_key_ids(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT id FROM signed_pre_keys ORDER BY id")]

    def remove_signed_pre_keys_retired_before(self, cutoff: int) -> int:
        """Forget signed prekeys retired before ``cutoff``; returns how many were removed."""
        cursor = self._write(
            "DELETE FROM signed_pre_keys WHERE retired_at IS NOT NULL AND retired_at < ?", (cutoff,)
        )
        return cursor.rowcount

    # -- KEM prekeys (PQXDH) -------------------------------------------------------------------

    def add_kem_pre_keys(
        self, records: list[tuple[int, bytes, bool]], created_at: int, *, kem: str = KEM_MLKEM
    ) -> None:
        """Store new KEM prekeys (id, serialized record, last resort?) of one ``kem``, not yet uploaded."""
        with self.transaction():
            self._db.executemany(
                "INSERT INTO kem_pre_keys (id, record, last_resort, created_at, kem) VALUES (?, ?, ?, ?, ?)",
                [
                    (key_id, record, int(last_resort), created_at, kem)
                    for key_id, record, last_resort in records
                ],
            )

    def pending_kem_pre_keys(self, last_resort: bool, *, kem: str = KEM_MLKEM) -> list[tuple[int, bytes]]:
        """KEM prekeys of one kind generated but not yet accepted by the relay, oldest first."""
        rows = self._db.execute(
            "SELECT id, record FROM kem_pre_keys "
            "WHERE uploaded = 0 AND last_resort = ? AND kem = ? AND retired_at IS NULL ORDER BY id",
            (int(last_resort), kem),
        ).fetchall()
        return [(row[0], bytes(row[1])) for row in rows]

    def mark_kem_pre_keys_uploaded(self, ids: list[int], now: int) -> None:
        """The relay accepted these; an uploaded last-resort key retires every older one of its KEM now."""
        with self.transaction():
            for key_id in ids:
                self._db.execute("UPDATE kem_pre_keys SET uploaded = 1 WHERE id = ?", (key_id,))
                self._db.execute(
                    "UPDATE kem_pre_keys SET retired_at = ? WHERE last_resort = 1 AND retired_at IS NULL "
                    "AND id != ? AND (SELECT last_resort FROM kem_pre_keys WHERE id = ?) = 1 "
                    "AND kem = (SELECT kem FROM kem_pre_keys WHERE id = ?)",
                    (now, key_id, key_id, key_id),
                )

    def kem_pre_key(self, kem_pre_key_id: int) -> tuple[bytes, bool] | None:
        """The serialized record and the last-resort flag of a KEM prekey."""
        row = self._db.execute(
            "SELECT record, last_resort FROM kem_pre_keys WHERE id = ?", (kem_pre_key_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bool(row[1]))

    def kem_pre_key_ids(self, last_resort: bool, *, kem: str = KEM_MLKEM) -> list[int]:
        rows = self._db.execute(
            "SELECT id FROM kem_pre_keys WHERE last_resort = ? AND kem = ? ORDER BY id",
            (int(last_resort), kem),
        )
        return [row[0] for row in rows]

    def current_kem_last_resort(self, *, kem: str = KEM_MLKEM) -> tuple[int, bool] | None:
        """The newest last-resort KEM prekey of ``kem`` that is not retired: (id, uploaded)."""
        row = self._db.execute(
            "SELECT id, uploaded FROM kem_pre_keys WHERE last_resort = 1 AND kem = ? AND retired_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (kem,),
        ).fetchone()
        return None if row is None else (row[0], bool(row[1]))

    def remove_kem_pre_key(self, kem_pre_key_id: int) -> None:
        self._write("DELETE FROM kem_pre_keys WHERE id = ?", (kem_pre_key_id,))

    def remove_kem_pre_keys_retired_before(self, cutoff: int) -> int:
        cursor = self._write(
            "DELETE FROM kem_pre_keys WHERE retired_at IS NOT NULL AND retired_at < ?", (cutoff,)
        )
        return cursor.rowcount

    # -- sessions ------------------------------------------------------------------------------

    def session(self, name: str, device_id: int) -> bytes | None:
        row = self._db.execute(
            "SELECT record FROM sessions WHERE name = ? AND device_id = ?", (name, device_id)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put_session(self, name: str, device_id: int, record: bytes) -> None:
        self._write(
            "INSERT INTO sessions (name, device_id, record) VALUES (?, ?, ?) "
            "ON CONFLICT (name, device_id) DO UPDATE SET record = excluded.record",
            (name, device_id, record),
        )

    def session_devices(self, name: str) -> list[int]:
        """The device ids of ``name`` we hold a session with."""
        rows = self._db.execute("SELECT device_id FROM sessions WHERE name = ? ORDER BY device_id", (name,))
        return [row[0] for row in rows]

    def remove_session(self, name: str, device_id: int) -> None:
        self._write("DELETE FROM sessions WHERE name = ? AND device_id = ?", (name, device_id))

    # -- contacts ------------------------------------------------------------------------------

    def contact(self, name: str) -> Contact | None:
        row = self._db.execute(_SELECT_CONTACTS + " WHERE name = ?", (name,)).fetchone()
        return None if row is None else _contact(row)

    def contacts(self) -> list[Contact]:
        rows = self._db.execute(_SELECT_CONTACTS + " ORDER BY name").fetchall()
        return [_contact(row) for row in rows]

    def add_contact(self, name: str, identity_key: bytes, now: int) -> None:
        """Trust ``identity_key`` for an account seen for the first time (trust on first use)."""
        self._write(
            "INSERT INTO contacts (name, identity_key, first_seen) VALUES (?, ?, ?)",
            (name, identity_key, now),
        )

    def set_verified(self, name: str, verified: bool) -> None:
        self._write("UPDATE contacts SET verified = ? WHERE name = ?", (int(verified), name))

    def record_changed_identity(self, name: str, identity_key: bytes) -> None:
        """Remember a new identity key seen for a known contact, awaiting the user's decision."""
        self._write("UPDATE contacts SET changed_identity_key = ? WHERE name = ?", (identity_key, name))

    def replace_identity(self, name: str, identity_key: bytes, now: int) -> None:
        """Trust a new identity key for a contact; it starts out unverified."""
        self._write(
            "UPDATE contacts SET identity_key = ?, verified = 0, first_seen = ?, changed_identity_key = NULL "
            "WHERE name = ?",
            (identity_key, now, name),
        )

    # -- history and processed ids -------------------------------------------------------------

    def add_message(
        self, direction: str, peer: str, peer_device: int, message_id: str, timestamp: int, body: bytes
    ) -> None:
        self._write(
            "INSERT INTO messages (direction, peer, peer_device, message_id, timestamp, body) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (direction, peer, peer_device, message_id, timestamp, body),
        )

    def history(self, peer: str | None = None, limit: int | None = None) -> list[StoredMessage]:
        """The history, oldest first; with ``peer``, only the conversation with that account."""
        sql = "SELECT seq, direction, peer, peer_device, message_id, timestamp, body, failure FROM messages"
        parameters: list[object] = []
        if peer is not None:
            sql += " WHERE peer = ?"
            parameters.append(peer)
        if limit is None:
            return [StoredMessage(*row) for row in self._db.execute(sql + " ORDER BY seq", parameters)]
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", [*parameters, limit]).fetchall()
        return [StoredMessage(*row) for row in reversed(rows)]

    def mark_failed(self, message_id: str, failure: str) -> None:
        """Record that the relay refused our message ``message_id`` for good, and why."""
        self._write(
            "UPDATE messages SET failure = ? WHERE direction = 'out' AND message_id = ?",
            (failure, message_id),
        )

    def last_recipient(self) -> str | None:
        """The account this device last sent a message to (``None`` before the first one)."""
        row = self._db.execute(
            "SELECT peer FROM messages WHERE direction = 'out' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return None if row is None else str(row[0])

    def is_processed(self, sender: str, sender_device: int, message_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM processed WHERE sender = ? AND sender_device = ? AND message_id = ?",
            (sender, sender_device, message_id),
        ).fetchone()
        return row is not None

    def mark_processed(self, sender: str, sender_device: int, message_id: str, now: int) -> None:
        self._write(
            "INSERT OR IGNORE INTO processed (sender, sender_device, message_id, processed_at) "
            "VALUES (?, ?, ?, ?)",
            (sender, sender_device, message_id, now),
        )

    def forget_processed_before(self, cutoff: int) -> int:
        """Drop processed ids older than ``cutoff`` (once the relay can no longer redeliver them)."""
        return self._write("DELETE FROM processed WHERE processed_at < ?", (cutoff,)).rowcount

    # -- outbox --------------------------------------------------------------------------------

    def add_outbox(
        self,
        recipient: str,
        recipient_device: int,
        message_id: str,
        message_type: int,
        body: bytes,
        created_at: int,
    ) -> None:
        self._write(
            "INSERT INTO outbox (recipient, recipient_device, message_id, message_type, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (recipient, recipient_device, message_id, message_type, body, created_at),
        )

    def outbox(self, after: int = 0, limit: int = -1) -> list[OutboxEntry]:
        """Messages awaiting the relay's acknowledgement, in the order they were encrypted.

        ``after`` skips entries up to that sequence number; ``limit`` caps how many are returned.
        """
        rows = self._db.execute(
            "SELECT seq, recipient, recipient_device, message_id, message_type, body, created_at "
            "FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def outbox_size(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(count)

    def remove_outbox(self, message_ids: list[str]) -> None:
        """Forget messages the relay acknowledged (one transaction for all of them)."""
        with self.transaction():
            self._db.executemany("DELETE FROM outbox WHERE message_id = ?", [(i,) for i in message_ids])

    # -- held and quarantined messages ---------------------------------------------------------

    def hold(
        self,
        reason: str,
        sender: str,
        sender_device: int,
        message_id: str,
        relay_timestamp: int,
        message_type: int,
        body: bytes,
        error: str,
        now: int,
    ) -> None:
        self._write(
            "INSERT INTO held (reason, sender, sender_device, message_id, relay_timestamp, message_type, "
            "body, error, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (reason, sender, sender_device, message_id, relay_timestamp, message_type, body, error, now),
        )

    def held(self, reason: str | None = None, sender: str | None = None) -> list[HeldMessage]:
        sql = (
            "SELECT seq, reason, sender, sender_device, message_id, relay_timestamp, message_type, body, "
            "error, received_at FROM held WHERE 1 = 1"
        )
        parameters: list[object] = []
        if reason is not None:
            sql += " AND reason = ?"
            parameters.append(reason)
        if sender is not None:
            sql += " AND sender = ?"
            parameters.append(sender)
        sql += " ORDER BY seq"
        return [HeldMessage(*row) for row in self._db.execute(sql, parameters)]

    def release_held(self, seq: int) -> None:
        self._write("DELETE FROM held WHERE seq = ?", (seq,))

    # -- linked devices (client/fanout.py) -----------------------------------------------------

    def device_list(self, account: str) -> bytes | None:
        """The newest signed device list verified for ``account`` (its encoding), or None."""
        row = self._db.execute("SELECT signed FROM device_lists WHERE account = ?", (account,)).fetchone()
        return None if row is None else bytes(row[0])

    def device_lists(self) -> list[tuple[str, bytes]]:
        return [(str(a), bytes(b)) for a, b in self._db.execute("SELECT account, signed FROM device_lists")]

    def remove_device_list(self, account: str) -> None:
        self._write("DELETE FROM device_lists WHERE account = ?", (account,))

    def put_device_list(self, account: str, version: int, signed: bytes) -> None:
        """Keep a verified list (the caller checked it is newer than the one kept)."""
        self._write(
            "INSERT INTO device_lists (account, version, signed) VALUES (?, ?, ?) "
            "ON CONFLICT (account) DO UPDATE SET version = excluded.version, signed = excluded.signed",
            (account, version, signed),
        )


_PRIVATE = 0o600
_COMPANIONS = ("-wal", "-shm", "-journal")


def _private_file(path: Path) -> None:
    """Make ``path`` (and its SQLite companions) a file only its owner can read: create it 0600,
    or take group and other permissions away from an existing one."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _PRIVATE)
    except FileExistsError:
        for candidate in (path, *(path.with_name(path.name + suffix) for suffix in _COMPANIONS)):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(candidate.stat().st_mode) & 0o077:
                    os.chmod(candidate, _PRIVATE)
        return
    except OSError as error:
        raise StoreError(f"cannot create {path}: {error.strerror}") from None
    os.close(descriptor)


def _contact(row: tuple[object, ...]) -> Contact:
    name, identity_key, verified, first_seen, changed = row
    assert isinstance(name, str) and isinstance(first_seen, int)
    assert isinstance(identity_key, bytes) and (changed is None or isinstance(changed, bytes))
    return Contact(name, identity_key, bool(verified), first_seen, changed)
