"""Relay benchmark: deliveries per second to a group, one ``group_send`` against pairwise ``send``s.

Run ``make bench-groups`` (or ``python benchmarks/group_fanout.py``).  One run prints one table.

What it measures
----------------
One sender and ``--members`` receivers (100 by default, each its own connection and account) on one
relay process (``python -m server``, SQLite in WAL mode with ``synchronous=FULL``, every write
committed before it is acknowledged).  Each receiver acknowledges what arrives in batches of up to
100 ids.  Two rows, in the same run, on the same relay:

* **group_send**: the sender is in a group with the receivers (a signed membership change, as the
  client library makes it) and sends ``--messages`` group messages, pipelining up to ``--window``;
  the relay queues each for every member device in one transaction;
* **pairwise send**: the same number of deliveries made the 1:1 way: the sender sends each message
  to every receiver with ``send`` (``members`` sends per message), pipelining likewise; this is how
  a client without server-side fan-out would use the relay.

Each row reports deliveries per second (copies pushed to a receiver and acknowledged by it, end to
end), the relay's CPU per delivery, and messages per second from the sender's point of view.  The
load generator and the relay share the machine's cores; compare the rows of one run.  The sender's
own CPU for the two (one Sender Keys encryption against ``members`` Double Ratchet encryptions) is
``make bench`` (``benchmarks/core_bench.py``, the ``group_send_*`` and ``fanout_*`` rows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import relay_load  # noqa: E402
from relay_load import Server  # noqa: E402

from client import transport  # noqa: E402
from client.transport import Connection, IncomingMessage  # noqa: E402
from e2e.group_membership import GroupMember, create_membership  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402

# Group sends are rate-limited per device (100/s by default): lift that too, so that it is not what
# is measured.
relay_load.RELAY_OPTIONS += ["--group-send-rate", "1e9", "--group-send-burst", "1000000000"]

BODY_BYTES = 200


async def _device(url: str, name: str) -> tuple[KeyPair, Connection]:
    identity = KeyPair.generate(os.urandom)
    connection = await transport.connect(url, account=name, device_id=1, identity_key=identity, register=True)
    return identity, connection


class Receivers:
    """The members' connections; each acknowledges what arrives, and the total is counted."""

    def __init__(self, connections: list[Connection]) -> None:
        self.connections = connections
        self.received = 0
        self.target = 0
        self.done = asyncio.Event()
        self.readers = [asyncio.create_task(self._read(c)) for c in connections]

    async def _read(self, connection: Connection) -> None:
        unacked: list[int] = []
        arrived = asyncio.Event()

        async def acker() -> None:
            while True:
                await arrived.wait()
                arrived.clear()
                while unacked:
                    batch = unacked[:100]
                    del unacked[:100]
                    await connection.ack(batch)

        acking = asyncio.create_task(acker())
        try:
            async for push in connection.pushes():
                if isinstance(push, IncomingMessage) and push.type == 7:
                    unacked.append(push.server_id)
                    arrived.set()
                    self.received += 1
                    if self.received >= self.target:
                        self.done.set()
                elif isinstance(push, IncomingMessage):
                    unacked.append(push.server_id)
                    arrived.set()
        finally:
            acking.cancel()

    def expect(self, count: int) -> None:
        self.received = 0
        self.target = count
        self.done.clear()


async def _pipelined(submit: list[Callable[[], Awaitable[object]]], window: int) -> None:
    """Run the submit callables keeping at most ``window`` answers outstanding."""
    pending: set[asyncio.Future[object]] = set()
    for make in submit:
        while len(pending) >= window:
            _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.ensure_future(make()))
    if pending:
        await asyncio.wait(pending)


async def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="group-bench-"))
    server = Server("relay", workdir)
    try:
        url = server.url
        sender_identity, sender = await _device(url, "sender")
        names = [f"m{i}" for i in range(args.members)]
        members = [await _device(url, name) for name in names]
        receivers = Receivers([c for _, c in members])
        change = create_membership(
            os.urandom(16),
            [GroupMember("sender", sender_identity.public_key, True)]
            + [
                GroupMember(name, identity.public_key)
                for name, (identity, _) in zip(names, members, strict=True)
            ],
            sender_identity,
            os.urandom,
        )
        await sender.group_change("group_create", change.serialized)
        body = os.urandom(BODY_BYTES)
        total = args.messages * args.members
        rows = []
        for label in ("group_send", "pairwise send"):
            receivers.expect(total)
            cpu_before = server.cpu_seconds()
            started = time.perf_counter()
            if label == "group_send":
                calls = [
                    (lambda i=i: sender.group_send(change.group_id, f"g{i}", 7, body))
                    for i in range(args.messages)
                ]
            else:
                calls = [
                    (lambda i=i, name=name: sender.send(name, 1, f"p{i}-{name}", 7, body))
                    for i in range(args.messages)
                    for name in names
                ]
            await _pipelined(calls, args.window)
            sent = time.perf_counter() - started
            await asyncio.wait_for(receivers.done.wait(), 600)
            seconds = time.perf_counter() - started
            cpu = server.cpu_seconds() - cpu_before
            rows.append((label, total / seconds, cpu / total * 1e6, args.messages / sent))
        print(
            f"# group fan-out: 1 sender, {args.members} members, {args.messages} messages of {BODY_BYTES} B"
        )
        print(f"{'row':<16}{'deliveries/s':>14}{'relay CPU µs/delivery':>24}{'messages/s at sender':>24}")
        for label, rate, cpu_us, sender_rate in rows:
            print(f"{label:<16}{rate:>14,.0f}{cpu_us:>24.1f}{sender_rate:>24,.1f}")
        for connection in [sender, *receivers.connections]:
            await connection.close()
        for reader in receivers.readers:
            reader.cancel()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200, help="group messages per row")
    parser.add_argument("--window", type=int, default=64, help="requests awaiting the relay's answer")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
