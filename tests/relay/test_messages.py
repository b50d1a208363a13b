"""Messages: durable queues, ordered at-least-once delivery, acknowledgements, caps and expiry."""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import pytest

from client.transport import IncomingMessage, QueueEmpty, RelayError
from tests.relay.conftest import Device, collect, drain


async def refused(awaitable, code: str) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value
    return caught.value


async def pair(relay, rng):
    """Alice online, Bob registered and offline."""
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(relay.url)
    await (await bob.register(relay.url)).close()
    return alice, a, bob


def messages_in(pushes):
    return [p for p in pushes if isinstance(p, IncomingMessage)]


async def test_offline_delivery_in_order_then_queue_empty(relay, rng):
    _alice, a, bob = await pair(relay, rng)
    ids = [await a.send("bob", 1, f"m{i}", 1, f"body {i}".encode()) for i in range(5)]
    b = await bob.connect(relay.url)
    pushes = await collect(b, until=lambda ps: isinstance(ps[-1], QueueEmpty))
    assert isinstance(pushes[-1], QueueEmpty)
    got = messages_in(pushes)
    assert [m.server_id for m in got] == ids == sorted(ids)
    assert [m.body for m in got] == [f"body {i}".encode() for i in range(5)]
    assert {(m.sender, m.sender_device, m.type) for m in got} == {("alice", 1, 1)}
    assert [m.client_id for m in got] == [f"m{i}" for i in range(5)]


async def test_reconnect_redelivers_what_was_not_acknowledged(relay, rng):
    _alice, a, bob = await pair(relay, rng)
    for i in range(5):
        await a.send("bob", 1, f"m{i}", 1, bytes([i]))
    b = await bob.connect(relay.url)
    pushes = await collect(b, until=lambda ps: isinstance(ps[-1], QueueEmpty))
    first = messages_in(pushes)
    await b.ack([first[0].server_id, first[2].server_id])
    await b.close()
    b = await bob.connect(relay.url)
    again = await drain(b)
    assert [m.client_id for m in again] == ["m1", "m3", "m4"]
    await b.close()
    b = await bob.connect(relay.url)
    assert await drain(b) == []


async def test_live_messages_are_pushed_each_followed_by_queue_empty(relay, rng):
    _alice, a, bob = await pair(relay, rng)
    b = await bob.connect(relay.url)
    assert await drain(b) == []
    await a.send("bob", 1, "live", 1, b"now")
    pushes = await collect(b, until=lambda ps: isinstance(ps[-1], QueueEmpty))
    assert [m.body for m in messages_in(pushes)] == [b"now"]


async def test_a_thousand_queued_messages(relay, rng):
    _alice, a, bob = await pair(relay, rng)
    sends = [a.send("bob", 1, f"m{i}", 1, i.to_bytes(4, "big") * 8) for i in range(1000)]
    ids = await asyncio.gather(*sends)
    assert ids == sorted(ids) and len(set(ids)) == 1000
    b = await bob.connect(relay.url)
    got = await drain(b, timeout=60)
    assert [m.client_id for m in got] == [f"m{i}" for i in range(1000)]
    assert [m.server_id for m in got] == ids
    await b.close()
    b = await bob.connect(relay.url)
    assert await drain(b) == []


async def test_a_repeated_client_id_is_stored_once(relay, rng):
    _alice, a, bob = await pair(relay, rng)
    first = await a.send_message("bob", 1, "same", 1, b"payload")
    second = await a.send_message("bob", 1, "same", 1, b"payload")
    assert (first.duplicate, second.duplicate) == (False, True)
    assert first.server_id == second.server_id
    b = await bob.connect(relay.url)
    assert [m.server_id for m in await drain(b)] == [first.server_id]
    # Even after the recipient acknowledged it, a retry is recognised and not delivered again.
    third = await a.send_message("bob", 1, "same", 1, b"payload")
    assert (third.server_id, third.duplicate) == (first.server_id, True)
    await b.close()
    b = await bob.connect(relay.url)
    assert await drain(b) == []


async def test_a_client_id_reused_for_other_content_is_refused(relay, rng):
    _alice, a, _bob = await pair(relay, rng)
    await a.send("bob", 1, "id-1", 1, b"one")
    await refused(a.send("bob", 1, "id-1", 1, b"two"), "message_id_reused")
    await refused(a.send("bob", 1, "id-1", 2, b"one"), "message_id_reused")


