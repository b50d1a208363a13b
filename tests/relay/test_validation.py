"""Values the relay used to accept and must not: keys no Diffie-Hellman can use, empty bodies,
versions that are not the integer 1, and account names that differ from another only by case.

Each refusal is typed, stores nothing, and leaves the connection usable.  Frames go over raw sockets.
"""

from __future__ import annotations

import base64

import pytest

from client.transport import REGISTER_LABEL, origin_of, proof_transcript
from e2e.keys import KeyPair
from tests.relay.conftest import Device, drain
from tests.relay.rawsocket import RawSocket
from tests.relay.test_bad_input import queue_of, refusal

P = 2**255 - 19


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def curve_key(u: int) -> bytes:
    return b"\x05" + u.to_bytes(32, "little")


# Low-order points of Curve25519 (RFC 7748 §6.1 names the all-zero result they produce): 0, 1,
# the two points of order 8, p - 1, and non-canonical encodings of them (p, p + 1); then encodings
# at or above p, and with the top bit set.
ORDER_8 = 325606250916557431795983626356110631294008115727848805560023387167927233504
BAD_KEYS = [
    curve_key(0),
    curve_key(1),
    curve_key(ORDER_8),
    curve_key(39382357235489614581723060781553021112529911719440698176882885853963445705823),
    curve_key(P - 1),
    curve_key(P),
    curve_key(P + 1),
    b"\x05" + bytes(31) + b"\x80",
]


async def authenticated(relay, device: Device) -> RawSocket:
    await (await device.register(relay.url)).close()
    raw = await RawSocket.open(relay.url)
    await raw.auth(device)
    assert (await raw.response())["ok"] is True
    return raw


@pytest.mark.parametrize("bad", BAD_KEYS, ids=lambda k: k[1:].hex()[:12] + "…" + k[-2:].hex())
async def test_a_signed_prekey_no_diffie_hellman_can_use_is_refused(relay, rng, bad):
    alice = Device("alice", 1, rng)
    raw = await authenticated(relay, alice)
    signature = alice.identity.sign(bad, rng)
    await raw.send_json(
        id=1,
        op="upload_prekeys",
        signed_pre_key={"id": 1, "public_key": b64(bad), "signature": b64(signature)},
    )
    refusal(await raw.response(), "invalid_key")
    await raw.send_json(id=2, op="upload_prekeys", pre_keys=[{"id": 5, "public_key": b64(bad)}])
    refusal(await raw.response(), "invalid_key")
    # Nothing was stored, and a good key is still accepted on the same connection.
    await raw.send_json(id=3, op="prekey_count")
    counts = await raw.response()
    assert counts["pre_keys"] == 0 and "signed_pre_key_id" not in counts
    good = KeyPair.generate(rng).public_key.serialize()
    await raw.send_json(
        id=4,
        op="upload_prekeys",
        signed_pre_key={"id": 1, "public_key": b64(good), "signature": b64(alice.identity.sign(good, rng))},
    )
    assert (await raw.response())["ok"] is True
    raw.close()


async def test_an_all_zero_identity_key_is_refused_at_registration(relay, rng):
    raw = await RawSocket.open(relay.url)
    zero = curve_key(0)
    transcript = proof_transcript(REGISTER_LABEL, raw.challenge, "zero", 1, origin_of(relay.url))
    await raw.send_json(
        id=1,
        op="register",
        account="zero",
        device_id=1,
        identity_key=b64(zero),
        registration_id=1,
        signature=b64(KeyPair.generate(rng).sign(transcript, rng)),
    )
    refusal(await raw.response(), "invalid_key")
    raw.close()


async def test_an_empty_message_body_is_refused(relay, rng):
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    raw = await authenticated(relay, alice)
    await (await bob.register(relay.url)).close()
    await raw.send_json(
        id=1, op="send", to={"account": "bob", "device_id": 1}, client_id="e", type=1, body=""
    )
    error = refusal(await raw.response(), "bad_request")
    assert "empty" in error["message"]
    assert await queue_of(relay, bob) == []
    await raw.send_json(id=2, op="ping")
    assert (await raw.response())["ok"] is True
    raw.close()


@pytest.mark.parametrize("version", ["1.0", "true", "1e0", '"1"'])
async def test_a_version_that_is_not_the_integer_1_is_refused(relay, version):
    raw = await RawSocket.open(relay.url)
    await raw.send_frames([f'{{"v":{version},"id":1,"op":"ping"}}', '{"v":1,"id":2,"op":"ping"}'])
    refusal(await raw.response(), "unsupported_version")
    assert (await raw.response())["id"] == 2
    raw.close()


async def test_account_names_that_differ_by_case_are_not_separate_accounts(relay, rng):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    # A look-alike "Alice" with another identity key cannot be registered beside "alice".
    impostor = Device("Alice", 1, rng)
    raw = await RawSocket.open(relay.url)
    transcript = proof_transcript(REGISTER_LABEL, raw.challenge, "Alice", 1, origin_of(relay.url))
    await raw.send_json(
        id=1,
        op="register",
        account="Alice",
        device_id=1,
        identity_key=b64(impostor.identity.public_key.serialize()),
        registration_id=1,
        signature=b64(impostor.identity.sign(transcript, rng)),
    )
    error = refusal(await raw.response(), "bad_request")
    assert "lowercase" in error["message"] and "'alice'" in error["message"]
    raw.close()
    # Nor can anyone address one: a send or a bundle fetch naming "ALICE" is refused, not routed.
    bob = Device("bob", 1, rng)
    raw = await authenticated(relay, bob)
    await raw.send_json(
        id=2, op="send", to={"account": "ALICE", "device_id": 1}, client_id="x", type=1, body=b64(b"c")
    )
    refusal(await raw.response(), "bad_request")
    await raw.send_json(id=3, op="get_bundle", account="Alice")
    refusal(await raw.response(), "bad_request")
    raw.close()
    # The real alice was not touched: nothing was queued for her.
    a = await alice.connect(relay.url)
    assert await drain(a) == []
    await a.close()


async def test_an_account_cannot_register_more_devices_than_the_cap(relay_factory, rng):
    # Devices bound a bundle fetch's answer (one bundle per device): without a cap, one account
    # could make every get_bundle for it an answer of any size.
    relay = await relay_factory(max_devices_per_account=3)
    first = Device("many", 1, rng)
    for device_id in (1, 2, 3):
        device = Device("many", device_id, rng)
        device.identity = first.identity
        await (await device.register(relay.url)).close()
    fourth = Device("many", 4, rng)
    fourth.identity = first.identity
    raw = await RawSocket.open(relay.url)
    transcript = proof_transcript(REGISTER_LABEL, raw.challenge, "many", 4, origin_of(relay.url))
    await raw.send_json(
        id=1,
        op="register",
        account="many",
        device_id=4,
        identity_key=b64(first.identity.public_key.serialize()),
        registration_id=1,
        signature=b64(first.identity.sign(transcript, rng)),
    )
    error = refusal(await raw.response(), "too_many_devices")
    assert "3 devices" in error["message"]
    raw.close()
    # An existing device registers again (a reinstall under the same id) without counting twice.
    again = Device("many", 2, rng)
    again.identity = first.identity
    await (await again.register(relay.url)).close()
    # Nothing was created for device 4.
    from server.store import DeviceAddress, UnknownDeviceError

    with pytest.raises(UnknownDeviceError):
        await relay.store.identity_key(DeviceAddress("many", 4))
