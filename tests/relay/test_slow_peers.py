"""Peers that read slowly, not at all, or write in bursts, on raw sockets against a real relay.

* A reader whose receive window is closed is cut off at the transport after ``write_timeout``
  without progress: its connection ends, and every message it was pushed is still queued.
* The write timeout counts time *without progress*: a reader that drains steadily but slowly is
  served to the end however long the whole backlog takes.
* A burst of requests in one TCP write is answered in full: the relay stops reading while its
  answers wait to be written (backpressure), instead of closing the connection as a slow consumer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from tests.relay.conftest import Device, drain
from tests.relay.rawsocket import TCP_ESTABLISHED, RawSocket

BODY = bytes(90 * 1024)


async def queue_for_bob(relay, rng, count: int, body: bytes = BODY) -> tuple[Device, object]:
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(relay.url)
    await (await bob.register(relay.url)).close()
    await asyncio.gather(*(a.send("bob", 1, f"m{i}", 1, body) for i in range(count)))
    return bob, a


async def wait_for_log(caplog, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while text not in caplog.text:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_a_stalled_reader_is_aborted_and_its_messages_stay_queued(relay_factory, rng, caplog):
    caplog.set_level(logging.INFO, logger="server.relay")
    relay = await relay_factory(write_timeout=0.5)
    bob, a = await queue_for_bob(relay, rng, 150)
    # A receive buffer of a few kilobytes that is never read: the relay's writes stall at once and
    # stay stalled, and its close frame can never be written either.
    stalled = await RawSocket.open(relay.url, receive_buffer=4096)
    await stalled.auth(bob)
    assert await wait_for_log(caplog, "slow_consumer conn=3 ", 10)
    # The connection must end within a bounded time: the write timeout plus the watchdog's tick,
    # not whenever the peer chooses to read.
    assert await wait_for_log(caplog, "disconnected conn=3 ", 5), caplog.text[-2000:]
    assert relay._per_address == {"127.0.0.1": 1}  # alice's connection only
    # The relay let go of the TCP connection itself (a reset), not only of its handler: the stalled
    # socket, which has read nothing, is no longer established.
    assert stalled.tcp_state() != TCP_ESTABLISHED
    assert await stalled.closed_by_peer(timeout=5)
    stalled.close()
    # Nothing was acknowledged, so everything is still queued for a connection that reads.
    b = await bob.connect(relay.url)
    assert [m.client_id for m in await drain(b, timeout=30)] == [f"m{i}" for i in range(150)]
    await a.ping()
    await b.close()
    await a.close()


async def test_a_slow_but_steady_reader_is_not_cut(relay_factory, rng, caplog):
    caplog.set_level(logging.INFO, logger="server.relay")
    # About 7 MB of frames at about 2 MB/s: beyond what the kernel's send buffer absorbs, the
    # backlog takes seconds to write, many times the write timeout, while every fraction of a
    # second some of it is read.
    relay = await relay_factory(write_timeout=0.5)
    bob, a = await queue_for_bob(relay, rng, 60)
    reader = await RawSocket.open(relay.url, receive_buffer=32768)
    reader.read_size = 32768
    reader.read_pause = 0.016
    await reader.auth(bob)
    started = time.monotonic()
    received = []
    while True:
        frame = await reader.recv_json(timeout=10)
        if frame.get("push") == "message":
            received.append(frame["client_id"])
        elif frame.get("push") == "queue_empty":
            break
    assert time.monotonic() - started > 1.0
    assert received == [f"m{i}" for i in range(60)]
    assert "slow_consumer" not in caplog.text
    # Still open and answering.
    await reader.send_json(id="still-there", op="ping")
    assert (await reader.response())["id"] == "still-there"
    reader.close()
    await a.close()


async def test_a_burst_of_pings_in_one_write_is_answered_in_full(relay, caplog):
    caplog.set_level(logging.INFO, logger="server.relay")
    raw = await RawSocket.open(relay.url)
    count = 600
    await raw.send_frames([json.dumps({"v": 1, "id": i, "op": "ping"}) for i in range(count)])
    answered = [(await raw.response())["id"] for _ in range(count)]
    assert sorted(answered) == list(range(count))
    assert "slow_consumer" not in caplog.text
    raw.close()


async def test_a_burst_beyond_the_frame_burst_is_metered_not_closed(relay_factory):
    # The documented rate limit still holds under backpressure: frames beyond the burst are read
    # later, and all of them are answered.
    relay = await relay_factory(frame_rate=2000.0, frame_burst=500)
    raw = await RawSocket.open(relay.url)
    count = 1500
    started = time.monotonic()
    await raw.send_frames([json.dumps({"v": 1, "id": i, "op": "ping"}) for i in range(count)])
    answered = [(await raw.response())["id"] for _ in range(count)]
    assert sorted(answered) == list(range(count))
    # A thousand frames beyond the burst at two thousand a second cannot be read in under 0.5 s.
    assert time.monotonic() - started >= 0.45
    raw.close()


async def test_a_burst_while_messages_are_pushed_is_answered_in_full(relay_factory, rng):
    # Pushes and answers share the outgoing queue: a reader that asks for much while its backlog is
    # pushed gets both, in full.
    relay = await relay_factory()
    bob, a = await queue_for_bob(relay, rng, 300, body=b"x" * 200)
    raw = await RawSocket.open(relay.url)
    await raw.auth(bob, request_id="auth")
    count = 700
    await raw.send_frames([json.dumps({"v": 1, "id": i, "op": "ping"}) for i in range(count)])
    answered, pushed = set(), []
    while len(answered) < count + 1 or len(pushed) < 256:
        frame = await raw.recv_json()
        if frame.get("push") == "message":
            pushed.append(frame["server_id"])
        elif "push" not in frame:
            assert frame["ok"] is True, frame
            answered.add(frame["id"])
    # The in-flight window (256 unacknowledged) is full; acknowledging makes room for the rest.
    await raw.send_json(id="ack", op="ack", server_ids=pushed[:100])
    while len(pushed) < 300:
        frame = await raw.recv_json()
        if frame.get("push") == "message":
            pushed.append(frame["server_id"])
    assert len(set(pushed)) == 300
    raw.close()
    await a.close()


async def test_a_relay_process_resets_a_stalled_reader_and_answers_a_burst(relay_process, rng):
    # The same attacks against `python -m server` as an operator runs it.
    relay = relay_process("--write-timeout", "0.5")
    url = await asyncio.to_thread(relay.start)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    a = await alice.register(url)
    await (await bob.register(url)).close()
    await asyncio.gather(*(a.send("bob", 1, f"m{i}", 1, BODY) for i in range(100)))
    stalled = await RawSocket.open(url, receive_buffer=4096)
    await stalled.auth(bob)
    deadline = time.monotonic() + 10
    while stalled.tcp_state() == TCP_ESTABLISHED and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert stalled.tcp_state() != TCP_ESTABLISHED, "the relay process did not drop the stalled reader"
    stalled.close()
    assert "slow_consumer" in relay.log_text()
    burst = await RawSocket.open(url)
    await burst.send_frames([json.dumps({"v": 1, "id": i, "op": "ping"}) for i in range(600)])
    assert sorted([(await burst.response())["id"] for _ in range(600)]) == list(range(600))
    burst.close()
    b = await bob.connect(url)
    assert [m.client_id for m in await drain(b, timeout=30)] == [f"m{i}" for i in range(100)]
    await b.close()
    await a.close()
    assert await asyncio.to_thread(relay.terminate) == 0
    assert "Traceback" not in relay.log_text()
