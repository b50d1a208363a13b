"""The client library end to end: two (or more) real clients through a real relay."""

from __future__ import annotations

import dataclasses

import pytest
from client_settings import TEST_SETTINGS

from client import Message
from e2e.errors import FingerprintMismatchError
from e2e.session import SessionRecord
from e2e.spqr import SpqrRatchetFactory

pytest_plugins = ["client_fixtures"]


async def test_alice_and_bob_end_to_end(relay, make_client):
    alice = make_client(relay.url, "alice")
    bob = make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        sent_id = await alice.send("bob", "Hello, Bob")
        message = await bob.receive(timeout=10)
        assert isinstance(message, Message)
        assert (message.sender, message.sender_device, message.message_id) == ("alice", 1, sent_id)
        assert message.text == "Hello, Bob"
        await bob.send("alice", b"Hi, Alice")
        reply = await alice.receive(timeout=10)
        assert reply.body == b"Hi, Alice" and reply.sender == "bob"
        await alice.flush(timeout=10)
        await bob.flush(timeout=10)

        assert [(m.direction, m.body) for m in alice.history("bob")] == [
            ("out", b"Hello, Bob"),
            ("in", b"Hi, Alice"),
        ]
        assert [(m.direction, m.body) for m in bob.history("alice")] == [
            ("in", b"Hello, Bob"),
            ("out", b"Hi, Alice"),
        ]

        alice_number = alice.safety_number("bob").displayable
        bob_number = bob.safety_number("alice").displayable
        assert str(alice_number) == str(bob_number) and len(str(alice_number)) == 60
        assert not alice.is_verified("bob")
        with pytest.raises(FingerprintMismatchError):
            alice.verify("bob", "0" * 60)
        assert not alice.is_verified("bob")
        alice.verify("bob", str(bob_number))
        assert alice.is_verified("bob")
        bob.verify_scanned("alice", alice.safety_number("bob").scannable.serialize())
        assert bob.is_verified("alice")


async def test_offline_delivery_then_reconnect_drains_in_order(relay, make_client):
    bob = make_client(relay.url, "bob")
    async with bob:
        await bob.wait_connected(timeout=10)
    # Bob is offline now; Alice writes to him.
    alice = make_client(relay.url, "alice")
    async with alice:
        ids = [await alice.send("bob", f"message {i}") for i in range(5)]
        await alice.flush(timeout=10)
    bob = make_client(relay.url, "bob")
    async with bob:
        received = [await bob.receive(timeout=10) for _ in ids]
        await bob.wait_drained(timeout=10)
    assert [m.message_id for m in received] == ids
    assert [m.text for m in received] == [f"message {i}" for i in range(5)]


def _record(client, name: str) -> SessionRecord:
    return SessionRecord.deserialize(client.store.session(name, 1), pq_ratchet_factory=SpqrRatchetFactory())


async def test_v4_with_kyber_prekeys_pqxdh_with_mlkem_only_and_x3dh_with_none(relay, make_client):
    bob = make_client(relay.url, "bob")
    dave = make_client(
        relay.url, "dave", settings=dataclasses.replace(TEST_SETTINGS, publish_kyber_pre_keys=False)
    )
    carol = make_client(
        relay.url,
        "carol",
        settings=dataclasses.replace(TEST_SETTINGS, publish_kem_pre_keys=False, publish_kyber_pre_keys=False),
    )
    alice = make_client(relay.url, "alice")
    async with alice, bob, carol, dave:
        for client in (bob, carol, dave):
            await client.wait_connected(timeout=10)
        one_time_kyber = bob.store.kem_pre_key_ids(last_resort=False, kem="kyber")
        one_time_ec = bob.store.pre_key_ids()
        assert len(one_time_kyber) == TEST_SETTINGS.kyber_pre_key_target
        assert len(bob.store.kem_pre_key_ids(last_resort=True, kem="kyber")) == 1
        assert len(bob.store.kem_pre_key_ids(last_resort=True)) == 1
        assert carol.store.kem_pre_key_ids(last_resort=False) == []
        assert carol.store.kem_pre_key_ids(last_resort=False, kem="kyber") == []
        assert dave.store.kem_pre_key_ids(last_resort=False, kem="kyber") == []
        await alice.send("bob", "triple ratchet")
        await alice.send("dave", "post-quantum")
        await alice.send("carol", "classical")
        assert (await bob.receive(timeout=10)).text == "triple ratchet"
        assert (await dave.receive(timeout=10)).text == "post-quantum"
        assert (await carol.receive(timeout=10)).text == "classical"
        for record in (_record(alice, "bob"), _record(bob, "alice")):
            assert (record.agreement, record.session_version) == ("pqxdh_v4", 4)
            assert record.current_state is not None and record.current_state.pq_ratchet is not None
        assert _record(alice, "dave").agreement == "pqxdh"
        assert _record(dave, "alice").agreement == "pqxdh"
        assert _record(alice, "carol").agreement == "x3dh"
        # Bob deleted the one-time prekeys (EC and Kyber) Alice's first message consumed, and kept
        # the others.
        remaining = bob.store.kem_pre_key_ids(last_resort=False, kem="kyber")
        assert len(set(one_time_kyber) - set(remaining)) == 1
        assert len(set(one_time_ec) - set(bob.store.pre_key_ids())) == 1
        await bob.send("alice", "and back")
        assert (await alice.receive(timeout=10)).text == "and back"


async def test_a_thousand_queued_messages_drain_in_order(relay, make_client):
    bob = make_client(relay.url, "bob")
    async with bob:
        await bob.wait_connected(timeout=10)
    alice = make_client(relay.url, "alice")
    async with alice:
        ids = [await alice.send("bob", b"%d" % i) for i in range(1000)]
        await alice.flush(timeout=60)
    bob = make_client(relay.url, "bob")
    async with bob:
        received = [await bob.receive(timeout=30) for _ in ids]
        await bob.wait_drained(timeout=30)
        assert [m.body for m in received] == [b"%d" % i for i in range(1000)]
        assert [m.message_id for m in received] == ids
        # The ratchet is in step after the long chain: a reply goes through, and so does an answer.
        await bob.send("alice", "got them all")
        await bob.flush(timeout=10)
    alice = make_client(relay.url, "alice")
    async with alice:
        assert (await alice.receive(timeout=10)).text == "got them all"
        assert len(alice.history("bob")) == 1001


async def test_replies_step_the_double_ratchet(relay, make_client):
    steps: list[str] = []

    def trace(event):
        steps.append(event.step)

    alice = make_client(relay.url, "alice", trace=trace)
    bob = make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        for turn in range(6):
            await alice.send("bob", f"ping {turn}")
            assert (await bob.receive(timeout=10)).text == f"ping {turn}"
            await bob.send("alice", f"pong {turn}")
            assert (await alice.receive(timeout=10)).text == f"pong {turn}"
    # Every reply from Bob brings a new ratchet key, so Alice performs a DH ratchet step for each.
    assert steps.count("ratchet.dh_step") >= 6
    # Bob publishes KEM prekeys, so Alice started the session with PQXDH.
    assert "pqxdh.kem" in steps and "pqxdh.kdf" in steps
