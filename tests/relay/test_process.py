"""The relay as a process: SIGKILL at random points loses no acknowledged message; SIGTERM is clean."""

from __future__ import annotations

import asyncio
import random

from client.transport import ConnectionLost, QueueEmpty
from tests.relay.conftest import Device, collect, drain

TOTAL = 300
WINDOW = 32
KILLS = 3


def body_of(i: int) -> bytes:
    return f"ciphertext #{i}".encode() * 3


async def stream(connection, numbers: list[int], acked: dict[str, int], duplicates: list[str]) -> None:
    """Send ``numbers`` in order with up to WINDOW awaiting the relay; record what it acknowledged."""
    window = asyncio.Semaphore(WINDOW)

    async def one(i: int, sent) -> None:
        try:
            result = await sent
        except ConnectionLost:
            return
        finally:
            window.release()
        client_id = f"m{i}"
        if result.duplicate:
            duplicates.append(client_id)
            assert acked.get(client_id, result.server_id) == result.server_id
        acked[client_id] = result.server_id

    tasks = []
    for i in numbers:
        await window.acquire()
        sent = connection.send_message("bob", 1, f"m{i}", 1, body_of(i))
        tasks.append(asyncio.create_task(one(i, sent)))
    await asyncio.gather(*tasks)


async def test_sigkill_at_random_points_loses_no_acknowledged_message(relay_process, rng):
    chooser = random.Random(20261125)
    relay = relay_process()
    url = await asyncio.to_thread(relay.start)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    await (await bob.register(url)).close()
    a = await alice.register(url)
    acked: dict[str, int] = {}
    duplicates: list[str] = []
    # Kill points: after a random number of acknowledgements, so every kill lands mid-stream with
    # sends in flight (some committed but not yet acknowledged, some not yet committed).
    kill_points = sorted(chooser.sample(range(10, TOTAL - 10), KILLS))
    for round_number in range(KILLS + 1):
        # The sender resends everything the relay has not acknowledged, under the same ids.
        todo = [i for i in range(TOTAL) if f"m{i}" not in acked]
        sending = asyncio.create_task(stream(a, todo, acked, duplicates))
        if round_number < KILLS:
            while len(acked) < kill_points[round_number]:
                await asyncio.sleep(0.0005)
            relay.kill()
            await sending
            assert len(acked) < TOTAL
            await a.close()
            url = await asyncio.to_thread(relay.start)
            a = await alice.connect(url)
        else:
            await sending
    assert len(acked) == TOTAL
    b = await bob.connect(url)
    received = await drain(b, timeout=60)
    # At least once: every acknowledged message arrives, under the id the sender was given.
    by_client_id = {}
    for message in received:
        by_client_id.setdefault(message.client_id, message)
    assert set(by_client_id) == set(acked)
    for client_id, message in by_client_id.items():
        assert message.server_id == acked[client_id]
        assert message.body == body_of(int(client_id[1:]))
    # Exactly once after removing duplicates by id, and in the order sent.
    assert list(by_client_id) == [f"m{i}" for i in range(TOTAL)]
    await b.close()
    await a.close()
    assert await asyncio.to_thread(relay.terminate) == 0


async def test_sigterm_closes_connections_and_exits_cleanly(relay_process, rng):
    relay = relay_process()
    url = await asyncio.to_thread(relay.start)
    alice, bob = Device("alice", 1, rng), Device("bob", 1, rng)
    await (await bob.register(url)).close()
    a = await alice.register(url)
    await a.send("bob", 1, "before", 1, b"kept")
    assert await asyncio.to_thread(relay.terminate) == 0
    lost = await asyncio.wait_for(a.wait_closed(), 10)
    assert lost.code == 1001
    log = relay.log_text()
    assert "stopped" in log
    assert "Traceback" not in log
    # The committed message is there after a restart.
    url = await asyncio.to_thread(relay.start)
    b = await bob.connect(url)
    pushes = await collect(b, until=lambda ps: isinstance(ps[-1], QueueEmpty))
    assert [p.body for p in pushes if not isinstance(p, QueueEmpty)] == [b"kept"]
    await b.close()
    assert await asyncio.to_thread(relay.terminate) == 0
