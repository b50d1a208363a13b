"""Linked devices end to end: two accounts with three devices each (real relay, real SQLite files,
real sockets) hold a conversation; every message reaches every device exactly once, the sender's
own other devices included; unlinking stops delivery; a relay swapping a companion's key is caught."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import pytest
from client_settings import TEST_SETTINGS

from client import Client, Message
from client.errors import ClosedError
from client.fanout import DeviceKeyMismatchError, decode_transcript, encode_transcript, link_companion
from e2e.errors import DecodeError
from e2e.linking import LinkOffer
from server import Relay, SQLiteStore
from tests.client.client_fixtures import TEST_LIMITS
from tests.relay.hostile import HostileShim

pytest_plugins = ["client_fixtures"]


async def link_one(primary: Client, url: str, path) -> Client:
    offers: asyncio.Queue[LinkOffer] = asyncio.Queue()
    companion_task = asyncio.ensure_future(
        link_companion(path, url, on_offer=offers.put_nowait, timeout=20, settings=TEST_SETTINGS)
    )
    offer = await asyncio.wait_for(offers.get(), 20)
    await primary.link(offer.to_code())
    companion = await asyncio.wait_for(companion_task, 20)
    await companion.start()
    await companion.wait_connected(timeout=20)
    return companion


async def collect(client: Client, expected: int = 1, quiet: float = 0.3) -> list[Message]:
    """The next ``expected`` message events (waiting up to 20 s for each), then whatever else
    arrives until the client has been quiet for ``quiet`` seconds (so a duplicate is caught)."""
    seen: list[Message] = []
    while len(seen) < expected:
        event = await client.receive(timeout=20)
        if isinstance(event, Message):
            seen.append(event)
    with contextlib.suppress(TimeoutError):
        while True:
            event = await client.receive(timeout=quiet)
            if isinstance(event, Message):
                seen.append(event)
    return seen


async def three_each(relay, make_client, tmp_path):
    alice = make_client(relay.url, "alice")
    bob = make_client(relay.url, "bob")
    await alice.start()
    await bob.start()
    await alice.wait_connected(timeout=20)
    await bob.wait_connected(timeout=20)
    alices = [alice]
    bobs = [bob]
    for index in (2, 3):
        alices.append(await link_one(alice, relay.url, tmp_path / f"alice-{index}.db"))
        bobs.append(await link_one(bob, relay.url, tmp_path / f"bob-{index}.db"))
    return alices, bobs


async def test_two_accounts_with_three_devices_each(relay, make_client, tmp_path):
    alices, bobs = await three_each(relay, make_client, tmp_path)
    try:
        assert [c.device_id for c in alices] == [1, 2, 3] and [c.device_id for c in bobs] == [1, 2, 3]
        # Each companion has its own identity key; the safety number stays the primary's.
        assert len({c.identity_key for c in alices + bobs}) == 6
        first = await alices[0].send_all("bob", "hello from alice's phone")
        await alices[0].flush(timeout=20)
        for bob_device in bobs:
            got = await collect(bob_device)
            assert [(m.sender, m.sender_device, m.message_id, m.text, m.to) for m in got] == [
                ("alice", 1, first, "hello from alice's phone", None)
            ]
        for alice_device in alices[1:]:
            got = await collect(alice_device)
            assert [(m.sender, m.sender_device, m.text, m.to) for m in got] == [
                ("alice", 1, "hello from alice's phone", "bob")
            ]
        assert await collect(alices[0], expected=0) == []
        # Bob answers from his laptop (device 2).
        reply = await bobs[1].send_all("alice", "hi alice, from bob's laptop")
        await bobs[1].flush(timeout=20)
        for alice_device in alices:
            got = await collect(alice_device)
            assert [(m.sender, m.sender_device, m.message_id, m.to) for m in got] == [("bob", 2, reply, None)]
        for index in (0, 2):
            got = await collect(bobs[index])
            assert [(m.sender_device, m.text, m.to) for m in got] == [
                (2, "hi alice, from bob's laptop", "alice")
            ]
        # Every device's history shows both messages, in order, as the conversation with the other.
        for device, peer in [(c, "bob") for c in alices] + [(c, "alice") for c in bobs]:
            assert [m.body for m in device.history(peer)] == [
                b"hello from alice's phone",
                b"hi alice, from bob's laptop",
            ], (device, peer)
        # Safety numbers are per account: the same whichever device computes them.
        numbers = {str(c.safety_number("bob").displayable) for c in alices[:1]}
        numbers |= {str(c.safety_number("alice").displayable) for c in bobs[:1]}
        assert len(numbers) == 1
        # Unlinking Alice's device 3 stops delivery to it and stops that client.
        await alices[0].unlink(3)
        for _ in range(400):
            if alices[2]._fatal is not None:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(ClosedError):
            await alices[2].send_all("bob", "from a removed laptop")
        after = await bobs[0].send_all("alice", "after the unlink")
        await bobs[0].flush(timeout=20)
        for alice_device in alices[:2]:
            got = await collect(alice_device)
            assert [(m.message_id, m.text) for m in got] == [(after, "after the unlink")]
        assert bobs[0].delivery(after).pending == ()
    finally:
        for client in alices + bobs:
            await client.close()


async def test_two_accounts_with_three_devices_each_in_a_group(relay, make_client, tmp_path):
    """Every group message reaches every other device of both accounts exactly once, the
    sender's own other devices included, whichever device sends it."""
    from client.events import GroupMessage

    alices, bobs = await three_each(relay, make_client, tmp_path)
    devices = alices + bobs
    try:
        # The first pairwise messages make each side verify the other's device list.
        await alices[0].send_all("bob", "hello")
        await bobs[0].send_all("alice", "hello")
        await alices[0].flush(timeout=20)
        await bobs[0].flush(timeout=20)
        group = await alices[0].create_group("six devices", ["bob"])

        async def group_texts(client: Client, expected: int) -> list[tuple[str, int, str]]:
            seen: list[tuple[str, int, str]] = []
            while len(seen) < expected:
                event = await client.receive(timeout=20)
                if isinstance(event, GroupMessage):
                    seen.append((event.sender, event.sender_device, event.text))
            with contextlib.suppress(TimeoutError):
                while True:
                    event = await client.receive(timeout=0.3)
                    if isinstance(event, GroupMessage):
                        seen.append((event.sender, event.sender_device, event.text))
            return seen

        for sender, text in ((alices[0], "from alice's phone"), (bobs[2], "from bob's third device")):
            await sender.send_group(group, text)
            expected = (sender.name, sender.device_id, text)
            others = [device for device in devices if device is not sender]
            results = await asyncio.gather(*(group_texts(device, 1) for device in others))
            for device, got in zip(others, results, strict=True):
                assert got == [expected], (device.name, device.device_id)
    finally:
        for client in devices:
            await client.close()


