"""A relay in the middle of linking and of device lists (tests/relay/hostile.py between the clients
and a real relay): every swap, alteration, replay or rollback it tries is detected by the clients."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from client import transport
from client.devices import DeviceListBook, fetch_device_list, link_device, unlink_device, wait_for_link
from client.transport import Connection
from e2e.devices import DeviceList, DeviceListRollbackError, sign_device_list
from e2e.errors import InvalidSignatureError
from e2e.keys import KeyPair
from e2e.linking import LinkingTamperedError, LinkOffer
from tests.relay.conftest import Device, link
from tests.relay.hostile import HostileShim


async def shim_for(relay, tamper) -> HostileShim:
    shim = HostileShim(relay.url, tamper)
    await shim.start()
    return shim


async def online_via(shim: HostileShim, relay, device: Device, *, register: bool = True) -> Connection:
    return await transport.connect(
        shim.url,
        account=device.account,
        device_id=device.device_id,
        identity_key=device.identity,
        registration_id=device.registration_id,
        register=register,
        rng=device.rng,
        origin=relay.url,
    )


def flip_payload(direction: str, frame: dict[str, Any]) -> dict[str, Any]:
    if direction == "down" and "payload" in frame:
        raw = bytearray(base64.b64decode(frame["payload"]))
        raw[len(raw) // 2] ^= 0x01
        frame["payload"] = base64.b64encode(bytes(raw)).decode()
    return frame


@pytest.mark.parametrize("where", ["fetch", "offer"])
async def test_an_altered_linking_payload_is_detected(relay, rng, where):
    def tamper(direction: str, frame: dict[str, Any]) -> dict[str, Any]:
        if where == "offer" and direction == "up" and frame.get("op") == "link_offer":
            raw = bytearray(base64.b64decode(frame["payload"]))
            raw[-1] ^= 0x80
            frame["payload"] = base64.b64encode(bytes(raw)).decode()
            return frame
        return flip_payload(direction, frame) if where == "fetch" else frame

    shim = await shim_for(relay, tamper)
    alice = Device("alice", 1, rng)
    a1 = await online_via(shim, relay, alice)
    laptop = KeyPair.generate(rng)
    offer = LinkOffer.generate(laptop.public_key, rng)
    waiting = asyncio.ensure_future(
        wait_for_link(shim.url, offer, timeout=20, poll_interval=0.05, origin=relay.url)
    )
    await link_device(a1, alice.identity, offer, rng=rng)
    with pytest.raises(LinkingTamperedError):
        await waiting
    await a1.close()
    await shim.close()


async def test_a_payload_swapped_for_another_links_is_detected(relay, rng):
    """The relay keeps the payload of an earlier link and hands it to the next companion."""
    recorded: list[str] = []
    swapping = {"on": False}

    def tamper(direction: str, frame: dict[str, Any]) -> dict[str, Any]:
        if direction == "down" and "payload" in frame:
            if swapping["on"] and recorded:
                frame["payload"] = recorded[0]
            else:
                recorded.append(frame["payload"])
        return frame

    shim = await shim_for(relay, tamper)
    alice = Device("alice", 1, rng)
    a1 = await online_via(shim, relay, alice)
    first = LinkOffer.generate(KeyPair.generate(rng).public_key, rng)
    await link_device(a1, alice.identity, first, rng=rng)
    await wait_for_link(shim.url, first, timeout=20, poll_interval=0.05, origin=relay.url)
    swapping["on"] = True
    second = LinkOffer.generate(KeyPair.generate(rng).public_key, rng)
    await link_device(a1, alice.identity, second, rng=rng)
    with pytest.raises(LinkingTamperedError):
        await wait_for_link(shim.url, second, timeout=20, poll_interval=0.05, origin=relay.url)
    await a1.close()
    await shim.close()


async def test_a_rolled_back_or_forged_device_list_is_refused(relay, rng):
    """Bob sees Alice's lists through a relay that replays an old one, then one signed by Mallory."""
    recorded: dict[int, str] = {}
    serve: dict[str, str | None] = {"list": None}

    def tamper(direction: str, frame: dict[str, Any]) -> dict[str, Any]:
        if direction == "down" and "device_list" in frame:
            recorded.setdefault(int(frame["version"]), frame["device_list"])
            if serve["list"] is not None:
                frame["device_list"] = serve["list"]
        return frame

    shim = await shim_for(relay, tamper)
    alice = Device("alice", 1, rng)
    a1 = await alice.register(relay.url)
    laptop = Device("alice", 0, rng)
    a2 = await link(relay.url, a1, alice, laptop)
    bob = Device("bob", 1, rng)
    b1 = await online_via(shim, relay, bob)
    book = DeviceListBook()
    seen = book.check("alice", alice.identity.public_key, await fetch_device_list(b1, "alice"))
    assert seen.device_ids == (1, 2)
    await unlink_device(a1, alice.identity, 2, rng=rng)
    await asyncio.wait_for(a2.wait_closed(), 10)
    newer = book.check("alice", alice.identity.public_key, await fetch_device_list(b1, "alice"))
    assert newer.device_ids == (1,) and newer.version == 3
    # The relay replays version 2 (the laptop still listed): refused, the book keeps version 3.
    serve["list"] = recorded[2]
    with pytest.raises(DeviceListRollbackError):
        book.check("alice", alice.identity.public_key, await fetch_device_list(b1, "alice"))
    assert book.seen("alice") == newer
    # A list that adds Mallory's device, signed by Mallory: refused.
    mallory = KeyPair.generate(rng)
    forged = DeviceList.of("alice", 9, 0, [(1, alice.identity.public_key), (5, mallory.public_key)])
    serve["list"] = base64.b64encode(sign_device_list_unchecked(mallory, forged, rng)).decode()
    with pytest.raises(InvalidSignatureError):
        book.check("alice", alice.identity.public_key, await fetch_device_list(b1, "alice"))
    # The relay withholds the list entirely: also a rollback once one was seen.
    with pytest.raises(DeviceListRollbackError):
        book.check("alice", alice.identity.public_key, None)
    assert book.seen("alice") == newer
    await a1.close()
    await b1.close()
    await shim.close()


def sign_device_list_unchecked(signer: KeyPair, device_list: DeviceList, rng) -> bytes:
    """A list signed by a key that is not the one it lists as primary (what a forger would send)."""
    from e2e.devices import DEVICE_LIST_PREFIX, SignedDeviceList

    list_bytes = device_list.encode()
    signature = signer.sign(DEVICE_LIST_PREFIX + list_bytes, rng)
    return SignedDeviceList(list_bytes, signature).encode()


def test_sign_device_list_refuses_a_list_naming_another_primary(rng):
    mallory = KeyPair.generate(rng)
    other = KeyPair.generate(rng)
    with pytest.raises(Exception, match="identity key it lists"):
        sign_device_list(mallory.private_key, DeviceList.of("alice", 1, 0, [(1, other.public_key)]), rng)
