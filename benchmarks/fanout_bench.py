"""Fan-out benchmark: what a send costs against the number of devices it goes to.

Run ``make bench-devices`` (or ``python benchmarks/fanout_bench.py --devices 1,2,3,5 --messages 100``).
One run prints one table.

Setup: one relay in this process on a SQLite file (durable, as shipped), Alice's phone and Bob's
phone plus ``n - 1`` linked companions of Bob's (linked the real way), all ``client.Client`` with
their own SQLite files.  Sessions are set up by a first send that is not timed.

Rows (per ``n``, the number of Bob's devices):

* **send (one device)**: ``Client.send`` to Bob's phone alone, awaited until the relay acknowledged
  it (``flush``): the baseline every fan-out row compares with.
* **send_all**: ``Client.send_all`` to Bob (every device of his list, verified afresh each time,
  plus our own other devices: none here), then ``flush``.  Reported: milliseconds per message
  (median of the run), copies per message, ciphertext bytes per message put in the outbox.

All numbers are wall-clock on a shared machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from client import Client, Settings  # noqa: E402
from client.fanout import link_companion  # noqa: E402
from server import Limits, Relay, SQLiteStore  # noqa: E402

SETTINGS = Settings(pre_key_target=12, pre_key_low_water=4, kem_pre_key_target=4, kem_pre_key_low_water=2)


async def _link(primary: Client, url: str, path: Path) -> Client:
    offers: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(link_companion(path, url, on_offer=offers.put_nowait, settings=SETTINGS))
    await primary.link((await offers.get()).to_code())
    companion = await task
    await companion.start()
    await companion.wait_connected(timeout=30)
    return companion


async def _drain(clients: list[Client]) -> None:
    for client in clients:
        while True:
            try:
                await client.receive(timeout=0.05)
            except TimeoutError:
                break


async def _run(devices: int, messages: int, directory: Path) -> dict[str, float]:
    relay = Relay(SQLiteStore(directory / "relay.db"), dataclasses.replace(Limits(), sweep_interval=3600.0))
    await relay.start("127.0.0.1", 0)
    alice = Client.create(directory / "alice.db", relay.url, "alice", settings=SETTINGS)
    bob = Client.create(directory / "bob.db", relay.url, "bob", settings=SETTINGS)
    clients = [alice, bob]
    try:
        for client in clients:
            await client.start()
            await client.wait_connected(timeout=30)
        for index in range(2, devices + 1):
            clients.append(await _link(bob, relay.url, directory / f"bob-{index}.db"))
        await alice.send_all("bob", "warm-up")
        await alice.flush(timeout=30)
        single, fanned = [], []
        for _ in range(messages):
            started = time.perf_counter()
            await alice.send("bob", "x" * 64)
            await alice.flush(timeout=30)
            single.append(time.perf_counter() - started)
        await _drain(clients[1:])
        outbox_bytes = 0
        for _ in range(messages):
            started = time.perf_counter()
            message_id = await alice.send_all("bob", "x" * 64)
            outbox_bytes += sum(
                len(e.body) for e in alice.store.outbox() if e.message_id.split(".")[0] == message_id
            )
            await alice.flush(timeout=30)
            fanned.append(time.perf_counter() - started)
        await _drain(clients[1:])
        return {
            "single_ms": statistics.median(single) * 1000,
            "fanout_ms": statistics.median(fanned) * 1000,
            "copies": float(devices),
            "bytes": outbox_bytes / messages,
        }
    finally:
        for client in clients:
            await client.close()
        await relay.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="1,2,3,5", help="numbers of Bob's devices (comma-separated)")
    parser.add_argument("--messages", type=int, default=100, help="timed messages per row")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.devices.split(",") if part]
    print(f"fan-out: {args.messages} messages of 64 bytes per row, relay on SQLite, one process")
    print(f"{'devices':>7}  {'send (one) ms':>13}  {'send_all ms':>11}  {'copies':>6}  {'bytes/msg':>9}")
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            row = asyncio.run(_run(count, args.messages, Path(tmp)))
        print(
            f"{count:>7}  {row['single_ms']:>13.2f}  {row['fanout_ms']:>11.2f}  "
            f"{int(row['copies']):>6}  {row['bytes']:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
