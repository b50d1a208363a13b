"""Relay benchmark: the durable relay beside a bare WebSocket forwarder, K pairs, and idle memory.

Run ``make bench-relay`` (or ``python benchmarks/relay_load.py``).  One run prints one table.

What it measures
----------------
* **Throughput.**  K sender/receiver pairs (1, 10, 100, 1,000) through one server process.  Each
  sender pipelines its messages (up to ``--window`` awaiting the server's acknowledgement), each body
  carrying its send time; each receiver acknowledges in batches of up to 100 ids.  The row reports
  messages delivered end to end per second, and the latency from send to receipt (p50, p99).
* **Latency at half rate.**  The same pairs paced at half the throughput just measured on the same
  server: p50 and p99 there are what a user would see on a busy but not saturated relay.
* **Server CPU per message.**  The server process's CPU time (all threads) over the throughput row,
  divided by the messages: on a machine whose cores are shared with the load generator (and with
  whatever else runs), this is the steadiest measure of what the server itself costs.
* **Idle connections.**  ``--idle`` authenticated connections that do nothing; the relay's resident
  memory before and after, per connection.

The yardstick
-------------
Every row is run twice in the same run: once through the relay (``python -m server``: SQLite in WAL
mode with ``synchronous=FULL``, every send committed before it is acknowledged, proofs verified) and
once through a *bare forwarder* — this file started with ``--bare-forwarder``: a websockets server
with compression off that speaks just enough of the relay protocol (a challenge, accepted proofs,
``send`` answered at once and pushed to the recipient's connection, ``ack`` answered) for the same
client code to drive it, and that keeps nothing.  The ratio between the two is the cost of
durability, authentication and the relay's bookkeeping.

Both servers and the load generator (this process, using :mod:`client.transport`) share the
machine's cores; compare rows of one run, not runs of different days.  See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from client import transport  # noqa: E402
from client.transport import Connection, IncomingMessage  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402

BODY_BYTES = 200
# The load all comes from 127.0.0.1 and pipelines hard: lift the per-address and per-connection
# limits so that they are not what is measured.  Logging is at warnings so that it is not either.
RELAY_OPTIONS = [
    "--log-level",
    "WARNING",
    "--max-connections-per-address",
    "100000",
    "--frame-rate",
    "1e9",
    "--frame-burst",
    "1000000000",
    "--byte-rate",
    "1e12",
    "--byte-burst",
    "1000000000000",
    "--auth-timeout",
    "120",
]


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The bare forwarder.


async def _forward(port: int) -> None:
    """A non-durable forwarder speaking the relay protocol's happy path; see the module docstring."""
    from websockets.asyncio.server import serve

    online: dict[tuple[str, int], Any] = {}
    counter = 0

    async def handler(ws: Any) -> None:
        nonlocal counter
        me: tuple[str, int] | None = None
        await ws.send(json.dumps({"v": 1, "push": "challenge", "challenge": "A" * 43 + "=", "origin": ""}))
        try:
            async for text in ws:
                frame = json.loads(text)
                op = frame["op"]
                reply: dict[str, Any] = {"v": 1, "id": frame["id"], "ok": True}
                if op == "send":
                    counter += 1
                    reply["server_id"] = counter
                    reply["duplicate"] = False
                    to = frame["to"]
                    peer = online.get((to["account"], to["device_id"]))
                    if peer is not None and me is not None:
                        push = {
                            "v": 1,
                            "push": "message",
                            "server_id": counter,
                            "sender": {"account": me[0], "device_id": me[1]},
                            "client_id": frame["client_id"],
                            "type": frame["type"],
                            "body": frame["body"],
                            "timestamp": 0,
                        }
                        await peer.send(json.dumps(push))
                    await ws.send(json.dumps(reply))
                elif op in ("register", "auth"):
                    me = (frame["account"], frame["device_id"])
                    online[me] = ws
                    await ws.send(json.dumps(reply))
                    await ws.send('{"v":1,"push":"queue_empty"}')
                else:
                    if op == "ack":
                        reply["acked"] = len(frame["server_ids"])
                    await ws.send(json.dumps(reply))
        finally:
            if me is not None and online.get(me) is ws:
                del online[me]

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**20):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()


# Server processes.


