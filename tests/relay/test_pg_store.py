"""The PostgreSQL store beneath the relay: migrations, and several stores ("nodes") on one database.

The whole relay suite already runs on PostgreSQL through the ``store_backend`` parameter; these tests
cover what only a shared database has: the schema's version history, wake-ups that cross from one
node to another (by notification, and by the poll when a notification is lost), displacement across
nodes, and races between nodes for the same prekey, the same client message id and the same queue.
Each store here is a real :class:`PostgresStore` on a real server; nothing is stubbed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest

from server.migrations import Migration, MigrationError, load_migrations, migrate, schema_version
from server.pg_store import PostgresStore
from server.relay import Relay
from server.store import (
    DeviceAddress,
    DeviceEvent,
    EventKind,
    NewMessage,
    OneTimeKind,
    PreKeyRecord,
    PreKeyUpload,
    SignedKind,
    StoreError,
    TooManyDevicesError,
    UnknownMessageError,
)
from server.testing.pg import Cluster
from tests.relay.conftest import TEST_LIMITS, Device

NOW = 1_800_000_000.0
TTL = 3600.0
_names = itertools.count(1)


@pytest.fixture
def empty_database(pg_cluster: Cluster) -> Iterator[str]:
    """A database with no schema at all, for the migration runner."""
    name = f"empty_{next(_names)}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    pg_cluster.drop_database(name)


@pytest.fixture
async def empty_conn(empty_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(empty_database)
    yield conn
    await conn.close()


@pytest.fixture
async def nodes(pg_database: Callable[[], str]) -> AsyncIterator[Callable[..., Awaitable[PostgresStore]]]:
    """Open stores ("nodes") on one fresh database; all closed after the test."""
    dsn = pg_database()
    opened: list[PostgresStore] = []

    async def node(**options: float) -> PostgresStore:
        store = PostgresStore(dsn, **options)  # type: ignore[arg-type]
        await store.open()
        opened.append(store)
        return store

    yield node
    for store in opened:
        await store.close()


async def registered(store: PostgresStore, account: str, device_id: int = 1) -> DeviceAddress:
    device = DeviceAddress(account, device_id)
    await store.register_device(device, b"\x05" + account.encode().ljust(32, b"k"), 7, NOW)
    return device


def message(
    sender: DeviceAddress, recipient: DeviceAddress, client_id: str, body: bytes = b"c"
) -> NewMessage:
    return NewMessage(sender, recipient, client_id, 1, body)


class Events:
    """A listener that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.seen: list[DeviceEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: DeviceEvent) -> None:
        self.seen.append(event)
        self._changed.set()

    async def wait_for(self, wanted: Callable[[DeviceEvent], bool], timeout: float = 10.0) -> DeviceEvent:
        async def wait() -> DeviceEvent:
            while True:
                for event in self.seen:
                    if wanted(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)


# Migrations.


async def test_migrations_apply_once_and_a_rerun_changes_nothing(empty_conn) -> None:
    conn = empty_conn
    newest = load_migrations()[-1].version
    assert await schema_version(conn) == 0
    assert await migrate(conn) == list(range(1, newest + 1))
    assert await migrate(conn) == []
    assert await schema_version(conn) == newest
    tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
    assert {"accounts", "devices", "messages", "queues", "sent_ids", "one_time_prekeys"} <= tables


async def test_nodes_migrating_at_the_same_moment_apply_each_migration_once(empty_database: str) -> None:
    conns = [await asyncpg.connect(empty_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(conn) for conn in conns))
        applied = [version for result in results for version in result]
        assert sorted(applied) == [m.version for m in load_migrations()]
        rows = await conns[0].fetchval("SELECT count(*) FROM schema_version")
        assert rows == len(load_migrations())
    finally:
        for conn in conns:
            await conn.close()


async def test_a_failing_migration_leaves_no_trace(empty_conn) -> None:
    conn = empty_conn
    first = Migration(1, "first", "CREATE TABLE one (x integer);")
    broken = Migration(2, "broken", "CREATE TABLE two (x integer); SELECT no_such_function();")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(conn, [first, broken])
    assert await schema_version(conn) == 1
    assert await conn.fetchval("SELECT to_regclass('two')") is None


