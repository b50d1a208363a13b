"""Group conversations end to end: real clients (each its own SQLite file) on a real relay.

Five people hold a group conversation with adds, removals and a lost sender key; a removed member
reads nothing sent after its removal, a new member nothing sent before it joined; the relay's
inventions (a forged change, a replayed change, a ghost member) are refused and shown.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid

import pytest

from client import Client, envelope
from client.events import GroupMessage, GroupRefused, MembershipChanged
from client.groups import (
    MAX_RETRY_ANSWERS,
    SENDER_KEY_MESSAGE_TYPE,
    GroupError,
    distribution_id,
    encode_retry,
    encode_sender_key,
)
from e2e.group_cipher import SenderKeyName
from e2e.group_membership import SIGNATURE_LABEL, GroupMember, MembershipChange
from e2e.keys import KeyPair
from e2e.sender_key_messages import SenderKeyFraming, SenderKeyMessage
from e2e.sender_key_state import MAX_FORWARD_JUMPS
from server.store import GroupChange, GroupMemberRecord

pytest_plugins = ["client_fixtures"]


async def next_of(client: Client, kind: type, timeout: float = 10.0, where=lambda e: True):
    """The next event of ``kind`` satisfying ``where`` (other events are skipped)."""

    async def wait():
        while True:
            event = await client.receive()
            if isinstance(event, kind) and where(event):
                return event

    return await asyncio.wait_for(wait(), timeout)


async def texts(client: Client, count: int, timeout: float = 10.0) -> list[tuple[str, str]]:
    got = []
    while len(got) < count:
        event = await next_of(client, GroupMessage, timeout)
        got.append((event.sender, event.text))
    return got


async def started(make_client, relay, *names) -> list[Client]:
    clients = [make_client(relay.url, name) for name in names]
    for client in clients:
        await client.start()
    for client in clients:
        await client.wait_connected(timeout=10)
    return clients


async def test_five_people_with_adds_removals_and_a_lost_sender_key(relay, make_client):
    alice, bob, carol, dave, erin = await started(make_client, relay, "alice", "bob", "carol", "dave", "erin")
    group = await alice.create_group("friends", ["bob", "carol"])
    for member in (bob, carol):
        event = await next_of(member, MembershipChanged)
        assert event.members == ("alice", "bob", "carol") and event.by == "alice"

    await alice.send_group(group, "hello all")
    assert await texts(bob, 1) == [("alice", "hello all")]
    assert await texts(carol, 1) == [("alice", "hello all")]
    await bob.send_group(group, "hi from bob")
    assert await texts(alice, 1) == [("bob", "hi from bob")]
    assert await texts(carol, 1) == [("bob", "hi from bob")]

    # Dave joins: he reads what is sent from now on, not what was sent before.
    await alice.add_members(group, ["dave"])
    joined = await next_of(dave, MembershipChanged)
    assert joined.members == ("alice", "bob", "carol", "dave")
    for member in (bob, carol):
        await next_of(member, MembershipChanged, where=lambda e: "dave" in e.added)
    await carol.send_group(group, "welcome dave")
    for member in (alice, bob, dave):
        assert await texts(member, 1) == [("carol", "welcome dave")]
    assert [e.body for e in dave.group_history(group)] == [b"welcome dave"]

    # Carol is removed: every remaining member rotates; carol reads nothing sent afterwards.
    await alice.remove_members(group, ["carol"])
    removed = await next_of(carol, MembershipChanged)
    assert removed.we_left and removed.removed == ("carol",)
    for member in (bob, dave):
        await next_of(member, MembershipChanged, where=lambda e: e.removed == ("carol",))
    await bob.send_group(group, "carol is gone")
    for member in (alice, dave):
        assert await texts(member, 1) == [("bob", "carol is gone")]
    await alice.send_group(group, "still here")
    for member in (bob, dave):
        assert await texts(member, 1) == [("alice", "still here")]
    await asyncio.sleep(0.3)
    assert [e.body for e in carol.group_history(group) if e.direction == "in"] == [
        b"hello all",
        b"hi from bob",
    ]

    # Erin joins, and loses bob's sender key (a restored store would): she holds bob's message,
    # asks bob again over the pairwise session, and then reads it.
    await alice.add_members(group, ["erin"])
    await next_of(erin, MembershipChanged)
    await dave.send_group(group, "hi erin")
    for member in (erin, alice, bob):
        assert await texts(member, 1) == [("dave", "hi erin")]
    erin._groups._db.execute("DELETE FROM sender_keys WHERE sender = 'bob'")
    await bob.send_group(group, "can you read me, erin?")
    assert await texts(erin, 1, timeout=15) == [("bob", "can you read me, erin?")]
    assert erin.group_pending(group) == []
    for member in (alice, dave):
        assert await texts(member, 1) == [("bob", "can you read me, erin?")]

    # Dave leaves; what follows reaches alice, bob and erin only.
    await dave.leave(group)
    await next_of(alice, MembershipChanged, where=lambda e: e.removed == ("dave",))
    await erin.send_group(group, "bye dave")
    for member in (alice, bob):
        assert await texts(member, 1) == [("erin", "bye dave")]
    assert [m.name for m in alice.group_members(group)] == ["alice", "bob", "erin"]
    with pytest.raises(GroupError):
        await dave.send_group(group, "I left")
    for client in (alice, bob, carol, dave, erin):
        await client.close()


async def test_a_member_whose_sender_key_never_arrived_recovers_and_answers_are_bounded(relay, make_client):
    alice, bob, carol = await started(make_client, relay, "alice", "bob", "carol")
    group = await alice.create_group("g", ["bob", "carol"])
    await next_of(bob, MembershipChanged)
    await next_of(carol, MembershipChanged)
    await alice.send_group(group, "one")
    assert await texts(bob, 1) == [("alice", "one")]
    assert await texts(carol, 1) == [("alice", "one")]
    # Carol's copy of alice's chain is lost; she asks for it, and alice answers with the same
    # distribution message she gave carol before (it reaches no further back).
    for round_ in range(MAX_RETRY_ANSWERS + 1):
        carol._groups._db.execute("DELETE FROM sender_keys WHERE sender = 'alice'")
        carol._groups._db.execute("DELETE FROM group_retries")
        await alice.send_group(group, f"again {round_}")
        assert await texts(bob, 1) == [("alice", f"again {round_}")]
        if round_ < MAX_RETRY_ANSWERS:
            # Alice's answer is the distribution message she gave carol at the start (iteration 0);
            # with it carol decrypts the held message.
            assert await texts(carol, 1, timeout=15) == [("alice", f"again {round_}")]
    # The fourth request is refused by alice: carol's message stays held.
    refused = await next_of(alice, GroupRefused, timeout=15)
    assert refused.what == "retry request" and refused.sender == "carol"
    assert len(carol.group_pending(group)) == 1


async def test_the_relay_cannot_invent_replay_or_add_a_ghost(relay, make_client, tmp_path):
    alice, bob = await started(make_client, relay, "alice", "bob")
    group = await alice.create_group("g", ["bob"])
    await next_of(bob, MembershipChanged)
    await alice.send_group(group, "m1")
    assert await texts(bob, 1) == [("alice", "m1")]
    record = await relay.store.group(group)
    assert record is not None
    c0 = MembershipChange.deserialize(record.change)

    # A relay that skips its own checks commits a change signed by a key of its own making that
    # adds "mallory": every client refuses it and shows it.
    mallory = make_client(relay.url, "mallory")
    await mallory.start()
    await mallory.wait_connected(timeout=10)
    relay_key = KeyPair.generate(os.urandom)
    forged = MembershipChange(
        group,
        1,
        c0.digest,
        relay_key.public_key,
        (*c0.members, GroupMember("mallory", mallory.identity_key)),
        b"",
    )
    forged = MembershipChange(
        forged.group_id,
        forged.epoch,
        forged.previous_hash,
        forged.signer,
        forged.members,
        relay_key.sign(SIGNATURE_LABEL + forged.signed_part, os.urandom),
    )
    await relay.store.apply_group_change(
        GroupChange(
            group,
            1,
            record.digest,
            forged.digest,
            forged.serialized,
            tuple(GroupMemberRecord(m.name, m.identity_key.serialize(), m.admin) for m in forged.members),
            record.members
            and __import__("server.store", fromlist=["DeviceAddress"]).DeviceAddress("alice", 1),
        ),
        time.time(),
        3600,
        100,
    )
    for client in (alice, bob):
        refused = await next_of(client, GroupRefused)
        assert refused.what == "membership change" and "NotAnAdminError" in refused.error
    assert [m.name for m in bob.group_members(group)] == ["alice", "bob"]
    # The relay now fans out to mallory as well, but nobody gives mallory a sender key.
    await alice.send_group(group, "m2")
    assert await texts(bob, 1) == [("alice", "m2")]
    await asyncio.sleep(0.3)
    assert mallory.groups() == []

    # A replay of the creation change (byte for byte, and once tampered), queued again by the relay:
    # refused as not new.
    db = sqlite3.connect(relay.store._path)
    tampered = c0.serialized[:-1] + bytes([c0.serialized[-1] ^ 1])
    for client_id, body in (("replay", c0.serialized), ("tampered", tampered)):
        db.execute(
            "INSERT INTO messages (recipient_account, recipient_device, sender_account, sender_device, "
            "client_id, type, body, created_at, expires_at, group_id) "
            "VALUES ('bob', 1, 'alice', 1, ?, 250, ?, ?, ?, ?)",
            (client_id, body, time.time(), time.time() + 3600, group),
        )
    db.commit()
    db.close()
    await bob.close()
    bob = make_client(relay.url, "bob")
    await bob.start()
    for _ in range(2):
        refused = await next_of(bob, GroupRefused)
        assert refused.what == "membership change"
        assert "MembershipOrderError" in refused.error or "MembershipSignatureError" in refused.error
    assert [m.name for m in bob.group_members(group)] == ["alice", "bob"]
    await bob.close()
    await alice.close()
    await mallory.close()


async def test_bad_group_input_through_the_relay_changes_nothing(relay, make_client):
    alice, bob, carol = await started(make_client, relay, "alice", "bob", "carol")
    group = await alice.create_group("g", ["bob"])
    await next_of(bob, MembershipChanged)
    await alice.send_group(group, "m1")
    assert await texts(bob, 1) == [("alice", "m1")]
    alices_chain = SenderKeyName("alice", 1, distribution_id(group))
    before = bob._groups.sender_key(alices_chain)
    connection = await alice._connection()
    # A tampered group message (bad signature), a truncated one, garbage, a long garbage one.
    with alice._store.transaction():
        good = alice._group_cipher.encrypt(alice._our_name(group), b"\x01" + b"\x00" * 24 + b"x", alice._rng)
    bad_signature = good[:-1] + bytes([good[-1] ^ 1])
    # Signed with alice's real signing key, but for another distribution, and too far ahead.
    state = alice._group_cipher.store.load_sender_key(alice._our_name(group)).current_state()
    parsed = SenderKeyMessage.deserialize(good, SenderKeyFraming.LIBSIGNAL)
    signing = state.signing_key_pair.private_key
    wrong_distribution = SenderKeyMessage.create(
        SenderKeyFraming.LIBSIGNAL,
        uuid.uuid4(),
        parsed.chain_id,
        parsed.iteration,
        parsed.ciphertext,
        signing,
        os.urandom,
    ).serialized
    too_far = SenderKeyMessage.create(
        SenderKeyFraming.LIBSIGNAL,
        distribution_id(group),
        parsed.chain_id,
        parsed.iteration + MAX_FORWARD_JUMPS + 1,
        parsed.ciphertext,
        signing,
        os.urandom,
    ).serialized
    bad = [bad_signature, good[:20], b"\x33garbage", good[:1] + b"\x00" * 2000, wrong_distribution, too_far]
    for i, body in enumerate(bad):
        await connection.group_send(group, f"bad{i}", SENDER_KEY_MESSAGE_TYPE, body)
        refused = await next_of(bob, GroupRefused)
        assert refused.what == "group message" and refused.sender == "alice"
    kinds = [error.split(":")[0] for _g, _s, _d, _w, error in bob.group_refusals(group)]
    assert kinds == [
        "InvalidSignatureError",
        "DecodeError",
        "DecodeError",
        "DecodeError",
        "DistributionMismatchError",
        "TooManySkippedMessagesError",
    ]
    assert (
        bob._groups.sender_key(
            __import__("e2e.group_cipher", fromlist=["SenderKeyName"]).SenderKeyName(
                "alice", 1, __import__("client.groups", fromlist=["distribution_id"]).distribution_id(group)
            )
        )
        == before
    )
    # The genuine message still decrypts afterwards (its iteration was not burnt).
    await connection.group_send(group, "good", SENDER_KEY_MESSAGE_TYPE, good)
    assert await texts(bob, 1) == [("alice", "x")]
    # A non-member's sender key for the group, and a retry request from a non-member.
    with carol._store.transaction():
        skdm = carol._group_cipher.rotate(carol._our_name(group), carol._rng)
    await carol._send_control(
        "bob", 1, envelope.CONTENT_SENDER_KEY, encode_sender_key(group, "g", skdm.serialize())
    )
    refused = await next_of(bob, GroupRefused)
    assert refused.what == "sender key" and "not a member" in refused.error
    # A sender key for a distribution (group) nobody knows: held while bob asks the relay, then refused.
    unknown = os.urandom(16)
    with carol._store.transaction():
        other = carol._group_cipher.rotate(SenderKeyName("carol", 1, distribution_id(unknown)), carol._rng)
    await carol._send_control(
        "bob", 1, envelope.CONTENT_SENDER_KEY, encode_sender_key(unknown, "x", other.serialize())
    )
    refused = await next_of(bob, GroupRefused)
    assert refused.what == "sender key" and "not in" in refused.error and refused.group_id == unknown
    assert bob.groups() == [] or [g.group_id for g in bob.groups()] == [group]
    await carol._send_control("alice", 1, envelope.CONTENT_SENDER_KEY_RETRY, encode_retry(group, 1))
    refused = await next_of(alice, GroupRefused)
    assert refused.what == "retry request"
    # Bob is no admin: his add is refused by the relay, and nothing changes.
    with pytest.raises(Exception) as caught:
        await bob.add_members(group, ["carol"])
    assert "not an admin" in str(caught.value) or "not_an_admin" in str(caught.value)
    assert [m.name for m in alice.group_members(group)] == ["alice", "bob"]
    for client in (alice, bob, carol):
        await client.close()


async def test_group_state_survives_a_restart(relay, make_client, tmp_path):
    alice, bob = await started(make_client, relay, "alice", "bob")
    group = await alice.create_group("g", ["bob"])
    await next_of(bob, MembershipChanged)
    await alice.send_group(group, "before")
    assert await texts(bob, 1) == [("alice", "before")]
    await alice.close()
    await bob.close()
    alice = make_client(relay.url, "alice")
    bob = make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        await alice.send_group(group, "after")
        assert await texts(bob, 1) == [("alice", "after")]
        assert [e.body for e in bob.group_history(group)] == [b"before", b"after"]
        assert [g.title for g in bob.groups()] == ["g"]


def test_reprs_of_group_state_hide_keys_and_bodies() -> None:
    from client.group_store import GroupHistoryEntry, PendingGroupMessage, Share

    secret = os.urandom(40)
    for value in (
        Share(1, secret, 0),
        PendingGroupMessage(1, bytes(16), "bob", 1, "c", 0, 1, secret),
        GroupHistoryEntry(1, bytes(16), "in", "bob", 1, "m", 0, secret),
        GroupMessage(bytes(16), "bob", 1, "m", 0, 0, secret),
    ):
        assert secret.hex() not in repr(value) and repr(secret) not in repr(value)
