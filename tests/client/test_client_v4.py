"""The client library on version 4: Signal's PQXDH with Kyber1024 and SPQR, through a real relay.

Real parts throughout: an in-process relay on loopback with its SQLite file, clients with their
SQLite stores.  What is proved here: SPQR's epochs advance across a conversation whose clients
restart from their stores in the middle of an epoch; Kyber prekeys are consumed once and
replenished; a session never goes down from version 4 (a version-3 PreKey message from the same
device is refused and held, with nothing changed; a bundle without a Kyber prekey for a device
whose session was version 4 is a typed :class:`DowngradeError` on send, with nothing stored).
"""

from __future__ import annotations

import dataclasses

import pytest
from client_fixtures import make_client, relay, relay_factory  # noqa: F401 (fixtures)
from client_settings import TEST_SETTINGS

from client import Message, Undecryptable
from client.transport import connect
from e2e import records
from e2e.address import ProtocolAddress
from e2e.errors import DowngradeError
from e2e.kyber import KyberPublicKey
from e2e.session import SessionRecord
from e2e.spqr import SpqrRatchetFactory
from e2e.wire import MessageType

FACTORY = SpqrRatchetFactory()


def _record(client, name: str) -> SessionRecord:
    data = client.store.session(name, 1)
    assert data is not None
    return SessionRecord.deserialize(data, pq_ratchet_factory=FACTORY)


def _epoch(client, name: str) -> int:
    state = _record(client, name).current_state
    assert state is not None and state.pq_ratchet is not None
    return int(state.pq_ratchet.explain()["spqr_epoch"])  # type: ignore[attr-defined]


async def _ping_pong(alice, bob, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await alice.send("bob", f"ping {i}")
        event = await bob.receive(timeout=10)
        assert isinstance(event, Message) and event.text == f"ping {i}"
        await bob.send("alice", f"pong {i}")
        event = await alice.receive(timeout=10)
        assert isinstance(event, Message) and event.text == f"pong {i}"


async def test_spqr_epochs_advance_across_restarts_mid_epoch(relay, make_client):  # noqa: F811
    bob = make_client(relay.url, "bob")
    alice = make_client(relay.url, "alice")
    async with bob, alice:
        await bob.wait_connected(timeout=10)
        await _ping_pong(alice, bob, 30)
        assert _record(alice, "bob").session_version == 4
        assert (_epoch(alice, "bob"), _epoch(bob, "alice")) == (1, 1)
    # Both restart from their stores in the middle of SPQR's first epoch.
    bob = make_client(relay.url, "bob")
    alice = make_client(relay.url, "alice")
    async with bob, alice:
        await bob.wait_connected(timeout=10)
        await alice.wait_connected(timeout=10)
        await _ping_pong(alice, bob, 70, start=30)
        assert _epoch(alice, "bob") >= 2 and _epoch(bob, "alice") >= 2
        for client, peer in ((alice, "bob"), (bob, "alice")):
            record = _record(client, peer)
            assert (record.agreement, record.session_version) == ("pqxdh_v4", 4)


async def test_kyber_prekeys_are_claimed_once_and_replenished(relay, make_client):  # noqa: F811
    bob = make_client(relay.url, "bob")
    async with bob:
        await bob.wait_connected(timeout=10)
        published = set(bob.store.kem_pre_key_ids(last_resort=False, kem="kyber"))
        assert len(published) == TEST_SETTINGS.kyber_pre_key_target
        senders = [make_client(relay.url, f"sender{i}") for i in range(TEST_SETTINGS.kyber_pre_key_target)]
        for sender in senders:
            async with sender:
                await sender.send("bob", "hello")
                event = await bob.receive(timeout=10)
                assert isinstance(event, Message) and event.text == "hello"
                assert _record(bob, sender.name).session_version == 4
        # Every one of the published one-time Kyber prekeys was used once and deleted; the relay
        # said the stock was low, and Bob published new ones.
        remaining = set(bob.store.kem_pre_key_ids(last_resort=False, kem="kyber"))
        assert not published & remaining
        connection = await bob._connection()
        counts = await connection.prekey_counts()
        assert counts.kyber_pre_keys >= TEST_SETTINGS.kyber_pre_key_low_water
        assert counts.kyber_last_resort_id is not None


async def test_a_version_3_prekey_message_on_a_version_4_session_is_held_and_changes_nothing(
    relay,  # noqa: F811
    make_client,  # noqa: F811
    rng,
):
    bob = make_client(relay.url, "bob")
    alice = make_client(relay.url, "alice")
    async with bob, alice:
        await bob.wait_connected(timeout=10)
        await _ping_pong(alice, bob, 2)
        before = bob.store.session("alice", 1)
        alice_identity, registration_id = records.deserialize_identity(alice.store.account().identity)
    # Someone with Alice's keys (an old install of hers, or an attacker who has them) answers
    # with a version-3 PQXDH session from Bob's ML-KEM prekey.
    connection = await connect(relay.url, account="alice", device_id=1, identity_key=alice_identity, rng=rng)
    bundle = await connection.fetch_bundle("bob", 1, kyber=False)
    assert bundle.kem_pre_key is not None and not isinstance(bundle.kem_pre_key, KyberPublicKey)
    v3 = SessionRecord.initiate(alice_identity, registration_id, bundle, rng)
    ciphertext = v3.encrypt(b"\x01" + bytes(24) + b"downgrade", rng)
    assert ciphertext.type == MessageType.PREKEY and ciphertext.body[0] == 0x33
    await connection.send("bob", 1, "downgrade", ciphertext.type, ciphertext.body)
    await connection.close()
    bob = make_client(relay.url, "bob")
    async with bob:
        event = await bob.receive(timeout=10)
        assert isinstance(event, Undecryptable) and event.error == "DowngradeError"
        assert bob.quarantined()[-1].message_id == "downgrade"
        # Bob's session with Alice is exactly as it was, and still works.
        assert bob.store.session("alice", 1) == before
        alice = make_client(relay.url, "alice")
        async with alice:
            await _ping_pong(alice, bob, 1, start=10)


async def test_a_bundle_without_a_kyber_prekey_after_version_4_is_refused_on_send(
    relay,  # noqa: F811
    make_client,  # noqa: F811
):
    bob = make_client(relay.url, "bob")
    alice = make_client(relay.url, "alice")
    async with bob, alice:
        await bob.wait_connected(timeout=10)
        await _ping_pong(alice, bob, 1)
    # Alice's current state is gone (archived), so her next send fetches a bundle; and this time
    # she takes the ML-KEM prekey from it, as a relay that withheld the Kyber prekey would make her.
    alice = make_client(
        relay.url, "alice", settings=dataclasses.replace(TEST_SETTINGS, start_v4_sessions=False)
    )
    async with alice:
        record = alice._protocol.load_session(ProtocolAddress("bob", 1))
        assert record is not None
        record.archive_current_state()
        alice._protocol.store_session(ProtocolAddress("bob", 1), record)
        stored = alice.store.session("bob", 1)
        history = alice.history("bob")
        with pytest.raises(DowngradeError):
            await alice.send("bob", "down to v3?")
        # Nothing was stored: no new state, no outbox entry, no history.
        assert alice.store.session("bob", 1) == stored
        assert alice.history("bob") == history
        assert alice.store.outbox_size() == 0
