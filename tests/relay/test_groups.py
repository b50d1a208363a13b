"""Relay groups: signed membership changes, member lists, fan-out with per-recipient acks, and refusals.

Every test runs on both stores (SQLite and PostgreSQL) through a real relay on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3

import pytest

from client.transport import IncomingMessage, QueueEmpty, RelayError
from e2e.group_membership import (
    SIGNATURE_LABEL,
    GroupMember,
    MembershipChange,
    create_membership,
    next_membership,
)
from server.sqlite_store import SCHEMA_VERSION, SQLiteStore
from server.store import GROUP_CHANGE_TYPE, DeviceAddress, StoreError
from tests.relay.conftest import Device, collect, drain


async def refused(awaitable, code: str) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value
    return caught.value


def member(device: Device, admin: bool = False) -> GroupMember:
    return GroupMember(device.account, device.identity.public_key, admin)


async def people(relay, rng, *names):
    devices = [Device(name, 1, rng) for name in names]
    connections = [await d.register(relay.url) for d in devices]
    for connection in connections:
        # The relay says "queue empty" once on every new connection; later drains wait for messages.
        await drain(connection)
    return devices, connections


async def make_group(relay, rng, names=("alice", "bob", "carol")):
    devices, connections = await people(relay, rng, *names)
    change = create_membership(
        os.urandom(16),
        [member(devices[0], True), *(member(d) for d in devices[1:])],
        devices[0].identity,
        rng,
    )
    # Queued for every member device, the creator's own included.
    assert await connections[0].group_change("group_create", change.serialized) == len(devices)
    await until_body(connections[0], change.serialized)
    return devices, connections, change


async def until_body(connection, body: bytes) -> list[IncomingMessage]:
    """Messages pushed (and acknowledged) up to and including the one carrying ``body``."""
    pushes = await collect(
        connection, until=lambda ps: any(isinstance(p, IncomingMessage) and p.body == body for p in ps)
    )
    messages = [p for p in pushes if isinstance(p, IncomingMessage)]
    await connection.ack([m.server_id for m in messages])
    return messages


async def state(connection, group_id) -> dict:
    return await connection.group_members(group_id)


async def test_create_fans_out_the_signed_change_and_lists_members(relay, rng):
    _devices, (a, b, c), change = await make_group(relay, rng)
    for connection in (b, c):
        (got,) = await drain(connection)
        assert (got.type, got.group_id, got.body, got.sender) == (
            GROUP_CHANGE_TYPE,
            change.group_id,
            change.serialized,
            "alice",
        )
    view = await state(b, change.group_id)
    assert view["epoch"] == 0 and view["change"] == change.serialized
    assert [(m["account"], m["admin"]) for m in view["members"]] == [
        ("alice", True),
        ("bob", False),
        ("carol", False),
    ]
    assert await a.group_history(change.group_id) == [change.serialized]


async def test_group_send_one_commit_per_member_device_acked_separately(relay, rng):
    devices, (a, b, c), change = await make_group(relay, rng)
    # A second device of bob's gets its own copy; the sender's own device does not.
    bob2 = Device("bob", 2, rng)
    bob2.identity = devices[1].identity
    b2 = await bob2.register(relay.url)
    await drain(b2)
    for connection in (b, c):
        await drain(connection)
    result = await a.group_send(change.group_id, "g1", 7, b"one ciphertext")
    assert result["recipients"] == 3 and not result["duplicate"]
    again = await a.group_send(change.group_id, "g1", 7, b"one ciphertext")
    assert again["duplicate"] and again["server_id"] == result["server_id"]
    await refused(a.group_send(change.group_id, "g1", 7, b"other"), "message_id_reused")
    got = {}
    for name, connection in (("bob", b), ("bob2", b2), ("carol", c)):
        messages = [m for m in await drain(connection, ack=False) if m.type == 7]
        assert [(m.body, m.group_id, m.client_id) for m in messages] == [
            (b"one ciphertext", change.group_id, "g1")
        ]
        got[name] = messages[0]
    # Carol acknowledges; bob's devices do not, and get it again on their next connection.
    await c.ack([got["carol"].server_id])
    await refused(c.ack([got["bob"].server_id]), "unknown_message")
    await b.close()
    b = await devices[1].connect(relay.url)
    redelivered = [m for m in await drain(b) if m.type == 7]
    assert [m.client_id for m in redelivered] == ["g1"]
    await c.close()
    c = await devices[2].connect(relay.url)
    assert [m for m in await drain(c) if m.type == 7] == []


async def test_add_remove_leave_with_signed_changes(relay, rng):
    devices, (a, b, c), c0 = await make_group(relay, rng)
    dave = Device("dave", 1, rng)
    d = await dave.register(relay.url)
    await drain(d)
    alice, bob, _carol = devices
    c1 = next_membership(c0, [*c0.members, member(dave)], alice.identity, rng)
    assert await a.group_change("group_add", c1.serialized) == 4
    assert [m.body for m in await until_body(d, c1.serialized)] == [c1.serialized]
    c2 = next_membership(c1, [m for m in c1.members if m.name != "carol"], alice.identity, rng)
    # The removed member hears of its removal; then it is out.
    assert await a.group_change("group_remove", c2.serialized) == 4
    assert [m.body for m in await until_body(c, c2.serialized)] == [c.serialized for c in (c0, c1, c2)]
    await refused(c.group_members(c0.group_id), "not_a_member")
    await refused(c.group_send(c0.group_id, "x", 7, b"x"), "not_a_member")
    c3 = next_membership(c2, [m for m in c2.members if m.name != "bob"], bob.identity, rng)
    assert await b.group_change("group_leave", c3.serialized) == 3
    view = await state(a, c0.group_id)
    assert view["epoch"] == 3 and [m["account"] for m in view["members"]] == ["alice", "dave"]
    assert await d.group_history(c0.group_id) == [c.serialized for c in (c0, c1, c2, c3)]
    assert await d.group_history(c0.group_id, after_epoch=1) == [c2.serialized, c3.serialized]
    result = await a.group_send(c0.group_id, "after", 7, b"x")
    assert result["recipients"] == 1


async def test_refusals_change_nothing(relay, rng):
    devices, (a, b, _c), c0 = await make_group(relay, rng)
    alice, bob, _carol = devices
    mallory = Device("mallory", 1, rng)
    m = await mallory.register(relay.url)
    gid = c0.group_id
    # Not an admin: bob may not add or remove anyone (a change signed by bob, as a client would make it).
    forged = MembershipChange(gid, 1, c0.digest, bob.identity.public_key, (*c0.members, member(mallory)), b"")
    signed = MembershipChange(
        gid,
        1,
        c0.digest,
        bob.identity.public_key,
        forged.members,
        bob.identity.sign(SIGNATURE_LABEL + forged.signed_part, rng),
    )
    await refused(b.group_change("group_add", signed.serialized), "not_an_admin")
    # A bad signature.
    bad = signed.serialized[:-1] + bytes([signed.serialized[-1] ^ 1])
    await refused(b.group_change("group_add", bad), "invalid_signature")
    good = next_membership(c0, [*c0.members, member(mallory)], alice.identity, rng)
    tampered = good.serialized[:-2] + bytes([good.serialized[-2] ^ 1]) + good.serialized[-1:]
    await refused(a.group_change("group_add", tampered), "invalid_signature")
    # Signed by someone else than the connection's own key.
    await refused(b.group_change("group_add", good.serialized), "bad_membership")
    # Truncated and garbage changes.
    await refused(a.group_change("group_add", good.serialized[:50]), "bad_membership")
    await refused(a.group_change("group_add", b"\x07" * 200), "bad_membership")
    # Wrong op for the change's kind.
    await refused(a.group_change("group_remove", good.serialized), "bad_membership")
    # A non-member may not read, send or change.
    await refused(m.group_members(gid), "not_a_member")
    await refused(m.group_history(gid), "not_a_member")
    await refused(m.group_send(gid, "m", 7, b"x"), "not_a_member")
    # Unknown group.
    await refused(a.group_members(os.urandom(16)), "unknown_group")
    await refused(a.group_send(os.urandom(16), "u", 7, b"x"), "unknown_group")
    # The membership-change type is the relay's own.
    await refused(a.group_send(gid, "t", GROUP_CHANGE_TYPE, b"x"), "bad_request")
    # A replay of the creation, and a stale change after another landed.
    await refused(a.group_change("group_create", c0.serialized), "group_exists")
    assert await a.group_change("group_add", good.serialized) == 4
    other = next_membership(c0, [*c0.members, member(Device("zed", 1, rng))], alice.identity, rng)
    await refused(a.group_change("group_add", other.serialized), "stale_group")
    await refused(a.group_change("group_add", good.serialized), "stale_group")
    # An unregistered account cannot be added; an account's key must be its registered one.
    ghost = next_membership(good, [*good.members, member(Device("ghost", 1, rng))], alice.identity, rng)
    await refused(a.group_change("group_add", ghost.serialized), "unknown_account")
    impostor = Device("dave", 1, rng)
    await (await Device("dave", 1, rng).register(relay.url)).close()
    wrong_key = next_membership(good, [*good.members, member(impostor)], alice.identity, rng)
    await refused(a.group_change("group_add", wrong_key.serialized), "identity_mismatch")
    view = await state(a, gid)
    assert view["epoch"] == 1 and [x["account"] for x in view["members"]] == [
        "alice",
        "bob",
        "carol",
        "mallory",
    ]
    assert await a.group_history(gid) == [c0.serialized, good.serialized]


async def test_caps_and_rate_limits(relay_factory, rng):
    relay = await relay_factory(
        max_group_members=3, max_groups_per_account=1, group_change_burst=3, group_change_rate=0.001
    )
    devices, (a, _b, _c), c0 = await make_group(relay, rng)
    dave = Device("dave", 1, rng)
    await (await dave.register(relay.url)).close()
    too_big = next_membership(c0, [*c0.members, member(dave)], devices[0].identity, rng)
    await refused(a.group_change("group_add", too_big.serialized), "too_many_members")
    # Bob is in one group already, the most allowed.
    second = create_membership(
        os.urandom(16), [member(devices[0], True), member(devices[1])], devices[0].identity, rng
    )
    await refused(a.group_change("group_create", second.serialized), "too_many_groups")
    # Three changes in the burst are spent (create, and the two refused above): the next waits.
    error = await refused(a.group_change("group_create", second.serialized), "rate_limited")
    assert error.details["retry_after"] > 0
    view = await state(a, c0.group_id)
    assert view["epoch"] == 0 and len(view["members"]) == 3


async def test_group_send_over_queue_cap_queues_for_nobody(relay_factory, rng):
    relay = await relay_factory(max_queue_messages=2)
    _devices, (a, b, _c), c0 = await make_group(relay, rng)
    await drain(b)  # bob's queue is empty; carol's still holds the change
    await a.group_send(c0.group_id, "g1", 7, b"1")
    await refused(a.group_send(c0.group_id, "g2", 7, b"2"), "queue_full")
    got = [m.client_id for m in await drain(b) if m.type == 7]
    assert got == ["g1"]


async def test_pushes_reach_a_live_member_at_once(relay, rng):
    _devices, (a, b, _c), c0 = await make_group(relay, rng)
    await drain(b)
    reader = asyncio.create_task(collect(b, until=lambda ps: any(isinstance(p, IncomingMessage) for p in ps)))
    await asyncio.sleep(0.05)
    await a.group_send(c0.group_id, "live", 7, b"now")
    pushes = await reader
    assert [p.client_id for p in pushes if isinstance(p, IncomingMessage)] == ["live"]
    assert not any(isinstance(p, QueueEmpty) for p in pushes[1:])


# A version-1 relay database as the released relay wrote it (the schema of server/sqlite_store.py
# before groups), with one queued message: opening it migrates it to version 2 and keeps the message.
_V1_FIXTURE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE messages (
    server_id INTEGER PRIMARY KEY AUTOINCREMENT, recipient_account TEXT NOT NULL,
    recipient_device INTEGER NOT NULL, sender_account TEXT NOT NULL, sender_device INTEGER NOT NULL,
    client_id TEXT NOT NULL, type INTEGER NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO messages (recipient_account, recipient_device, sender_account, sender_device, client_id, type,
                      body, created_at, expires_at)
VALUES ('bob', 1, 'alice', 1, 'm1', 1, x'0102', 1000.0, 1e12);
"""


