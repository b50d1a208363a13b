"""The client library end to end: two (or more) real clients through a real relay."""

from __future__ import annotations

import pytest

from client import Message
from e2e.errors import FingerprintMismatchError

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
