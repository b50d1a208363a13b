"""Linked devices through a real relay (both stores): linking, the signed device list, companion
registration, removal, the mailbox, and every refusal leaving the relay's state as it was."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import pytest

from client.devices import (
    fetch_device_list,
    link_device,
    publish_device_list,
    register_companion,
    unlink_device,
    wait_for_link,
)
from client.transport import REGISTER_LABEL, Connection, RelayError, proof_transcript
from e2e.devices import (
    DeviceIdentity,
    DeviceList,
    LinkingMetadata,
    sign_account,
    sign_device,
    sign_device_list,
    verify_device_list,
)
from e2e.keys import KeyPair
from e2e.linking import LinkOffer
from tests.relay.conftest import TEST_LIMITS, Device, drain, link


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def refused(future, code: str) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await future
    assert caught.value.code == code, caught.value
    return caught.value


async def primary_online(relay, rng, account: str = "alice") -> tuple[Device, Connection]:
    device = Device(account, 1, rng)
    connection = await device.register(relay.url)
    return device, connection


async def test_a_companion_is_linked_and_served_with_its_own_key(relay, rng):
    alice, a1 = await primary_online(relay, rng)
    laptop = Device("alice", 0, rng)
    a2 = await link(relay.url, a1, alice, laptop)
    assert laptop.device_id == 2 and a2.device_id == 2
    await alice.publish(a1, one_time=1)
    await laptop.publish(a2, one_time=1)
    _bob, b1 = await primary_online(relay, rng, "bob")
    signed = await fetch_device_list(b1, "alice")
    assert signed is not None
    listed = verify_device_list(signed, alice.identity.public_key, "alice")
    assert listed.version == 2 and listed.device_ids == (1, 2)
    assert listed.identity_key(2) == laptop.identity.public_key
    bundles = await b1.fetch_bundles("alice")
    assert {(b.device_id, b.identity_key) for b in bundles} == {
        (1, alice.identity.public_key),
        (2, laptop.identity.public_key),
    }
    # The companion reconnects with an ordinary proof of its own key.
    await a2.close()
    again = await laptop.connect(relay.url)
    await again.ping()
    for connection in (again, a1, b1):
        await connection.close()


async def test_unlinking_logs_the_device_out_and_deletes_its_queue(relay, rng):
    alice, a1 = await primary_online(relay, rng)
    laptop = Device("alice", 0, rng)
    a2 = await link(relay.url, a1, alice, laptop)
    await laptop.publish(a2, one_time=3)
    await a2.close()
    _bob, b1 = await primary_online(relay, rng, "bob")
    await b1.send_message("alice", 2, "m1", 1, b"queued for the laptop")
    a2 = await laptop.connect(relay.url)
    await unlink_device(a1, alice.identity, 2, rng=rng)
    lost = await asyncio.wait_for(a2.wait_closed(), 10)
    assert lost.code == 4005
    await refused(b1.send_message("alice", 2, "m2", 1, b"after removal"), "unknown_device")
    # The primary published no prekeys here, and the laptop's are gone with it.
    await refused(b1.fetch_bundles("alice"), "no_bundle")
    with pytest.raises(RelayError) as caught:
        await laptop.connect(relay.url)
    assert caught.value.code == "unknown_device"
    # Linking it again gives a fresh device (a new id: ids are never reused) with an empty queue.
    a2 = await link(relay.url, a1, alice, laptop)
    assert laptop.device_id == 4
    assert await drain(a2) == []
    for connection in (a1, a2, b1):
        await connection.close()


async def test_list_updates_are_refused_unless_newer_signed_and_within_the_cap(relay_factory, rng):
    relay = await relay_factory(limits=dataclasses.replace(TEST_LIMITS, max_companions=2))
    alice, a1 = await primary_online(relay, rng)
    laptop = Device("alice", 0, rng)
    a2 = await link(relay.url, a1, alice, laptop)
    stored = await fetch_device_list(a1, "alice")
    assert stored is not None
    current = verify_device_list(stored, alice.identity.public_key, "alice")
    key = alice.identity.private_key
    # The same version again, and an older one: stale.
    await refused(publish_device_list(a1, sign_device_list(key, current, rng)), "stale_device_list")
    older = dataclasses.replace(current.without_device(2, 0), version=1)
    await refused(publish_device_list(a1, sign_device_list(key, older, rng)), "stale_device_list")
    # Signed by another key (a companion pretending to be the primary) or for another account.
    mallory = KeyPair.generate(rng)
    forged = DeviceList.of("alice", 9, 0, [(1, mallory.public_key)])
    await refused(
        publish_device_list(a1, sign_device_list(mallory.private_key, forged, rng)), "invalid_signature"
    )
    other = DeviceList.of("bob", 9, 0, [(1, alice.identity.public_key)])
    await refused(publish_device_list(a1, sign_device_list(key, other, rng)), "bad_request")
    # More devices than the cap.
    crowd = current
    for device_id in (3, 4):
        crowd = crowd.with_device(device_id, KeyPair.generate(rng).public_key, 0)
    await refused(publish_device_list(a1, sign_device_list(key, crowd, rng)), "too_many_devices")
    # A companion cannot publish a list even if it is well signed.
    await refused(
        publish_device_list(a2, sign_device_list(key, current.with_device(3, mallory.public_key, 0), rng)),
        "not_primary",
    )
    # Nothing changed: version 2, both devices, the laptop still connected.
    after = await fetch_device_list(a1, "alice")
    assert after == stored
    await a2.ping()
    for connection in (a1, a2):
        await connection.close()


async def test_a_companion_without_valid_signatures_or_listing_is_refused(relay, rng):
    alice, a1 = await primary_online(relay, rng)
    bob, b1 = await primary_online(relay, rng, "bob")
    laptop = KeyPair.generate(rng)
    metadata = LinkingMetadata("alice", 2, 5)

    async def attempt(identity: DeviceIdentity, key: KeyPair = laptop, device_id: int = 2) -> RelayError:
        connection = await Connection.open(relay.url)
        transcript = proof_transcript(
            REGISTER_LABEL, connection.challenge, "alice", device_id, connection.origin
        )
        with pytest.raises(RelayError) as caught:
            await connection.request(
                "register_companion",
                account="alice",
                device_id=device_id,
                identity_key=b64(key.public_key.serialize()),
                registration_id=7,
                device_identity=b64(identity.encode()),
                signature=b64(key.sign(transcript, rng)),
            )
        assert (await connection.wait_closed()).code == 4001
        return caught.value

    good_account = sign_account(alice.identity.private_key, metadata, laptop.public_key, rng)
    good_device = sign_device(laptop.private_key, metadata, alice.identity.public_key, rng)
    # Valid signatures, but the primary never put the laptop on its list.
    error = await attempt(DeviceIdentity(metadata, laptop.public_key, good_account, good_device))
    assert error.code == "not_linked"
    # Publish a list naming the laptop, then try with bad signatures.
    listed = DeviceList.of("alice", 2, 0, [(1, alice.identity.public_key), (2, laptop.public_key)])
    await publish_device_list(a1, sign_device_list(alice.identity.private_key, listed, rng))
    by_bob = sign_account(bob.identity.private_key, metadata, laptop.public_key, rng)
    assert (
        await attempt(DeviceIdentity(metadata, laptop.public_key, by_bob, good_device))
    ).code == "invalid_signature"
    no_account = bytes(64)
    assert (
        await attempt(DeviceIdentity(metadata, laptop.public_key, no_account, good_device))
    ).code == "invalid_signature"
    other_primary = sign_device(laptop.private_key, metadata, bob.identity.public_key, rng)
    assert (
        await attempt(DeviceIdentity(metadata, laptop.public_key, good_account, other_primary))
    ).code == "invalid_signature"
    # Credentials for device 2 presented as device 3; or another key than the listed one.
    assert (
        await attempt(DeviceIdentity(metadata, laptop.public_key, good_account, good_device), device_id=3)
    ).code == "bad_request"
    stranger = KeyPair.generate(rng)
    meta3 = LinkingMetadata("alice", 3, 5)
    error = await attempt(
        DeviceIdentity(
            meta3,
            stranger.public_key,
            sign_account(alice.identity.private_key, meta3, stranger.public_key, rng),
            sign_device(stranger.private_key, meta3, alice.identity.public_key, rng),
        ),
        key=stranger,
        device_id=3,
    )
    assert error.code == "not_linked"
    # Garbage where the device identity goes.
    connection = await Connection.open(relay.url)
    with pytest.raises(RelayError) as caught:
        transcript = proof_transcript(REGISTER_LABEL, connection.challenge, "alice", 2, connection.origin)
        await connection.request(
            "register_companion",
            account="alice",
            device_id=2,
            identity_key=b64(laptop.public_key.serialize()),
            registration_id=7,
            device_identity=b64(b"\x01garbage"),
            signature=b64(laptop.sign(transcript, rng)),
        )
    assert caught.value.code == "bad_request"
    # After all that, the good credentials still register.
    connection = await Connection.open(relay.url)
    transcript = proof_transcript(REGISTER_LABEL, connection.challenge, "alice", 2, connection.origin)
    await connection.request(
        "register_companion",
        account="alice",
        device_id=2,
        identity_key=b64(laptop.public_key.serialize()),
        registration_id=7,
        device_identity=b64(DeviceIdentity(metadata, laptop.public_key, good_account, good_device).encode()),
        signature=b64(laptop.sign(transcript, rng)),
    )
    await connection.ping()
    for c in (connection, a1, b1):
        await c.close()


async def test_the_mailbox_gives_a_payload_once_and_only_primaries_fill_it(relay, rng):
    alice, a1 = await primary_online(relay, rng)
    laptop = Device("alice", 0, rng)
    offer = LinkOffer.generate(laptop.identity.public_key, rng)
    await link_device(a1, alice.identity, offer, rng=rng)
    opened = await wait_for_link(relay.url, offer, timeout=20, poll_interval=0.05)
    assert opened.payload.metadata.device_id == 2
    probe = await Connection.open(relay.url)
    await refused(probe.request("link_fetch", mailbox=b64(offer.mailbox)), "not_found")
    await refused(probe.request("link_fetch", mailbox=b64(b"short")), "bad_request")
    await probe.close()
    a2 = await register_companion(relay.url, opened, laptop.identity, 9, rng=rng)
    await refused(a2.request("link_offer", mailbox=b64(bytes(16)), payload=b64(b"x")), "not_primary")
    # At most four payloads wait per account.
    for index in range(4):  # (the link above left no payload waiting: it was fetched)
        await a1.request("link_offer", mailbox=b64(bytes([index]) * 16), payload=b64(b"sealed"))
    await refused(
        a1.request("link_offer", mailbox=b64(bytes([9]) * 16), payload=b64(b"sealed")), "mailbox_full"
    )
    # Another account cannot overwrite a mailbox that is taken.
    _bob, b1 = await primary_online(relay, rng, "bob")
    await refused(b1.request("link_offer", mailbox=b64(bytes(16)), payload=b64(b"other")), "key_id_conflict")
    probe = await Connection.open(relay.url)
    response = await probe.request("link_fetch", mailbox=b64(bytes(16)))
    assert base64.b64decode(response["payload"]) == b"sealed"
    for c in (probe, a1, a2, b1):
        await c.close()


async def test_a_replayed_linking_payload_cannot_bring_back_a_removed_device(relay, rng):
    """The relay keeps the old payload and list; neither brings the unlinked device back."""
    alice, a1 = await primary_online(relay, rng)
    laptop = Device("alice", 0, rng)
    offer = LinkOffer.generate(laptop.identity.public_key, rng)
    await link_device(a1, alice.identity, offer, rng=rng)
    opened = await wait_for_link(relay.url, offer, timeout=20, poll_interval=0.05)
    old_list = opened.payload.signed_device_list
    a2 = await register_companion(relay.url, opened, laptop.identity, 9, rng=rng)
    await unlink_device(a1, alice.identity, 2, rng=rng)
    await asyncio.wait_for(a2.wait_closed(), 10)
    await refused(publish_device_list(a1, old_list), "stale_device_list")
    with pytest.raises(RelayError) as caught:
        await register_companion(relay.url, opened, laptop.identity, 9, rng=rng)
    assert caught.value.code == "not_linked"
    await a1.close()