async def test_the_size_cap(relay_factory, rng):
    relay = await relay_factory(max_body_bytes=1000)
    _alice, a, bob = await pair(relay, rng)
    await refused(a.send("bob", 1, "big", 1, bytes(1001)), "too_large")
    await a.send("bob", 1, "fits", 1, bytes(1000))
    b = await bob.connect(relay.url)
    assert [m.client_id for m in await drain(b)] == ["fits"]


async def test_unknown_recipient(relay, rng):
    _alice, a, _bob = await pair(relay, rng)
    await refused(a.send("nobody", 1, "x", 1, b"x"), "unknown_device")
    await refused(a.send("bob", 2, "x", 1, b"x"), "unknown_device")


async def test_the_queue_caps(relay_factory, rng):
    relay = await relay_factory(max_queue_messages=3, max_queue_bytes=10_000)
    _alice, a, bob = await pair(relay, rng)
    for i in range(3):
        await a.send("bob", 1, f"m{i}", 1, b"x")
    await refused(a.send("bob", 1, "m3", 1, b"x"), "queue_full")
    b = await bob.connect(relay.url)
    pushes = await collect(b, until=lambda ps: isinstance(ps[-1], QueueEmpty))
    await b.ack([messages_in(pushes)[0].server_id])
    await a.send("bob", 1, "m3", 1, b"x")
    await refused(a.send("bob", 1, "m4", 1, b"x"), "queue_full")
    # The byte cap counts ciphertext bytes.
    await b.ack([m.server_id for m in messages_in(pushes)[1:]])
    await refused(a.send("bob", 1, "huge", 1, bytes(10_000)), "queue_full")


async def test_one_device_cannot_acknowledge_anothers_messages(relay, rng):
    _alice, a, bob = await pair(relay, rng)
    mallory = await Device("mallory", 1, rng).register(relay.url)
    victim_id = await a.send("bob", 1, "for-bob", 1, b"secret-ish")
    own_id = await a.send("mallory", 1, "for-mallory", 1, b"hers")
    error = await refused(mallory.ack([victim_id]), "unknown_message")
    assert error.details["server_ids"] == [victim_id]
    # All or nothing: a mixed acknowledgement removes neither.
    await refused(mallory.ack([own_id, victim_id]), "unknown_message")
    own = messages_in(await collect(mallory, until=lambda ps: bool(messages_in(ps))))
    assert [m.server_id for m in own] == [own_id]
    b = await bob.connect(relay.url)
    assert [m.server_id for m in await drain(b)] == [victim_id]
    await mallory.ack([own_id])
    await refused(mallory.ack([own_id]), "unknown_message")


async def test_pushes_pause_at_the_inflight_window(relay_factory, rng):
    relay = await relay_factory(max_inflight=4)
    _alice, a, bob = await pair(relay, rng)
    await asyncio.gather(*(a.send("bob", 1, f"m{i}", 1, b"x") for i in range(10)))
    b = await bob.connect(relay.url)
    window = await collect(b, until=lambda ps: len(ps) == 4)
    assert [m.client_id for m in window] == ["m0", "m1", "m2", "m3"]
    # Nothing more until something is acknowledged.
    with pytest.raises(TimeoutError):
        await collect(b, until=lambda ps: True, timeout=0.3)
    await b.ack([m.server_id for m in window])
    rest = await drain(b)
    assert [m.client_id for m in rest] == [f"m{i}" for i in range(4, 10)]


async def test_expired_messages_are_not_delivered(relay_factory, rng):
    now = [1_000_000.0]
    relay = await relay_factory(clock=lambda: now[0], message_ttl=60.0)
    _alice, a, bob = await pair(relay, rng)
    await a.send("bob", 1, "old", 1, b"old")
    now[0] += 61
    await a.send("bob", 1, "new", 1, b"new")
    b = await bob.connect(relay.url)
    assert [m.client_id for m in await drain(b, ack=False)] == ["new"]
    assert await relay.store.expire(now[0]) == 1
    assert await relay.store.expire(now[0]) == 0


async def test_logs_carry_metadata_but_no_bodies_or_keys(relay, rng, caplog):
    caplog.set_level(logging.INFO, logger="server")
    alice, a, bob = await pair(relay, rng)
    body = b"log-canary-" + os.urandom(16)
    await a.send("bob", 1, "c1", 1, body)
    b = await bob.connect(relay.url)
    await bob.publish(b, one_time=2)
    await a.fetch_bundle("bob", 1)
    await drain(b)
    text = caplog.text
    assert "send" in text and "bob/1" in text and "server_id=" in text
    for secret in (body, alice.identity.public_key.serialize(), bob.identity.public_key.serialize()):
        assert secret.hex() not in text
        assert base64.b64encode(secret).decode() not in text
    assert "log-canary" not in text
