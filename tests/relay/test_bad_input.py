"""Bad input: every malformed or hostile frame gets a typed refusal (or the right close code),
nothing is stored, and the relay goes on serving everyone else."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from client.transport import AUTH_LABEL, RelayError, origin_of, proof_transcript
from tests.relay.conftest import Device, drain


class Raw:
    """A bare WebSocket client that speaks the protocol by hand."""

    def __init__(self, ws, url: str) -> None:
        self.ws = ws
        self.url = url
        self.challenge = b""

    @classmethod
    async def open(cls, url: str, **kwargs) -> Raw:
        raw = cls(await ws_connect(url, compression=None, proxy=None, **kwargs), url)
        hello = json.loads(await raw.ws.recv())
        assert hello["push"] == "challenge"
        raw.challenge = base64.b64decode(hello["challenge"])
        return raw

    async def frame(self, data: str | bytes) -> dict:
        """Send one frame and return the next response (skipping pushes)."""
        await self.ws.send(data)
        return await self.response()

    async def response(self) -> dict:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 5))
            if "push" not in frame:
                return frame

    async def request(self, **fields) -> dict:
        return await self.frame(json.dumps({"v": 1, "id": 1, **fields}))

    async def auth(self, device: Device) -> None:
        transcript = proof_transcript(
            AUTH_LABEL, self.challenge, device.account, device.device_id, origin_of(self.url)
        )
        signature = base64.b64encode(device.identity.sign(transcript, device.rng)).decode()
        response = await self.request(
            op="auth", account=device.account, device_id=device.device_id, signature=signature
        )
        assert response["ok"] is True, response


def refusal(response: dict, code: str) -> dict:
    assert response["ok"] is False, response
    assert response["error"]["code"] == code, response
    assert response["error"]["message"]
    return response["error"]


async def still_serving(relay, rng) -> None:
    """Another pair of devices can still exchange a message."""
    sender, receiver = Device("witness-a", 1, rng), Device("witness-b", 1, rng)
    s = await sender.register(relay.url)
    await (await receiver.register(relay.url)).close()
    await s.send("witness-b", 1, "w", 1, b"still here")
    r = await receiver.connect(relay.url)
    assert [m.body for m in await drain(r)] == [b"still here"]
    await s.close()
    await r.close()


async def queue_of(relay, device: Device) -> list:
    from server.store import DeviceAddress

    return await relay.store.fetch(DeviceAddress(device.account, device.device_id), 0, 100, relay.clock())


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("this is not json", "bad_frame"),
        ('{"v":1,"id":1,"op":"pi', "bad_frame"),
        ("[1, 2, 3]", "bad_frame"),
        ('"just a string"', "bad_frame"),
        ('{"v":1,"id":1,"op":"ping","op":"auth"}', "bad_frame"),
        ('{"v":1,"id":1,"op":"ping","x":NaN}', "bad_frame"),
        (b"\x00\x01binary", "bad_frame"),
        ('{"v":2,"id":1,"op":"ping"}', "unsupported_version"),
        ('{"id":1,"op":"ping"}', "unsupported_version"),
        ('{"v":1,"op":"ping"}', "bad_request"),
        ('{"v":1,"id":true,"op":"ping"}', "bad_request"),
        ('{"v":1,"id":-1,"op":"ping"}', "bad_request"),
        ('{"v":1,"id":1,"op":7}', "bad_request"),
        ('{"v":1,"id":1,"op":"delete_messages"}', "unknown_op"),
        ('{"v":1,"id":1}', "bad_request"),
    ],
)
async def test_malformed_frames_get_typed_refusals(relay, rng, frame, code):
    raw = await Raw.open(relay.url)
    refusal(await raw.frame(frame), code)
    # The connection itself survives one bad frame.
    assert (await raw.request(op="ping"))["ok"] is True
    await raw.ws.close()


async def test_a_refusal_echoes_the_request_id(relay):
    raw = await Raw.open(relay.url)
    response = await raw.frame('{"v":1,"id":"abc","op":"nope"}')
    assert response["id"] == "abc"
    response = await raw.frame("garbage")
    assert response["id"] is None


def send_fields(**overrides):
    fields = {
        "op": "send",
        "to": {"account": "bob", "device_id": 1},
        "client_id": "c1",
        "type": 1,
        "body": base64.b64encode(b"ciphertext").decode(),
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize(
    "overrides",
    [
        {"to": None},
        {"to": "bob"},
        {"to": {"account": "bob"}},
        {"to": {"account": "bob", "device_id": "1"}},
        {"to": {"account": "bob", "device_id": 0}},
        {"to": {"account": "", "device_id": 1}},
        {"to": {"account": "bob\n", "device_id": 1}},
        {"client_id": None},
        {"client_id": 5},
        {"client_id": "x" * 65},
        {"type": "1"},
        {"type": 256},
        {"type": 1.5},
        {"body": None},
        {"body": "not base64!"},
        {"body": "QUJD"[:3]},
        {"body": ["QUJD"]},
    ],
)
async def test_sends_with_wrong_types_store_nothing(relay, rng, overrides):
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    await (await bob.register(relay.url)).close()
    await (await alice.register(relay.url)).close()
    raw = await Raw.open(relay.url)
    await raw.auth(alice)
    refusal(await raw.request(**send_fields(**overrides)), "bad_request")
    assert await queue_of(relay, bob) == []
    assert (await raw.request(**send_fields()))["ok"] is True
    assert len(await queue_of(relay, bob)) == 1


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"server_ids": []}, "bad_request"),
        ({"server_ids": "1"}, "bad_request"),
        ({"server_ids": [True]}, "bad_request"),
        ({"server_ids": ["1"]}, "bad_request"),
        ({"server_ids": [0]}, "bad_request"),
        ({"server_ids": list(range(1, 102))}, "bad_request"),
        ({"server_ids": [424242]}, "unknown_message"),
    ],
)
async def test_bad_acknowledgements(relay, rng, fields, code):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    raw = await Raw.open(relay.url)
    await raw.auth(alice)
    refusal(await raw.request(op="ack", **fields), code)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"signed_pre_key": "x"}, "bad_request"),
        ({"signed_pre_key": {"id": 1}}, "bad_request"),
        ({"signed_pre_key": {"id": 1, "public_key": "AAAA", "signature": "AAAA"}}, "invalid_key"),
        ({"pre_keys": {"id": 1}}, "bad_request"),
        ({"pre_keys": ["x"]}, "bad_request"),
        ({"pre_keys": [{"id": "1", "public_key": "AAAA"}]}, "bad_request"),
        ({"kem_pre_keys": [{"id": 1, "public_key": "AAAA", "signature": "AAAA"}]}, "bad_request"),
        ({"kem_last_resort": [1]}, "bad_request"),
    ],
)
async def test_bad_prekey_uploads_store_nothing(relay, rng, fields, code):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    raw = await Raw.open(relay.url)
    await raw.auth(alice)
    refusal(await raw.request(op="upload_prekeys", **fields), code)
    counts = await raw.request(op="prekey_count")
    assert (counts["pre_keys"], counts["kem_pre_keys"], "signed_pre_key_id" in counts) == (0, 0, False)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"account": "alice", "device_id": 1, "signature": "AAAA"}, "bad_request"),
        ({"account": "alice", "device_id": 1, "signature": 12}, "bad_request"),
        ({"account": "alice", "device_id": 1}, "bad_request"),
        ({"account": "alice", "signature": base64.b64encode(bytes(64)).decode()}, "bad_request"),
        (
            {"account": "alice", "device_id": 1, "signature": base64.b64encode(bytes(64)).decode()},
            "bad_proof",
        ),
    ],
)
async def test_bad_auth_frames(relay, rng, fields, code):
    alice = Device("alice", 1, rng)
    await (await alice.register(relay.url)).close()
    raw = await Raw.open(relay.url)
    refusal(await raw.request(op="auth", **fields), code)


async def test_an_oversized_frame_closes_only_that_connection(relay_factory, rng):
    relay = await relay_factory(max_frame_bytes=4096)
    raw = await Raw.open(relay.url)
    await raw.ws.send("x" * 5000)
    with pytest.raises(ConnectionClosed) as closed:
        await raw.response()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    await still_serving(relay, rng)


async def test_a_connection_that_keeps_misbehaving_is_closed(relay_factory, rng):
    relay = await relay_factory(max_errors=5)
    raw = await Raw.open(relay.url)
    for _ in range(5):
        await raw.ws.send("garbage")
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(10):
            await raw.response()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await still_serving(relay, rng)


async def test_ordinary_refusals_do_not_count_as_misbehaviour(relay_factory, rng):
    relay = await relay_factory(max_errors=3)
    alice = Device("alice", 1, rng)
    connection = await alice.register(relay.url)
    for server_id in range(1, 8):
        with pytest.raises(RelayError) as refused:
            await connection.ack([server_id])
        assert refused.value.code == "unknown_message"
    await connection.ping()
    await connection.close()


async def test_garbage_from_many_connections_leaves_others_served(relay, rng):
    bads = [await Raw.open(relay.url) for _ in range(5)]
    junk = ["{", "\x00", "[]", '{"v":1,"id":1,"op":"send"}', b"\xff" * 100]
    for raw in bads:
        for item in junk:
            await raw.ws.send(item)
    await still_serving(relay, rng)
    for raw in bads:
        await raw.ws.close()


async def test_unknown_fields_are_ignored(relay, rng):
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    await (await bob.register(relay.url)).close()
    await (await alice.register(relay.url)).close()
    raw = await Raw.open(relay.url)
    await raw.auth(alice)
    fields = send_fields(future_field={"nested": [1, 2]}, priority="high")
    fields["to"]["routing_hint"] = "x"
    response = await raw.request(**fields)
    assert response["ok"] is True and response["duplicate"] is False
    assert (await raw.request(op="ping", trace=True))["ok"] is True
    assert len(await queue_of(relay, bob)) == 1
