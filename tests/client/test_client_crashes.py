"""Crash safety with real processes: a client or the relay killed with SIGKILL at the worst moment.

* The receiving client is killed right after its local commit and before it acknowledges the
  message to the relay: after a restart nothing is lost, nothing is shown twice, and the ratchet
  is in step (both sides keep talking).
* The sending client is killed right after an outgoing message is committed to its outbox and
  before the frame is written: after a restart the outbox is sent, and the recipient gets every
  message exactly once.
* The relay is killed with SIGKILL in the middle of a stream and restarted on the same database:
  every message is delivered exactly once, in order, at the application level.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from client import Message
from client.store import Store

pytest_plugins = ["client_fixtures"]

CHILD = Path(__file__).with_name("child_client.py")


def run_child(*arguments: str) -> tuple[int, list[str]]:
    """Run child_client.py to its death; returns its exit status and its output lines."""
    result = subprocess.run(
        [sys.executable, str(CHILD), *arguments], capture_output=True, timeout=60, check=False
    )
    return result.returncode, result.stdout.decode().splitlines()


async def registered(make_client, url: str, name: str) -> None:
    """Create ``name``'s device and let it register and publish its prekeys, then close it."""
    async with make_client(url, name) as client:
        await client.wait_connected(timeout=10)


@pytest.mark.parametrize("arrival", ["backlog", "live"])
async def test_receiver_killed_between_commit_and_ack_loses_nothing(relay, make_client, tmp_path, arrival):
    """``backlog``: ten messages wait on the relay and arrive together (one batch, one commit).
    ``live``: the receiver is online and they arrive one by one, so the kill at the fourth commit
    leaves the later ones undelivered."""
    await registered(make_client, relay.url, "bob")
    arguments = [sys.executable, str(CHILD), "receive", str(tmp_path / "bob.db"), relay.url, "4"]
    sent = []
    async with make_client(relay.url, "alice") as alice:
        if arrival == "backlog":
            sent = [await alice.send("bob", f"message {i}") for i in range(10)]
            await alice.flush(timeout=10)
        child = await asyncio.create_subprocess_exec(*arguments, stdout=asyncio.subprocess.PIPE)
        if arrival == "live":
            assert await asyncio.wait_for(child.stdout.readline(), 30) == b"ready\n"
            for i in range(10):
                sent.append(await alice.send("bob", f"message {i}"))
                await alice.flush(timeout=10)
                await asyncio.sleep(0.05)
        await alice.flush(timeout=10)
        output, _ = await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == -signal.SIGKILL
    # The fourth message was committed (with any that arrived in the same batch), then the process
    # died before acknowledging or showing it; the application may not have been scheduled to
    # print the earlier ones either.
    lines = [line for line in output.decode().splitlines() if line != "ready"]
    assert len(lines) <= 3
    assert lines == [f"received {message_id}" for message_id in sent[: len(lines)]]
    store = Store(tmp_path / "bob.db")
    committed = [m.message_id for m in store.history("alice")]
    store.close()
    assert len(committed) >= 4 and committed == sent[: len(committed)]
    if arrival == "live":
        assert len(committed) < 10

    bob = make_client(relay.url, "bob")
    async with bob:
        # The relay delivers everything again: what was committed is acknowledged without being
        # shown twice, the rest is decrypted now.
        rest = [await bob.receive(timeout=10) for _ in sent[len(committed) :]]
        await bob.wait_drained(timeout=10)
        assert [m.message_id for m in rest] == sent[len(committed) :]
        assert [m.message_id for m in bob.history("alice")] == sent
        # The ratchets are in step: a reply decrypts, and so does the answer to it.
        await bob.send("alice", "all ten arrived")
        async with make_client(relay.url, "alice") as alice:
            assert (await alice.receive(timeout=10)).text == "all ten arrived"
            await alice.send("bob", "good")
            assert (await bob.receive(timeout=10)).text == "good"
        assert bob.quarantined() == []


async def test_sender_killed_after_committing_to_the_outbox_sends_once(relay, make_client, tmp_path):
    await registered(make_client, relay.url, "bob")
    await registered(make_client, relay.url, "alice")

    status, lines = await asyncio.to_thread(
        run_child, "send", str(tmp_path / "alice.db"), relay.url, "bob", "5"
    )
    assert status == -signal.SIGKILL
    assert len(lines) == 4  # The fifth was committed, not returned, not written.
    store = Store(tmp_path / "alice.db")
    outbox = [entry.message_id for entry in store.outbox()]
    history = [m.message_id for m in store.history("bob")]
    store.close()
    assert len(history) == 5 and outbox[-1] == history[-1]

    bob = make_client(relay.url, "bob")
    async with bob, make_client(relay.url, "alice") as alice:
        await alice.flush(timeout=10)
        received = [await bob.receive(timeout=10) for _ in history]
        await bob.wait_drained(timeout=10)
        assert [m.message_id for m in received] == history
        assert [m.text for m in received] == [f"message {i}" for i in range(5)]
        assert bob.store.outbox_size() == 0 and alice.store.outbox_size() == 0