@pytest.mark.parametrize("store_backend", ["sqlite"])
async def test_a_version_1_sqlite_database_is_migrated_and_keeps_its_messages(tmp_path, store_backend):
    path = tmp_path / "v1.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(_V1_FIXTURE)
    db.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        (message,) = await store.fetch(DeviceAddress("bob", 1), 0, 10, 2000.0)
        assert (message.client_id, message.body, message.group_id) == ("m1", b"\x01\x02", None)
        assert await store.group(os.urandom(16)) is None
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    db.execute("UPDATE meta SET value = '99'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="unsupported schema version"):
        await SQLiteStore(path).open()


async def test_group_history_comes_in_pages(relay_factory, rng):
    relay = await relay_factory(max_group_history=2)
    devices, (a, b, _c), c0 = await make_group(relay, rng)
    chain = [c0]
    for name in ("dave", "erin", "frank"):
        extra = Device(name, 1, rng)
        await (await extra.register(relay.url)).close()
        chain.append(
            next_membership(chain[-1], [*chain[-1].members, member(extra)], devices[0].identity, rng)
        )
        await a.group_change("group_add", chain[-1].serialized)
    first = await b.request("group_history", group_id=base64.b64encode(c0.group_id).decode())
    assert len(first["changes"]) == 2 and first["more"] is True
    assert await b.group_history(c0.group_id) == [c.serialized for c in chain]
    assert await b.group_history(c0.group_id, after_epoch=3) == []


async def test_a_relay_whose_history_never_ends_is_not_asked_forever(relay, rng, monkeypatch):
    from client.transport import TransportError
    from server import protocol as p
    from server import relay as relay_module

    _devices, (_a, b, _c), c0 = await make_group(relay, rng)

    async def endless(conn, request):
        # A hostile relay: always one more page.
        conn.send(p.ok(request.id, changes=[p.b64(c0.serialized)], more=True))

    monkeypatch.setitem(relay_module._OPS, "group_history", (endless, True))
    with pytest.raises(TransportError, match="goes on past 50 changes"):
        await b.group_history(c0.group_id, max_changes=50)
