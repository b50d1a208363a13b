"""The ``devices`` migration on both stores: a database from before linked devices opens, its
accounts become primaries with their keys, its data survives, and the new rules apply from then on."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from e2e.devices import DeviceList, sign_device_list
from e2e.keys import PrivateKey
from server.device_store import NotOnDeviceListError, StaleDeviceListError
from server.migrations import load_migrations, migrate, schema_version
from server.pg_store import PostgresStore
from server.sqlite_store import SCHEMA_VERSION, SQLiteStore
from server.store import DeviceAddress, EventKind, NewMessage
from server.testing.pg import Cluster

_names = itertools.count(1)


@pytest.fixture
async def blank_database(pg_cluster: Cluster) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A database with no schema at all, and a connection to it."""
    name = f"devices_blank_{next(_names)}"
    dsn = pg_cluster.create_database(name)
    conn = await asyncpg.connect(dsn)
    yield dsn, conn
    await conn.close()
    pg_cluster.drop_database(name)


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "relay-sqlite-v1.sql"
ALICE_KEY = b"\x05" + bytes(range(1, 33))
NOW = 2000.0


async def _check_migrated(store: SQLiteStore | PostgresStore) -> None:
    alice1, alice2 = DeviceAddress("alice", 1), DeviceAddress("alice", 2)
    # Every device keeps the key it had: the account's.
    assert await store.identity_key(alice1) == ALICE_KEY
    assert await store.identity_key(alice2) == ALICE_KEY
    assert await store.device_list("alice") is None
    # The message queued for alice/2 survived.
    messages = await store.fetch(alice2, 0, 10, NOW)
    assert [m.body for m in messages] == [b"hello v1"]
    # The primary registers again; a new device id cannot register itself.
    assert await store.register_device(alice1, ALICE_KEY, 11, NOW) is False
    with pytest.raises(NotOnDeviceListError):
        await store.register_device(DeviceAddress("alice", 3), ALICE_KEY, 13, NOW)
    # Publishing the first list (the primary alone) removes the legacy device 2 and its queue.
    events = []
    subscription = store.subscribe(alice2, events.append)
    update = await store.put_device_list("alice", 1, b"signed", {1: ALICE_KEY}, NOW)
    assert update.removed == (2,)
    with pytest.raises(StaleDeviceListError):
        await store.put_device_list("alice", 1, b"again", {1: ALICE_KEY}, NOW)
    assert await store.fetch(alice2, 0, 10, NOW) == []
    subscription.close()
    assert any(event.kind is EventKind.REMOVED for event in events)


async def test_a_version_1_sqlite_database_is_migrated(tmp_path):
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(FIXTURE.read_text(encoding="utf-8"))
    db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        await _check_migrated(store)
    finally:
        await store.close()
    db = sqlite3.connect(path)
    (version,) = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    db.close()
    assert version == str(SCHEMA_VERSION)


async def test_a_failing_sqlite_migration_changes_nothing(tmp_path):
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(FIXTURE.read_text(encoding="utf-8"))
    # A table in the way of the migration's CREATE TABLE makes it fail half way.
    db.execute("CREATE TABLE link_mailboxes (x)")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    with pytest.raises(Exception, match="link_mailboxes"):
        await store.open()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
    columns = [row[1] for row in db.execute("PRAGMA table_info(devices)")]
    db.close()
    assert "identity_key" not in columns


async def test_a_postgresql_database_from_before_devices_is_migrated(blank_database):
    empty_database, conn = blank_database
    before = [m for m in load_migrations() if m.name != "devices"]
    await migrate(conn, before)
    assert await schema_version(conn) == len(before)
    for account, key in (("alice", ALICE_KEY), ("bob", b"\x05" + bytes(range(2, 34)))):
        await conn.execute("INSERT INTO accounts VALUES ($1, $2, 1000)", account, key)
    for account, device_id in (("alice", 1), ("alice", 2), ("bob", 1)):
        await conn.execute(
            "INSERT INTO devices (account, device_id, registration_id, created_at, last_seen) "
            "VALUES ($1, $2, 7, 1000, 1000)",
            account,
            device_id,
        )
        await conn.execute("INSERT INTO queues (account, device_id) VALUES ($1, $2)", account, device_id)
    store = PostgresStore(empty_database)
    await store.open()
    try:
        await store.enqueue(
            NewMessage(DeviceAddress("bob", 1), DeviceAddress("alice", 2), "c1", 1, b"hello v1"),
            1004.0,
            10**9,
            100,
            10**6,
        )
        await _check_migrated(store)
    finally:
        await store.close()
    assert await schema_version(conn) == len(load_migrations())


async def test_the_relay_checks_lists_it_stores(tmp_path):
    """The store itself trusts its caller; this pins that a real signed list round-trips through it."""
    store = SQLiteStore(tmp_path / "r.sqlite3")
    await store.open()
    try:
        key = PrivateKey(bytes(range(32)))
        await store.register_device(DeviceAddress("carol", 1), key.public_key().serialize(), 1, NOW)
        signed = sign_device_list(
            key, DeviceList.of("carol", 1, 0, [(1, key.public_key())]), lambda n: bytes(n)
        )
        await store.put_device_list("carol", 1, signed.encode(), {1: key.public_key().serialize()}, NOW)
        stored = await store.device_list("carol")
        assert stored is not None and stored.signed == signed.encode() and stored.version == 1
    finally:
        await store.close()