async def test_relay_killed_mid_stream_delivers_every_message_exactly_once(relay_process, make_client):
    relay = relay_process()
    relay.start()
    count = 300
    chooser = random.Random(20261125)
    kill_points = sorted(chooser.sample(range(20, count - 20), 2))
    bob = make_client(relay.url, "bob")
    alice = make_client(relay.url, "alice")
    async with alice, bob:
        await bob.wait_connected(timeout=20)
        received: list[Message] = []

        async def receive_all() -> None:
            while len(received) < count:
                event = await bob.receive(timeout=60)
                assert isinstance(event, Message)
                received.append(event)

        receiver = asyncio.create_task(receive_all())
        sent = []
        progress: list[tuple[int, int]] = []
        for number in range(count):
            sent.append(await alice.send("bob", f"stream {number}"))
            if kill_points and number == kill_points[0]:
                kill_points.pop(0)
                progress.append((len(received), alice.store.outbox_size()))
                relay.kill()
                await asyncio.sleep(chooser.uniform(0, 0.3))
                await asyncio.to_thread(relay.start)
            else:
                await asyncio.sleep(0.002)  # A stream over time, interleaved with deliveries.
        await alice.flush(timeout=60)
        await asyncio.wait_for(receiver, 60)
        assert [m.message_id for m in received] == sent
        assert [m.text for m in received] == [f"stream {i}" for i in range(count)]
        # Both kills came in the middle: Bob had some messages and not all, Alice's outbox was not empty.
        assert all(0 < delivered < count and pending > 0 for delivered, pending in progress), progress
        # Both kills cut live connections (a client counts each connection it established).
        assert alice.connections == bob.connections == 3
        assert len(bob.history("alice")) == count


async def test_group_receiver_killed_between_commit_and_ack_loses_nothing(relay, make_client, tmp_path):
    """A new group member's backlog (the membership change, alice's sender key, ten group messages)
    is committed and the process is killed before it acknowledges, and before it could fetch the
    group's chain: after a restart nothing is lost, nothing is shown twice, and alice's sender
    chain is in step."""
    from client.events import GroupMessage
    from client.group_store import GroupStore

    await registered(make_client, relay.url, "bob")
    async with make_client(relay.url, "alice") as alice:
        group = await alice.create_group("g", ["bob"])
        sent = [await alice.send_group(group, f"group message {i}") for i in range(10)]
        await alice.flush_groups(timeout=10)
        await alice.flush(timeout=10)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        "receive-group",
        str(tmp_path / "bob.db"),
        relay.url,
        "6",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -signal.SIGKILL, errors.decode()[-2000:]
    lines = output.decode().splitlines()
    # Bob's client had not verified the group yet when it was killed (that needs the chain from
    # the relay): what it committed is the need to fetch it, alice's sender key and the group
    # messages, held, with their ids processed.
    assert lines == []
    store = Store(tmp_path / "bob.db")
    groups = GroupStore(store)
    held = [entry.client_id for entry in groups.pending(group)]
    assert groups.sync_needed(group) and len(groups.pending_keys(group)) == 1
    assert groups.history(group) == [] and len(held) >= 4 and held == sent[: len(held)]
    store.close()

    bob = make_client(relay.url, "bob")
    async with bob:
        # The relay delivers the batch again (its ids are processed: acknowledged only) and the
        # rest; the client fetches and verifies the chain, files alice's key, and decrypts the
        # held messages: every one exactly once.
        got = []
        while len(got) < len(sent):
            event = await bob.receive(timeout=10)
            if isinstance(event, GroupMessage):
                got.append(event.message_id)
        await bob.wait_drained(timeout=10)
        assert sorted(got) == sorted(sent)
        assert sorted(entry.message_id for entry in bob.group_history(group)) == sorted(sent)
        async with make_client(relay.url, "alice") as alice:
            after = await alice.send_group(group, "still in step")
            event = await bob.receive(timeout=10)
            while not isinstance(event, GroupMessage):
                event = await bob.receive(timeout=10)
            assert (event.message_id, event.text) == (after, "still in step")
        assert bob.group_pending(group) == [] and bob.group_refusals() == []