@contextlib.asynccontextmanager
async def relay_behind_shim(tmp_path, tamper):
    """A real relay whose only door is a hostile shim: clients dial the shim, and the relay's
    origin is the shim's URL, so proofs are made for what the clients dialled."""
    shim = HostileShim("", tamper)
    await shim.start()
    relay = Relay(SQLiteStore(tmp_path / "shimmed.db"), TEST_LIMITS, origin=shim.url)
    await relay.start("127.0.0.1", 0)
    shim.upstream_url = relay.url
    try:
        yield shim
    finally:
        await shim.close()
        await relay.close()


async def test_a_relay_serving_a_swapped_companion_key_is_refused(make_client, tmp_path):
    swap = {"on": False, "key": ""}

    def tamper(direction, frame):
        if swap["on"] and direction == "down" and "bundles" in frame:
            for bundle in frame["bundles"]:
                if bundle.get("device_id") == 2:
                    bundle["identity_key"] = swap["key"]
        return frame

    async with relay_behind_shim(tmp_path, tamper) as shim:
        alice = make_client(shim.url, "alice")
        await alice.start()
        await alice.wait_connected(timeout=20)
        laptop = await link_one(alice, shim.url, tmp_path / "alice-2.db")
        swap["key"] = base64.b64encode(make_client(shim.url, "mallory").identity_key.serialize()).decode()
        bob = make_client(shim.url, "bob")
        try:
            await bob.start()
            await bob.wait_connected(timeout=20)
            swap["on"] = True
            with pytest.raises(DeviceKeyMismatchError):
                await bob.send_all("alice", "to every device")
            assert bob.store.outbox_size() == 0 and bob.history("alice") == []
            swap["on"] = False
            await bob.send_all("alice", "to every device")
            await bob.flush(timeout=20)
            for device in (alice, laptop):
                got = await collect(device)
                assert [m.text for m in got] == ["to every device"]
        finally:
            for client in (alice, laptop, bob):
                await client.close()


