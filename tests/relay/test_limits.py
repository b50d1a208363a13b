"""Limits: connections per address, slow readers, incoming rate."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from client.transport import AUTH_LABEL, Connection, ConnectionLost, origin_of, proof_transcript
from tests.relay.conftest import Device, drain


async def test_connections_per_address(relay_factory, rng):
    relay = await relay_factory(max_connections_per_address=2)
    first = await Connection.open(relay.url)
    second = await Connection.open(relay.url)
    with pytest.raises(ConnectionLost) as refused:
        third = await Connection.open(relay.url)
        await third.wait_closed()
    assert refused.value.code == 1013
    await first.close()
    # A slot freed is a slot available.
    for _ in range(50):
        try:
            again = await Connection.open(relay.url)
            break
        except ConnectionLost:
            await asyncio.sleep(0.02)
    await again.ping()
    await again.close()
    await second.close()


async def test_a_reader_that_stops_reading_is_disconnected(relay_factory, rng, caplog):
    caplog.set_level(logging.INFO, logger="server.relay")
    relay = await relay_factory(write_timeout=0.5, max_body_bytes=96 * 1024)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(relay.url)
    await (await bob.register(relay.url)).close()
    body = bytes(90 * 1024)
    await asyncio.gather(*(a.send("bob", 1, f"m{i}", 1, body) for i in range(150)))
    # Bob authenticates by hand on a connection that buffers one frame and then stops reading.
    ws = await ws_connect(relay.url, compression=None, proxy=None, max_queue=1, max_size=None)
    challenge = base64.b64decode(json.loads(await ws.recv())["challenge"])
    transcript = proof_transcript(AUTH_LABEL, challenge, "bob", 1, origin_of(relay.url))
    signature = base64.b64encode(bob.identity.sign(transcript, rng)).decode()
    await ws.send(
        json.dumps({"v": 1, "id": 1, "op": "auth", "account": "bob", "device_id": 1, "signature": signature})
    )
    deadline = time.monotonic() + 20
    while "slow_consumer" not in caplog.text and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "slow_consumer conn=" in caplog.text
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    # Nothing was acknowledged, so everything is still queued for a connection that reads.
    b = await bob.connect(relay.url)
    assert [m.client_id for m in await drain(b, timeout=30)] == [f"m{i}" for i in range(150)]
    await a.ping()


async def test_incoming_frames_are_metered(relay_factory, rng):
    relay = await relay_factory(frame_rate=50.0, frame_burst=10)
    connection = await Connection.open(relay.url)
    started = time.monotonic()
    await asyncio.gather(*(connection.ping() for _ in range(40)))
    # Thirty frames beyond the burst at fifty a second cannot be read in less than 0.6 s.
    assert time.monotonic() - started >= 0.55
    await connection.close()


async def test_the_relay_declines_compression(relay):
    ws = await ws_connect(relay.url, compression="deflate", proxy=None)
    assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    assert ws.protocol.extensions == []
    await ws.close()