class Server:
    """A server process on a free port: the relay, or this file as the bare forwarder."""

    def __init__(self, kind: str, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.kind = kind
        self.url = f"ws://127.0.0.1:{port}"
        self.log = workdir / f"{kind}.log"
        if kind == "relay":
            db = workdir / f"relay-{port}.sqlite3"
            command = [sys.executable, "-m", "server", "--port", str(port), "--db", str(db), *RELAY_OPTIONS]
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--bare-forwarder", "--port", str(port)]
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=sink, cwd=REPO, preexec_fn=_raise_file_limit
            )
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {kind} exited:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} did not start") from None
                time.sleep(0.05)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process (all its threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# The load generator.


@dataclass
class Result:
    messages: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


_accounts = iter(range(10**9))


async def _device(url: str) -> tuple[str, Connection]:
    account = f"d{next(_accounts)}"
    connection = await transport.connect(
        url, account=account, device_id=1, identity_key=KeyPair.generate(os.urandom), register=True
    )
    return account, connection


async def _connect_all(url: str, count: int) -> list[tuple[str, Connection]]:
    devices: list[tuple[str, Connection]] = []
    for start in range(0, count, 100):
        devices += await asyncio.gather(*(_device(url) for _ in range(min(100, count - start))))
    return devices


class Pairs:
    """K connected sender/receiver pairs on one server, and the receivers' acknowledging readers."""

    def __init__(
        self, senders: list[tuple[str, Connection]], receivers: list[tuple[str, Connection]]
    ) -> None:
        self.senders = senders
        self.receivers = receivers
        self.latencies: list[float] = []
        self.received = 0
        self.target = 0
        self.done = asyncio.Event()
        self.readers = [asyncio.create_task(self._read(connection)) for _, connection in receivers]

    @classmethod
    async def open(cls, url: str, k: int) -> Pairs:
        return cls(await _connect_all(url, k), await _connect_all(url, k))

    async def _read(self, connection: Connection) -> None:
        """Record each message's latency; acknowledge whatever has arrived whenever the acker is free."""
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
        acking.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            async for push in connection.pushes():
                if isinstance(push, IncomingMessage):
                    sent = int.from_bytes(push.body[:8], "big")
                    self.latencies.append((time.perf_counter_ns() - sent) / 1e6)
                    unacked.append(push.server_id)
                    arrived.set()
                    self.received += 1
                    if self.received >= self.target:
                        self.done.set()
        finally:
            acking.cancel()

    def expect(self, count: int) -> None:
        self.latencies = []
        self.received = 0
        self.target = count
        self.done.clear()

    async def close(self) -> None:
        for _, connection in [*self.senders, *self.receivers]:
            await connection.close()
        for reader in self.readers:
            reader.cancel()


_padding = b"\x00" * (BODY_BYTES - 8)
_sequence = iter(range(10**12))


def _send(pairs: Pairs, index: int) -> asyncio.Future[Any]:
    _, connection = pairs.senders[index]
    recipient, _ = pairs.receivers[index]
    body = time.perf_counter_ns().to_bytes(8, "big") + _padding
    return connection.send(recipient, 1, f"c{next(_sequence)}", 1, body)


async def throughput(pairs: Pairs, total: int, window: int) -> Result:
    """Every sender pipelines its share with up to ``window`` sends awaiting acknowledgement."""
    k = len(pairs.senders)
    per_sender = max(1, total // k)
    pairs.expect(per_sender * k)

    async def run(index: int) -> None:
        slots = asyncio.Semaphore(window)
        for _ in range(per_sender):
            await slots.acquire()
            _send(pairs, index).add_done_callback(lambda _f: slots.release())

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(k)))
    await asyncio.wait_for(pairs.done.wait(), 600)
    return Result(per_sender * k, time.perf_counter() - started, pairs.latencies)


async def paced(pairs: Pairs, rate: float, seconds: float) -> Result:
    """Send at ``rate`` messages a second in total, round-robin over the senders, for ``seconds``."""
    k = len(pairs.senders)
    total = max(k, int(rate * seconds))
    pairs.expect(total)
    tick = 0.002
    started = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - started) * rate) + 1)
        while sent < due:
            _send(pairs, sent % k)
            sent += 1
        await asyncio.sleep(tick)
    await asyncio.wait_for(pairs.done.wait(), 600)
    return Result(total, time.perf_counter() - started, pairs.latencies)


async def idle_memory(server: Server, count: int) -> tuple[int, int]:
    """Resident KiB of ``server`` before and after ``count`` idle authenticated connections."""
    before = server.rss_kib()
    devices = await _connect_all(server.url, count)
    await asyncio.sleep(1.0)
    after = server.rss_kib()
    for start in range(0, len(devices), 500):
        await asyncio.gather(*(connection.close() for _, connection in devices[start : start + 500]))
    return before, after


# The run.


async def bench(args: argparse.Namespace) -> None:
    _raise_file_limit()
    print(
        f"# relay_load: {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"# {BODY_BYTES}-byte bodies, window {args.window} per sender, {args.messages} messages per row")
    print()
    print(
        "| pairs | server | msg/s | p50 ms | p99 ms | at half rate: msg/s | p50 ms | p99 ms "
        "| server CPU µs/msg | relay/bare msg/s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="relay-load-") as tmp:
        for k in args.pairs:
            rates: dict[str, float] = {}
            for kind in ("bare", "relay"):
                server = Server(kind, Path(tmp))
                try:
                    pairs = await Pairs.open(server.url, k)
                    await throughput(pairs, max(k, 1000), args.window)  # warm-up
                    cpu = server.cpu_seconds()
                    full = await throughput(pairs, args.messages, args.window)
                    cpu_us = (server.cpu_seconds() - cpu) / full.messages * 1e6
                    half = await paced(pairs, full.rate / 2, args.paced_seconds)
                    await pairs.close()
                finally:
                    server.stop()
                rates[kind] = full.rate
                ratio = f"{rates['relay'] / rates['bare']:.0%}" if kind == "relay" else ""
                label = "relay (durable)" if kind == "relay" else "bare forwarder"
                print(
                    f"| {k} | {label} | {full.rate:,.0f} "
                    f"| {full.percentile(50):.1f} | {full.percentile(99):.1f} | {half.rate:,.0f} "
                    f"| {half.percentile(50):.1f} | {half.percentile(99):.1f} | {cpu_us:.0f} | {ratio} |",
                    flush=True,
                )
        if args.idle:
            server = Server("relay", Path(tmp))
            try:
                before, after = await idle_memory(server, args.idle)
            finally:
                server.stop()
            print()
            print(
                f"Idle connections: {args.idle:,} authenticated connections to the relay: resident memory "
                f"{before / 1024:.0f} MiB -> {after / 1024:.0f} MiB, "
                f"{(after - before) / args.idle:.1f} KiB per connection."
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 100, 1000])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per throughput row")
    parser.add_argument("--window", type=int, default=64, help="sends awaiting acknowledgement per sender")
    parser.add_argument("--paced-seconds", type=float, default=3.0, help="duration of each half-rate row")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections (0 to skip)")
    parser.add_argument("--bare-forwarder", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_forwarder:
        asyncio.run(_forward(args.port))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