async def test_a_connection_lost_mid_fan_out_resends_only_what_is_missing_once(make_client, tmp_path):
    """The relay takes some copies and loses its answers, never sees the others, and the connection
    drops: after reconnecting, the outbox sends each copy again under its id, the relay's
    deduplication drops those it had, and every device receives the message exactly once."""
    state = {"armed": False, "sends": 0, "cut": None}

    def tamper(direction, frame):
        if not state["armed"]:
            return frame
        if direction == "up" and frame.get("op") == "send":
            state["sends"] += 1
            # The first two copies reach the relay; the rest are lost on the way.
            return frame if state["sends"] <= 2 else None
        if direction == "down" and frame.get("ok") is True and "server_id" in frame:
            return None  # every acknowledgement of a send is lost
        return frame

    async with relay_behind_shim(tmp_path, tamper) as shim:
        alices = [make_client(shim.url, "alice")]
        bobs = [make_client(shim.url, "bob")]
        for client in alices + bobs:
            await client.start()
            await client.wait_connected(timeout=20)
        for index in (2, 3):
            alices.append(await link_one(alices[0], shim.url, tmp_path / f"alice-{index}.db"))
            bobs.append(await link_one(bobs[0], shim.url, tmp_path / f"bob-{index}.db"))
        try:
            state["armed"] = True
            message_id = await bobs[0].send_all("alice", "five copies")
            for _ in range(1000):
                if state["sends"] >= 5:
                    break
                await asyncio.sleep(0.02)
            assert state["sends"] == 5
            assert len(bobs[0].delivery(message_id).pending) == 5
            # The network fails: every connection through the shim drops; then it behaves.
            state["armed"] = False
            await shim.drop_connections()
            await bobs[0].flush(timeout=15)
            assert bobs[0].delivery(message_id).pending == ()
            for device in alices:
                got = await collect(device)
                assert [(m.message_id, m.text) for m in got] == [(message_id, "five copies")]
            for device in bobs[1:]:
                got = await collect(device)
                assert [(m.message_id, m.to) for m in got] == [(message_id, "alice")]
        finally:
            for client in alices + bobs:
                await client.close()


def test_transcripts_round_trip_and_refuse_garbage():
    assert decode_transcript(encode_transcript("bob", 0, b"hi")) == ("bob", 0, b"hi")
    from client.envelope import with_fallback

    garbage = [b"", b"\x00", with_fallback("", b"\x05bob"), with_fallback("", b"\x03bo\xff\x00")]
    # Another transcript, or a group's sender-key messages, never travel inside a transcript.
    garbage += [encode_transcript("bob", kind, b"x") for kind in (2, 3, 4, 6, 99)]
    for bad in garbage:
        with pytest.raises(DecodeError):
            decode_transcript(bad)


async def test_a_companion_reads_a_group_it_was_linked_into(relay, make_client, tmp_path):
    """Bob's sender key reaches Alice's laptop too: the relay queues the group message for every
    device of every member, and Bob hands his chain to every device on Alice's verified list."""
    from client.events import GroupMessage

    alice = make_client(relay.url, "alice")
    bob = make_client(relay.url, "bob")
    for client in (alice, bob):
        await client.start()
        await client.wait_connected(timeout=20)
    laptop = await link_one(alice, relay.url, tmp_path / "alice-2.db")
    try:
        await bob.send_all("alice", "a first message, so that bob knows alice's devices")
        await bob.flush(timeout=20)
        group = await bob.create_group("friends", ["alice"])
        await bob.send_group(group, "hello group")

        async def group_text(client: Client) -> str:
            while True:
                event = await client.receive(timeout=20)
                if isinstance(event, GroupMessage):
                    return event.text

        assert await asyncio.wait_for(group_text(alice), 30) == "hello group"
        assert await asyncio.wait_for(group_text(laptop), 30) == "hello group"
    finally:
        for client in (alice, bob, laptop):
            await client.close()


async def test_our_own_companion_reads_and_sends_in_our_groups(relay, make_client, tmp_path):
    """Alice's phone hands its sender key to her own laptop too, and the laptop's to the phone:
    every device of the sender's own account shows the whole group conversation."""
    from client.events import GroupMessage

    alice = make_client(relay.url, "alice")
    bob = make_client(relay.url, "bob")
    for client in (alice, bob):
        await client.start()
        await client.wait_connected(timeout=20)
    laptop = await link_one(alice, relay.url, tmp_path / "alice-2.db")
    try:
        await bob.send_all("alice", "a first message, so that bob knows alice's devices")
        await bob.flush(timeout=20)
        group = await alice.create_group("friends", ["bob"])

        async def group_message(client: Client) -> GroupMessage:
            while True:
                event = await client.receive(timeout=20)
                if isinstance(event, GroupMessage):
                    return event

        await alice.send_group(group, "from alice's phone")
        for reader in (bob, laptop):
            event = await asyncio.wait_for(group_message(reader), 30)
            assert (event.sender, event.sender_device, event.text) == ("alice", 1, "from alice's phone")
        await laptop.send_group(group, "from alice's laptop")
        for reader in (alice, bob):
            event = await asyncio.wait_for(group_message(reader), 30)
            assert (event.sender, event.sender_device, event.text) == ("alice", 2, "from alice's laptop")
    finally:
        for client in (alice, bob, laptop):
            await client.close()