async def test_a_database_from_a_newer_relay_or_an_edited_migration_is_refused(empty_conn) -> None:
    conn = empty_conn
    first = Migration(1, "first", "CREATE TABLE one (x integer);")
    second = Migration(2, "second", "CREATE TABLE two (x integer);")
    await migrate(conn, [first, second])
    with pytest.raises(MigrationError, match="does not know"):
        await migrate(conn, [first])
    edited = Migration(1, "first", "CREATE TABLE one (x bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(conn, [edited, second])
    with pytest.raises(MigrationError, match="1, 2, 3"):
        await migrate(conn, [first, Migration(3, "third", "SELECT 1;")])
    assert await schema_version(conn) == 2


async def test_a_store_that_cannot_reach_its_database_fails_to_open_with_a_store_error() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="cannot open the database"):
        await store.open()


# Wake-ups across nodes.


async def test_a_message_committed_on_one_node_wakes_the_recipient_on_another(nodes) -> None:
    # With an hour between polls, only a notification can carry these wake-ups.  The first message
    # may also be found by the recipient node's first check of a newly subscribed device; once it
    # has arrived, that check is behind us, so the second can only arrive by notification.
    sender_node = await nodes(poll_interval=3600)
    recipient_node = await nodes(poll_interval=3600)
    alice = await registered(sender_node, "alice")
    bob = await registered(sender_node, "bob")
    events = Events()
    recipient_node.subscribe(bob, events)
    first = await sender_node.enqueue(message(alice, bob, "m1"), NOW, TTL, 100, 10_000)
    await events.wait_for(lambda e: e.kind is EventKind.MESSAGES)
    assert [m.server_id for m in await recipient_node.fetch(bob, 0, 10, NOW)] == [first.server_id]
    events.seen.clear()
    second = await sender_node.enqueue(message(alice, bob, "m2"), NOW, TTL, 100, 10_000)
    await events.wait_for(lambda e: e.kind is EventKind.MESSAGES)
    fetched = await recipient_node.fetch(bob, first.server_id, 10, NOW)
    assert [m.server_id for m in fetched] == [second.server_id]


async def test_a_lost_notification_is_made_good_by_the_poll(nodes) -> None:
    # The sending node is misconfigured with another partition count, so its notification goes to a
    # channel the recipient's node does not listen on: exactly what a lost notification looks like.
    bob = DeviceAddress("bob", 1)
    assert zlib.crc32(b"1/bob") % 64 != zlib.crc32(b"1/bob") % 7
    sender_node = await nodes(partitions=7, poll_interval=3600)
    recipient_node = await nodes(poll_interval=0.2)
    alice = await registered(sender_node, "alice")
    await registered(sender_node, "bob")
    events = Events()
    recipient_node.subscribe(bob, events)
    await asyncio.sleep(0.5)
    await sender_node.enqueue(message(alice, bob, "m1"), NOW, TTL, 100, 10_000)
    await events.wait_for(lambda e: e.kind is EventKind.MESSAGES)
    assert len(await recipient_node.fetch(bob, 0, 10, NOW)) == 1


async def test_a_login_on_one_node_displaces_the_connection_on_another(nodes) -> None:
    first = await nodes(poll_interval=3600)
    second = await nodes(poll_interval=3600)
    bob = await registered(first, "bob")
    old_events = Events()
    first.subscribe(bob, old_events)
    old_epoch = await first.begin_connection(bob, NOW)
    await asyncio.sleep(0.2)
    new_events = Events()
    second.subscribe(bob, new_events)
    new_epoch = await second.begin_connection(bob, NOW)
    assert new_epoch > old_epoch
    event = await old_events.wait_for(lambda e: e.kind is EventKind.DISPLACED and e.epoch > old_epoch)
    assert event.epoch == new_epoch


# Races between nodes.


