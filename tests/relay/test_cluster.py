"""Several relay processes on one PostgreSQL database: the relay as a cluster.

Every node here is ``python -m server --store postgresql://…`` as a child process on its own
ephemeral port, and every client is a real WebSocket client.  The nodes share nothing but the
database, so whatever crosses from one node to another (a wake-up, a displacement, a prekey claim, a
retried send) crosses through it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from client.transport import Connection, ConnectionLost, IncomingMessage, TransportError
from e2e.group_membership import GroupMember, create_membership, next_membership
from server.protocol import CloseCode
from tests.relay.conftest import Device, RelayProcess, drain


@pytest.fixture
async def cluster(
    tmp_path: Path, pg_database: Callable[[], str]
) -> AsyncIterator[Callable[..., Awaitable[tuple[str, list[RelayProcess]]]]]:
    """Start ``count`` relay nodes on one fresh database; returns (DSN, nodes).  Killed afterwards."""
    started: list[RelayProcess] = []

    async def start(count: int, *, poll_interval: float = 3600.0) -> tuple[str, list[RelayProcess]]:
        dsn = pg_database()
        # With an hour between polls, wake-ups between nodes travel by notification (apart from each
        # node's one check of a device that has just connected to it).
        url = f"{dsn}?poll_interval={poll_interval}"
        nodes = [
            RelayProcess(tmp_path / "unused.sqlite3", tmp_path / f"node{i}.log", ["--store", url])
            for i in range(1, count + 1)
        ]
        started.extend(nodes)
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        return dsn, nodes

    yield start
    running = [node for node in started if node.process is not None and node.process.poll() is None]
    await asyncio.gather(*(asyncio.to_thread(node.terminate) for node in running))


async def test_alice_on_one_node_reaches_bob_on_another_at_once(cluster, rng) -> None:
    _dsn, (node1, node2) = await cluster(2)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(node1.url)
    b = await bob.register(node2.url)
    assert await drain(a) == []
    assert await drain(b) == []
    for i in range(5):
        await a.send("bob", 1, f"m{i}", 1, f"hello {i}".encode())
    got: list[IncomingMessage] = []
    async for push in b.pushes():
        if isinstance(push, IncomingMessage):
            got.append(push)
            await b.ack([push.server_id])
            if len(got) == 5:
                break
    assert [m.body for m in got] == [f"hello {i}".encode() for i in range(5)]
    # And back the other way, node 2 to node 1.
    await b.send("alice", 1, "r0", 1, b"hi alice")
    back = await drain(a)
    assert [m.body for m in back] == [b"hi alice"]
    await a.close()
    await b.close()


async def test_a_login_on_another_node_displaces_the_old_connection(cluster, rng) -> None:
    _dsn, (node1, node2) = await cluster(2)
    bob = Device("bob", 1, rng)
    old = await bob.register(node1.url)
    new = await bob.connect(node2.url)
    lost = await asyncio.wait_for(old.wait_closed(), 10)
    assert lost.code == CloseCode.DISPLACED
    await new.ping()
    await new.close()


async def test_three_nodes_race_for_the_last_one_time_prekeys(cluster, rng) -> None:
    _dsn, nodes = await cluster(3)
    bob = Device("bob", 1, rng)
    b = await bob.register(nodes[0].url)
    await bob.publish(b, one_time=3)
    await b.close()
    requesters = [await Device(f"fetcher{i}", 1, rng).register(nodes[i % 3].url) for i in range(12)]
    bundles = await asyncio.gather(*(r.fetch_bundle("bob", 1) for r in requesters))
    handed_out = [bundle.pre_key_id for bundle in bundles if bundle.pre_key_id is not None]
    assert sorted(handed_out) == [1, 2, 3]
    assert sum(bundle.pre_key_id is None for bundle in bundles) == 9
    for bundle in bundles:
        bundle.verify()
    for r in requesters:
        await r.close()


async def test_a_node_killed_mid_stream_loses_nothing_and_duplicates_nothing(cluster, rng) -> None:
    dsn, (node1, node2, node3) = await cluster(3)
    total = 120
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    # Both start on node 1, which dies; Alice moves to node 2 and Bob to node 3.
    a = await alice.register(node1.url)
    await (await bob.register(node1.url)).close()
    server_ids: dict[str, int] = {}
    delivered: list[IncomingMessage] = []
    transport_pushes = 0
    moved: list[str] = []
    everything = asyncio.Event()

    async def reconnect(device: Device, url: str) -> Connection:
        for _ in range(100):
            try:
                return await device.connect(url)
            except (TransportError, OSError):
                await asyncio.sleep(0.05)
        raise AssertionError(f"could not reconnect {device.account} to {url}")

    async def send_all() -> None:
        nonlocal a
        for i in range(total):
            client_id = f"m{i}"
            while True:
                try:
                    server_ids.setdefault(client_id, 0)
                    server_id = await a.send("bob", 1, client_id, 1, f"message {i}".encode())
                    break
                except ConnectionLost:
                    # Not acknowledged: maybe stored, maybe not.  Resend the same client id elsewhere.
                    a = await reconnect(alice, node2.url)
                    moved.append("alice")
            if server_ids[client_id] not in (0, server_id):
                raise AssertionError(f"{client_id} was stored twice")
            server_ids[client_id] = server_id

    async def receive_all() -> None:
        nonlocal transport_pushes
        url = node1.url
        seen: set[int] = set()
        while True:
            b = await reconnect(bob, url)
            try:
                async for push in b.pushes():
                    if not isinstance(push, IncomingMessage):
                        continue
                    transport_pushes += 1
                    # The application's duplicate removal: a redelivered server id is dropped.
                    if push.server_id not in seen:
                        seen.add(push.server_id)
                        delivered.append(push)
                    await b.ack([push.server_id])
                    if len(delivered) == total:
                        everything.set()
                        await b.close()
                        return
            except ConnectionLost:
                pass  # An ack on the dead connection: the same loss, seen from the other side.
            # pushes() ends when the connection closes, and an ack raises if it closed first:
            # either way Bob lost node 1 before he had everything, and carries on at node 3.
            moved.append("bob")
            url = node3.url

    async def kill_mid_stream() -> None:
        while sum(1 for v in server_ids.values() if v) < total // 3:
            await asyncio.sleep(0.005)
        node1.kill()

    receiving = asyncio.create_task(receive_all())
    await asyncio.gather(send_all(), kill_mid_stream())
    await asyncio.wait_for(everything.wait(), 30)
    await receiving
    await a.close()

    assert node1.process is not None and node1.process.returncode == -9
    # The kill came mid-stream: both clients lost node 1 and carried on elsewhere.
    assert sorted(moved) == ["alice", "bob"]
    assert [m.client_id for m in delivered] == [f"m{i}" for i in range(total)]
    assert [m.body for m in delivered] == [f"message {i}".encode() for i in range(total)]
    assert len(set(server_ids.values())) == total
    assert transport_pushes >= total
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 0
        assert await conn.fetchval("SELECT count FROM queues WHERE account = 'bob'") == 0
    finally:
        await conn.close()


async def test_a_group_spread_over_three_nodes_gets_one_send_fanned_out(cluster, rng) -> None:
    _dsn, nodes = await cluster(3)
    devices = [Device(name, 1, rng) for name in ("alice", "bob", "carol")]
    connections = [await d.register(node.url) for d, node in zip(devices, nodes, strict=True)]
    for connection in connections:
        assert await drain(connection) == []
    members = [GroupMember(d.account, d.identity.public_key, d.account == "alice") for d in devices]
    c0 = create_membership(os.urandom(16), members, devices[0].identity, rng)
    a, b, c = connections
    # The change is committed on node 1 and wakes bob on node 2 and carol on node 3.
    assert await a.group_change("group_create", c0.serialized) == 3
    assert (await drain(a))[0].body == c0.serialized
    for connection in (b, c):
        (change,) = await drain(connection)
        assert change.body == c0.serialized and change.group_id == c0.group_id
    result = await a.group_send(c0.group_id, "g1", 7, b"to all")
    assert result["recipients"] == 2
    for connection in (b, c):
        (message,) = await drain(connection)
        assert (message.client_id, message.body, message.group_id) == ("g1", b"to all", c0.group_id)
    # Alice (the only admin) removes carol through node 1; bob then sends through node 2.
    c1 = next_membership(c0, members[:2], devices[0].identity, rng)
    assert await a.group_change("group_remove", c1.serialized) == 3
    assert (await drain(a))[0].body == c1.serialized
    assert (await drain(b))[0].body == c1.serialized
    assert (await drain(c))[0].body == c1.serialized
    assert (await b.group_send(c0.group_id, "g2", 7, b"without carol"))["recipients"] == 1
    (message,) = await drain(a)
    assert message.client_id == "g2"
    for connection in connections:
        await connection.close()


async def test_two_admins_on_two_nodes_race_and_exactly_one_change_lands(cluster, rng) -> None:
    _dsn, (node1, node2) = await cluster(2)
    devices = [Device(name, 1, rng) for name in ("alice", "bob", "carol", "dave")]
    alice, bob = await devices[0].register(node1.url), await devices[1].register(node2.url)
    for device in devices[2:]:
        await (await device.register(node1.url)).close()
    members = [
        GroupMember(d.account, d.identity.public_key, d.account in ("alice", "bob")) for d in devices[:2]
    ]
    c0 = create_membership(os.urandom(16), members, devices[0].identity, rng)
    await alice.group_change("group_create", c0.serialized)
    carol = GroupMember("carol", devices[2].identity.public_key)
    dave = GroupMember("dave", devices[3].identity.public_key)
    by_alice = next_membership(c0, [*members, carol], devices[0].identity, rng)
    by_bob = next_membership(c0, [*members, dave], devices[1].identity, rng)
    outcomes = await asyncio.gather(
        alice.group_change("group_add", by_alice.serialized),
        bob.group_change("group_add", by_bob.serialized),
        return_exceptions=True,
    )
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(errors) == 1 and getattr(errors[0], "code", None) == "stale_group", outcomes
    view = await alice.group_members(c0.group_id)
    assert view["epoch"] == 1 and len(view["members"]) == 3
    assert await bob.group_history(c0.group_id) in (
        [c0.serialized, by_alice.serialized],
        [c0.serialized, by_bob.serialized],
    )
    for connection in (alice, bob):
        await connection.close()
