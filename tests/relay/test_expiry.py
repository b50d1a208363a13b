"""Expired messages are gone for their recipient at once, whatever the sweep interval.

The relay under test sweeps once an hour (``TEST_LIMITS.sweep_interval``), so nothing here is the
sweep's doing: an expired message is not pushed, does not count against the queue's caps, and cannot
be acknowledged, from the moment it expires.  Time is the relay's own clock, moved by the test.
"""

from __future__ import annotations

import pytest

from client.transport import RelayError
from tests.relay.conftest import TEST_LIMITS, Device, drain

TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def refused(awaitable, code: str) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await awaitable
    assert caught.value.code == code, caught.value
    return caught.value


async def test_expired_messages_do_not_count_against_the_queue_cap(relay_factory, rng):
    assert TEST_LIMITS.sweep_interval >= 3600
    clock = Clock()
    relay = await relay_factory(clock=clock, message_ttl=TTL, max_queue_messages=3)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(relay.url)
    await (await bob.register(relay.url)).close()
    for i in range(3):
        await a.send("bob", 1, f"old{i}", 1, b"expires")
    await refused(a.send("bob", 1, "too-many", 1, b"refused"), "queue_full")
    clock.now += TTL + 1
    # The three are expired: the queue is empty as far as the cap is concerned.
    for i in range(3):
        await a.send("bob", 1, f"new{i}", 1, b"fresh")
    await refused(a.send("bob", 1, "too-many-again", 1, b"refused"), "queue_full")
    b = await bob.connect(relay.url)
    assert [m.client_id for m in await drain(b)] == ["new0", "new1", "new2"]
    await b.close()
    await a.close()


async def test_expired_messages_do_not_count_against_the_byte_cap(relay_factory, rng):
    clock = Clock()
    relay = await relay_factory(clock=clock, message_ttl=TTL, max_queue_bytes=3000)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(relay.url)
    await (await bob.register(relay.url)).close()
    await a.send("bob", 1, "big", 1, bytes(2500))
    await refused(a.send("bob", 1, "second", 1, bytes(1000)), "queue_full")
    clock.now += TTL + 1
    await a.send("bob", 1, "second", 1, bytes(1000))
    b = await bob.connect(relay.url)
    assert [m.client_id for m in await drain(b)] == ["second"]
    await b.close()
    await a.close()


async def test_an_expired_message_cannot_be_acknowledged(relay_factory, rng):
    clock = Clock()
    relay = await relay_factory(clock=clock, message_ttl=TTL)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(relay.url)
    await (await bob.register(relay.url)).close()
    await a.send("bob", 1, "soon-gone", 1, b"x")
    await a.send("bob", 1, "later", 1, b"y")
    b = await bob.connect(relay.url)
    pushed = await drain(b, ack=False)
    assert [m.client_id for m in pushed] == ["soon-gone", "later"]
    clock.now += TTL + 1
    await a.send("bob", 1, "fresh", 1, b"z")
    error = await refused(b.ack([pushed[0].server_id]), "unknown_message")
    assert error.details["server_ids"] == [pushed[0].server_id]
    # All or nothing: a live id beside an expired one is not acknowledged either.
    fresh = await drain(b, ack=False)
    assert [m.client_id for m in fresh] == ["fresh"]
    error = await refused(b.ack([fresh[0].server_id, pushed[1].server_id]), "unknown_message")
    assert error.details["server_ids"] == [pushed[1].server_id]
    assert await b.ack([fresh[0].server_id]) == 1
    await b.close()
    await a.close()