async def test_each_one_time_prekey_is_handed_out_once_when_three_nodes_race(nodes) -> None:
    stores = [await nodes() for _ in range(3)]
    bob = await registered(stores[0], "bob")
    upload = PreKeyUpload(
        signed={SignedKind.EC: PreKeyRecord(1, b"\x05" + b"s" * 32, b"sig")},
        one_time={OneTimeKind.EC: [PreKeyRecord(i, b"\x05" + bytes([i]) * 32) for i in range(1, 6)]},
    )
    await stores[0].put_prekeys(bob, upload, NOW, 3600)
    claims = [stores[i % 3].claim_bundles("bob", 1, 2) for i in range(30)]
    bundles = [bundle for result in await asyncio.gather(*claims) for bundle in result]
    handed_out = [b.one_time[OneTimeKind.EC].key_id for b in bundles if OneTimeKind.EC in b.one_time]
    assert sorted(handed_out) == [1, 2, 3, 4, 5]
    assert len(bundles) == 30
    counts = await stores[1].prekey_counts(bob)
    assert counts.one_time[OneTimeKind.EC] == 0


async def test_nodes_registering_new_devices_at_once_never_pass_the_device_cap(nodes) -> None:
    stores = [await nodes() for _ in range(3)]
    key = b"\x05" + b"k" * 32
    await stores[0].register_device(DeviceAddress("many", 1), key, 7, NOW, max_devices=4)
    attempts = [
        stores[i % 3].register_device(DeviceAddress("many", device_id), key, 7, NOW, max_devices=4)
        for i, device_id in enumerate(range(2, 14))
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    assert sum(result is True for result in results) == 3
    assert all(isinstance(r, TooManyDevicesError) for r in results if r is not True)
    # Registering an existing device again is not a new device, even at the cap.
    assert await stores[2].register_device(DeviceAddress("many", 1), key, 8, NOW, max_devices=4) is False


async def test_a_queue_at_its_cap_drops_its_own_expired_messages_and_acks_of_them_are_refused(nodes) -> None:
    first, second = await nodes(), await nodes()
    alice = await registered(first, "alice")
    bob = await registered(first, "bob")
    for i in range(3):
        await first.enqueue(message(alice, bob, f"old{i}"), NOW, 10.0, 3, 10_000)
    old = await first.fetch(bob, 0, 10, NOW)
    # Eleven seconds on, no sweep has run: the expired three neither fill the queue nor take an ack.
    with pytest.raises(UnknownMessageError):
        await second.ack(bob, [old[0].server_id], NOW + 11)
    for i in range(3):
        await second.enqueue(message(alice, bob, f"new{i}"), NOW + 11, TTL, 3, 10_000)
    assert [m.client_id for m in await first.fetch(bob, 0, 10, NOW + 11)] == ["new0", "new1", "new2"]
    # The counters are exact again: the sweep finds nothing left to remove.
    assert await first.expire(NOW + 12) == 0


async def test_a_send_retried_on_another_node_while_the_first_is_in_flight_is_stored_once(nodes) -> None:
    first = await nodes()
    second = await nodes()
    alice = await registered(first, "alice")
    bob = await registered(first, "bob")
    for i in range(20):
        same = message(alice, bob, f"retry-{i}", body=bytes([i]) * 10)
        a, b = await asyncio.gather(
            first.enqueue(same, NOW, TTL, 1000, 1_000_000), second.enqueue(same, NOW, TTL, 1000, 1_000_000)
        )
        assert a.server_id == b.server_id
        assert sorted([a.duplicate, b.duplicate]) == [False, True]
    assert len(await first.fetch(bob, 0, 100, NOW)) == 20


async def test_a_delivery_cursor_skips_nothing_while_nodes_commit_concurrently(nodes) -> None:
    # Senders on two nodes interleave commits to one recipient while a reader on a third node
    # follows the queue with "everything after the last id I saw", as the relay's delivery does.
    senders = [await nodes(), await nodes()]
    reader = await nodes()
    bob = await registered(reader, "bob")
    devices = [await registered(reader, f"sender{i}") for i in range(6)]
    per_sender = 40
    received: list[int] = []
    done = asyncio.Event()

    async def read() -> None:
        cursor = 0
        while True:
            batch = await reader.fetch(bob, cursor, 50, NOW)
            received.extend(m.server_id for m in batch)
            if batch:
                cursor = batch[-1].server_id
            elif done.is_set():
                final = await reader.fetch(bob, cursor, 1000, NOW)
                received.extend(m.server_id for m in final)
                return

    async def send(index: int, device: DeviceAddress) -> list[int]:
        store = senders[index % 2]
        ids = []
        for n in range(per_sender):
            result = await store.enqueue(message(device, bob, f"c{n}"), NOW, TTL, 100_000, 10**8)
            ids.append(result.server_id)
        return ids

    reading = asyncio.create_task(read())
    sent = await asyncio.gather(*(send(i, d) for i, d in enumerate(devices)))
    done.set()
    await reading
    assert sorted(received) == sorted(i for ids in sent for i in ids)
    assert received == sorted(received)


async def test_two_nodes_expiring_at_once_remove_each_message_once_and_keep_the_caps_exact(nodes) -> None:
    first = await nodes()
    second = await nodes()
    alice = await registered(first, "alice")
    bob = await registered(first, "bob")
    for i in range(30):
        await first.enqueue(message(alice, bob, f"old{i}"), NOW, 10.0, 30, 10_000)
    removed = await asyncio.gather(*(store.expire(NOW + 11) for store in (first, second, first, second)))
    assert sum(removed) == 30
    # The queue's count is back to zero, so the cap of 30 admits 30 new messages again.
    for i in range(30):
        await second.enqueue(message(alice, bob, f"new{i}"), NOW + 20, TTL, 30, 10_000)
    assert len(await first.fetch(bob, 0, 100, NOW + 20)) == 30


# Group commit.


async def test_refused_items_in_a_batch_change_nothing_and_spare_their_neighbours(nodes) -> None:
    store = await nodes()
    alice = await registered(store, "alice")
    bob = await registered(store, "bob")
    carol = await registered(store, "carol")
    await store.enqueue(message(alice, bob, "taken", body=b"first"), NOW, TTL, 100, 10_000)
    await store.enqueue(message(alice, carol, "fill"), NOW, TTL, 100, 10_000)
    # Submitted together, so they share one batch and one transaction.
    outcomes = await asyncio.gather(
        store.enqueue(message(alice, bob, "ok-1"), NOW, TTL, 100, 10_000),
        store.enqueue(message(alice, DeviceAddress("nobody", 1), "lost"), NOW, TTL, 100, 10_000),
        store.enqueue(message(alice, bob, "taken", body=b"other"), NOW, TTL, 100, 10_000),
        store.enqueue(message(alice, carol, "over"), NOW, TTL, 1, 10_000),
        store.enqueue(message(alice, bob, "ok-2"), NOW, TTL, 100, 10_000),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == [
        "EnqueueResult",
        "UnknownDeviceError",
        "MessageIdReusedError",
        "QueueFullError",
        "EnqueueResult",
    ]
    assert [m.client_id for m in await store.fetch(bob, 0, 10, NOW)] == ["taken", "ok-1", "ok-2"]
    assert [m.client_id for m in await store.fetch(carol, 0, 10, NOW)] == ["fill"]
    queued = await store.fetch(bob, 0, 10, NOW)
    acks = await asyncio.gather(
        store.ack(bob, [queued[0].server_id], NOW),
        store.ack(bob, [queued[1].server_id, 10**12], NOW),
        store.ack(carol, [queued[2].server_id], NOW),
        return_exceptions=True,
    )
    assert acks[0] == 1
    assert type(acks[1]).__name__ == "UnknownMessageError" and acks[1].server_ids == (10**12,)
    assert type(acks[2]).__name__ == "UnknownMessageError"
    assert [m.client_id for m in await store.fetch(bob, 0, 10, NOW)] == ["ok-1", "ok-2"]


async def test_one_senders_pipelined_messages_keep_their_order_across_batches(nodes) -> None:
    store = await nodes(batch_limit=7)
    alice = await registered(store, "alice")
    recipients = [await registered(store, name) for name in ("zed", "bob", "amy")]
    sends = [
        store.enqueue(message(alice, recipients[n % 3], f"m{n}"), NOW, TTL, 1000, 10**6) for n in range(60)
    ]
    results = await asyncio.gather(*sends)
    for index, recipient in enumerate(recipients):
        fetched = await store.fetch(recipient, 0, 100, NOW)
        assert [m.client_id for m in fetched] == [f"m{n}" for n in range(60) if n % 3 == index]
    assert len({r.server_id for r in results}) == 60


async def test_a_store_refuses_a_database_migrated_by_a_newer_relay(pg_database) -> None:
    dsn = pg_database()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO schema_version (version, name, checksum) VALUES (999, 'future', '-')")
    finally:
        await conn.close()
    store = PostgresStore(dsn)
    with pytest.raises(StoreError, match="does not know"):
        await store.open()


async def test_the_database_holds_the_opaque_bytes_and_no_private_key(pg_cluster, pg_database, rng) -> None:
    dsn = pg_database()
    relay = Relay(PostgresStore(dsn), TEST_LIMITS)
    await relay.start()
    try:
        alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
        a = await alice.register(relay.url)
        b = await bob.register(relay.url)
        await bob.publish(b, one_time=3)
        body = os.urandom(300)
        await a.send("bob", 1, "opaque", 7, body)
        await a.close()
        await b.close()
    finally:
        await relay.close()
    # What the server has written for this database: its tables and indexes (flushed to their files
    # by a checkpoint) and the newest write-ahead log segments.
    name = dsn.rsplit("/", 1)[1]
    oid = pg_cluster.psql(f"CHECKPOINT; SELECT oid FROM pg_database WHERE datname = '{name}'").strip()
    data = pg_cluster.root / "data"
    files = [p for p in (data / "base" / oid).iterdir() if p.is_file()]
    files += sorted((p for p in (data / "pg_wal").iterdir() if p.is_file()), key=lambda p: p.stat().st_mtime)[
        -2:
    ]
    written = b"".join(path.read_bytes() for path in files)
    assert body in written
    for device in (alice, bob):
        assert device.identity.private_key.serialize() not in written


async def test_a_dropped_wakeup_connection_reconnects_and_misses_nothing(nodes, pg_cluster) -> None:
    sender_node = await nodes(poll_interval=3600)
    recipient_node = await nodes(poll_interval=3600)
    alice = await registered(sender_node, "alice")
    bob = await registered(sender_node, "bob")
    events = Events()
    recipient_node.subscribe(bob, events)
    await sender_node.prekey_counts(bob)
    # The server drops every node's listening connection; a message is committed meanwhile.
    pg_cluster.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'e2e-relay wake-ups'"
    )
    result = await sender_node.enqueue(message(alice, bob, "while-away"), NOW, TTL, 100, 10_000)
    await events.wait_for(lambda e: e.kind is EventKind.MESSAGES)
    assert [m.server_id for m in await recipient_node.fetch(bob, 0, 10, NOW)] == [result.server_id]
    # And notifications flow again afterwards.
    events.seen.clear()
    later = await sender_node.enqueue(message(alice, bob, "after"), NOW, TTL, 100, 10_000)
    await events.wait_for(lambda e: e.kind is EventKind.MESSAGES)
    assert [m.server_id for m in await recipient_node.fetch(bob, result.server_id, 10, NOW)] == [
        later.server_id
    ]


async def test_a_send_survives_the_server_dropping_the_nodes_connections(nodes, pg_cluster) -> None:
    store = await nodes()
    alice = await registered(store, "alice")
    bob = await registered(store, "bob")
    await store.enqueue(message(alice, bob, "before"), NOW, TTL, 100, 10_000)
    pg_cluster.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'e2e-relay'"
    )
    # The send meets a dead connection, is tried again on a fresh one, and is stored once.
    result = await store.enqueue(message(alice, bob, "after"), NOW, TTL, 100, 10_000)
    assert not result.duplicate
    assert [m.client_id for m in await store.fetch(bob, 0, 10, NOW)] == ["before", "after"]
