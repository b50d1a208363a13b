"""The SQLite backend itself: durable settings, opaque bytes, group commits that fail alone, order,
exactly-once claims across two processes' worth of connections, and its schema version."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from server.relay import Relay
from server.sqlite_store import SQLiteStore
from server.store import (
    DeviceAddress,
    NewMessage,
    OneTimeKind,
    PreKeyRecord,
    PreKeyUpload,
    SignedKind,
    StoreError,
    UnknownDeviceError,
)
from tests.relay.conftest import TEST_LIMITS, Device

ALICE = DeviceAddress("alice", 1)
BOB = DeviceAddress("bob", 1)
NOW = 1_000_000.0


async def opened(path) -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open()
    for device in (ALICE, BOB):
        await store.register_device(device, b"\x05" + bytes([len(device.account)]) * 32, 1, NOW)
    return store


def enqueue(store: SQLiteStore, client_id: str, recipient: DeviceAddress = BOB, body: bytes = b"x"):
    return store.enqueue(NewMessage(ALICE, recipient, client_id, 1, body), NOW, 3600.0, 10_000, 10**9)


async def test_the_database_is_in_wal_mode(tmp_path):
    store = await opened(tmp_path / "r.db")
    await store.close()
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_the_database_holds_exactly_the_opaque_bytes_and_no_private_key(tmp_path, rng):
    relay = Relay(SQLiteStore(tmp_path / "relay.sqlite3"), TEST_LIMITS)
    await relay.start()
    try:
        alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
        a = await alice.register(relay.url)
        b = await bob.register(relay.url)
        await bob.publish(b, one_time=3)
        body = os.urandom(300)
        await a.send("bob", 1, "opaque", 7, body)
        with sqlite3.connect(tmp_path / "relay.sqlite3") as db:
            assert db.execute("SELECT type, body FROM messages").fetchall() == [(7, body)]
        files = b"".join(p.read_bytes() for p in tmp_path.glob("relay.sqlite3*"))
        assert body in files
        for device in (alice, bob):
            assert device.identity.private_key.serialize() not in files
        await a.close()
        await b.close()
    finally:
        await relay.close()


async def test_a_failing_operation_in_a_batch_fails_alone(tmp_path):
    store = await opened(tmp_path / "r.db")
    # Submitted back to back, these share transactions; the bad one must not take the others down.
    futures = [enqueue(store, f"m{i}") for i in range(20)]
    futures.insert(10, enqueue(store, "bad", recipient=DeviceAddress("nobody", 1)))
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[10], UnknownDeviceError)
    ids = [r.server_id for i, r in enumerate(results) if i != 10]
    assert ids == sorted(ids) and len(set(ids)) == 20
    fetched = await store.fetch(BOB, 0, 100, NOW)
    assert [m.client_id for m in fetched] == [f"m{i}" for i in range(20)]
    await store.close()


async def test_an_acknowledgement_is_all_or_nothing(tmp_path):
    store = await opened(tmp_path / "r.db")
    first = await enqueue(store, "one")
    mine = await store.enqueue(NewMessage(BOB, ALICE, "two", 1, b"y"), NOW, 3600.0, 100, 10**6)
    with pytest.raises(StoreError):
        await store.ack(BOB, [first.server_id, mine.server_id], NOW)
    assert len(await store.fetch(BOB, 0, 10, NOW)) == 1
    assert await store.ack(BOB, [first.server_id], NOW) == 1
    await store.close()


async def test_claims_are_exactly_once_across_two_connections_to_one_file(tmp_path):
    path = tmp_path / "r.db"
    first = await opened(path)
    second = SQLiteStore(path)
    await second.open()
    keys = [PreKeyRecord(i, b"\x05" + bytes([i]) * 32) for i in range(1, 31)]
    upload = PreKeyUpload(
        signed={SignedKind.EC: PreKeyRecord(1, b"\x05" + bytes(32), bytes(64))},
        one_time={OneTimeKind.EC: keys},
    )
    await first.put_prekeys(BOB, upload, NOW, 60.0)
    claims = [store.claim_bundles("bob", 1, 0) for _ in range(40) for store in (first, second)]
    bundles = [b for result in await asyncio.gather(*claims) for b in result]
    handed_out = [b.one_time[OneTimeKind.EC].key_id for b in bundles if OneTimeKind.EC in b.one_time]
    assert sorted(handed_out) == list(range(1, 31))
    assert sum(1 for b in bundles if OneTimeKind.EC not in b.one_time) == 50
    await first.close()
    await second.close()


async def test_an_unknown_schema_version_refuses_to_open(tmp_path):
    store = await opened(tmp_path / "r.db")
    await store.close()
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version"):
        await SQLiteStore(tmp_path / "r.db").open()


async def test_reopening_keeps_everything(tmp_path):
    store = await opened(tmp_path / "r.db")
    sent = await enqueue(store, "kept", body=b"durable")
    await store.close()
    store = SQLiteStore(tmp_path / "r.db")
    await store.open()
    assert [(m.server_id, m.body) for m in await store.fetch(BOB, 0, 10, NOW)] == [
        (sent.server_id, b"durable")
    ]
    again = await enqueue(store, "kept", body=b"durable")
    assert (again.server_id, again.duplicate) == (sent.server_id, True)
    await store.close()
