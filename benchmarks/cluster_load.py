"""Relay cluster benchmark: one SQLite node against 1, 2 and 3 PostgreSQL nodes, end to end.

Run ``make bench-cluster`` (or ``python benchmarks/cluster_load.py``).  One run prints one table.

What it does, per row:

* starts a throwaway PostgreSQL server once for the whole run, with crash-safe settings (fsync on,
  synchronous commit), and a fresh database per row;
* starts the relay nodes as separate processes (``python -m server --store …``), logging warnings
  only so that the log is not what is measured;
* registers K sender/receiver pairs.  Sender *i* is connected to node *i mod n* and its receiver
  to node *(i+1) mod n*, so with more than one node every message crosses from one node to another
  through the database and a notification;
* each sender pipelines its messages (up to ``--window`` unacknowledged) with a send timestamp in
  the body; each receiver acknowledges in batches and records the latency from send to receipt;
* reports messages per second delivered end to end, and the latency p50/p99.

The ``store only`` rows drive :class:`server.pg_store.PostgresStore` directly (enqueue, fetch, ack:
what one message costs the database) from one process with no WebSockets, to show the database's
own rate beside the relay's.

This machine has two cores shared by the database, the nodes and the load generator, so more nodes
cannot add CPU: the rows show what the design costs, not how it scales on separate machines.
Compare rows of one run; see ``docs/scaling.md`` for what the figures mean.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from client import transport  # noqa: E402
from client.transport import Connection, IncomingMessage, QueueEmpty  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402
from server.pg_store import PostgresStore  # noqa: E402
from server.store import DeviceAddress, NewMessage  # noqa: E402
from server.testing.pg import Cluster, start_cluster  # noqa: E402

BODY_BYTES = 200
NODE_OPTIONS = [
    "--log-level",
    "WARNING",
    # The benchmark's connections all come from 127.0.0.1 and pipeline hard: lift the per-address and
    # per-connection rate limits so that they are not what is measured.
    "--max-connections-per-address",
    "100000",
    "--frame-rate",
    "1000000",
    "--frame-burst",
    "1000000",
    "--byte-rate",
    "1e12",
    "--byte-burst",
    "1000000000000",
]


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """CPU time (user + system) of a live process from /proc, optionally with its reaped children."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 to 17 of proc(5): utime, stime, cutime, cstime.
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def _postgres_cpu_seconds(postmaster: int) -> float:
    """The server's CPU time: the postmaster, its exited children and every live backend."""
    total = _cpu_seconds(postmaster, with_children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == postmaster:
            total += _cpu_seconds(int(entry.name))
    return total


class CpuMeter:
    """CPU seconds spent by the relay nodes and by PostgreSQL between ``start`` and ``stop``.

    Given the cluster, it also counts the bytes of write-ahead log PostgreSQL wrote meanwhile.
    """

    def __init__(self, node_pids: list[int], postmaster: int | None, cluster: Cluster | None = None) -> None:
        self._nodes = node_pids
        self._postmaster = postmaster
        self._cluster = cluster
        self.relay = 0.0
        self.postgres = 0.0
        self.wal_bytes = 0

    def _wal(self) -> str:
        return self._cluster.psql("SELECT pg_current_wal_insert_lsn()").strip() if self._cluster else ""

    def _read(self) -> tuple[float, float]:
        relay = sum(_cpu_seconds(pid) for pid in self._nodes) + (
            _cpu_seconds(os.getpid()) if not self._nodes else 0.0
        )
        postgres = _postgres_cpu_seconds(self._postmaster) if self._postmaster else 0.0
        return relay, postgres

    def start(self) -> None:
        self._wal_begin = self._wal()
        self._begin = self._read()

    def stop(self) -> None:
        relay, postgres = self._read()
        self.relay = relay - self._begin[0]
        self.postgres = postgres - self._begin[1]
        if self._cluster is not None:
            self.wal_bytes = int(
                self._cluster.psql(
                    f"SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '{self._wal_begin}')"
                )
                .strip()
                .split(".")[0]
            )


@dataclass
class Row:
    label: str
    pairs: int
    messages: int
    seconds: float
    latencies_ms: list[float]
    cpu: CpuMeter | None = None

    def cpu_per_message(self, seconds: float) -> str:
        return f"{seconds / self.messages * 1e6:,.0f}" if self.cpu is not None else "-"

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Node:
    """One relay process."""

    def __init__(self, store_url: str, log: Path) -> None:
        self.log = log
        # The node logs warnings only, so its address cannot be read from its log: pick the port here.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "--port", str(port), "--store", store_url, *NODE_OPTIONS],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                cwd=REPO,
            )

    def wait_listening(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        host, port = self.url.removeprefix("ws://").split(":")
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relay node exited:\n{self.log.read_text()}")
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    return self.url
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("relay node did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _connect(url: str, account: str) -> Connection:
    key = KeyPair.generate(os.urandom)
    return await transport.connect(url, account=account, device_id=1, identity_key=key, register=True)


async def _drain_initial(connection: Connection) -> None:
    async for push in connection.pushes():
        if isinstance(push, QueueEmpty):
            return


async def run_relay(urls: list[str], label: str, pairs: int, total: int, window: int, meter: CpuMeter) -> Row:
    per_pair = max(1, total // pairs)
    senders = await asyncio.gather(*(_connect(urls[i % len(urls)], f"s{i}") for i in range(pairs)))
    receivers = await asyncio.gather(*(_connect(urls[(i + 1) % len(urls)], f"r{i}") for i in range(pairs)))
    await asyncio.gather(*(_drain_initial(r) for r in receivers))
    latencies: list[float] = []
    finished: list[float] = []
    padding = b"\x00" * (BODY_BYTES - 8)

    async def send(index: int) -> None:
        slots = asyncio.Semaphore(window)
        pending = []
        for n in range(per_pair):
            await slots.acquire()
            body = time.perf_counter_ns().to_bytes(8, "big") + padding
            future = senders[index].send_message(f"r{index}", 1, f"{index}-{n}", 1, body)
            future.add_done_callback(lambda _f: slots.release())
            pending.append(future)
        await asyncio.gather(*pending)

    async def receive(index: int) -> None:
        connection = receivers[index]
        unacked: list[int] = []
        wake = asyncio.Event()
        got = 0

        async def acker() -> None:
            while True:
                await wake.wait()
                wake.clear()
                while unacked:
                    batch = unacked[:100]
                    del unacked[:100]
                    await connection.ack(batch)

        acking = asyncio.create_task(acker())
        async for push in connection.pushes():
            if not isinstance(push, IncomingMessage):
                continue
            sent = int.from_bytes(push.body[:8], "big")
            latencies.append((time.perf_counter_ns() - sent) / 1e6)
            unacked.append(push.server_id)
            wake.set()
            got += 1
            if got == per_pair:
                break
        while unacked:
            await asyncio.sleep(0.001)
        acking.cancel()
        finished.append(time.perf_counter())

    meter.start()
    started = time.perf_counter()
    receiving = [asyncio.create_task(receive(i)) for i in range(pairs)]
    await asyncio.gather(*(send(i) for i in range(pairs)))
    await asyncio.wait_for(asyncio.gather(*receiving), 300)
    elapsed = max(finished) - started
    meter.stop()
    for connection in [*senders, *receivers]:
        await connection.close()
    return Row(label, pairs, per_pair * pairs, elapsed, latencies, meter)


async def run_store_only(dsn: str, pairs: int, total: int, window: int, meter: CpuMeter) -> Row:
    """Enqueue, fetch and ack through PostgresStore directly: the database's share of a message.

    Each pair submits ``window`` sends at once, fetches them and acknowledges them in one call, as a
    relay under load does; the latency column is the time of one such round.
    """
    store = PostgresStore(dsn, pool_size=16)
    await store.open()
    now = time.time()
    senders = [DeviceAddress(f"s{i}", 1) for i in range(pairs)]
    receivers = [DeviceAddress(f"r{i}", 1) for i in range(pairs)]
    for device in [*senders, *receivers]:
        await store.register_device(device, b"\x05" + os.urandom(32), 1, now)
    rounds = max(1, total // (pairs * window))
    latencies: list[float] = []
    body = b"\x00" * BODY_BYTES

    async def pair(index: int) -> None:
        cursor = 0
        for n in range(rounds):
            began = time.perf_counter()
            sends = [
                store.enqueue(
                    NewMessage(senders[index], receivers[index], f"{n}-{k}", 1, body), now, 3600, 10**6, 10**9
                )
                for k in range(window)
            ]
            await asyncio.gather(*sends)
            batch = await store.fetch(receivers[index], cursor, window, now)
            cursor = batch[-1].server_id
            await store.ack(receivers[index], [m.server_id for m in batch], now)
            latencies.append((time.perf_counter() - began) * 1000)

    meter.start()
    started = time.perf_counter()
    await asyncio.gather(*(pair(i) for i in range(pairs)))
    elapsed = time.perf_counter() - started
    meter.stop()
    await store.close()
    label = "PostgreSQL, store only (no relay; relay CPU = this process)"
    return Row(label, pairs, rounds * window * pairs, elapsed, latencies, meter)


async def benchmark(args: argparse.Namespace, cluster: Cluster, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    number = 0
    assert cluster.process is not None
    postmaster = cluster.process.pid

    def fresh_database() -> str:
        nonlocal number
        number += 1
        return cluster.create_database(f"bench_{number}")

    for pairs in args.pairs:
        if "sqlite" in args.backends:
            node = Node(f"sqlite:{workdir / f'bench-{pairs}.sqlite3'}", workdir / f"sqlite-{pairs}.log")
            try:
                url = await asyncio.to_thread(node.wait_listening)
                meter = CpuMeter([node.process.pid], None)
                rows.append(
                    await run_relay([url], "SQLite, 1 node", pairs, args.messages, args.window, meter)
                )
            finally:
                node.stop()
            print(_format(rows[-1]), flush=True)
        if "postgresql" not in args.backends:
            continue
        for count in args.nodes:
            dsn = fresh_database()
            nodes = [Node(dsn, workdir / f"pg-{pairs}-{count}-{i}.log") for i in range(count)]
            try:
                urls = await asyncio.gather(*(asyncio.to_thread(n.wait_listening) for n in nodes))
                label = f"PostgreSQL, {count} node{'s' if count > 1 else ''}"
                meter = CpuMeter([n.process.pid for n in nodes], postmaster, cluster)
                rows.append(await run_relay(list(urls), label, pairs, args.messages, args.window, meter))
            finally:
                for node in nodes:
                    node.stop()
            print(_format(rows[-1]), flush=True)
        if args.store_only:
            meter = CpuMeter([], postmaster, cluster)
            rows.append(await run_store_only(fresh_database(), pairs, args.messages, args.window, meter))
            print(_format(rows[-1]), flush=True)
    return rows


HEADER = (
    "| configuration | pairs | messages | msg/s | p50 ms | p99 ms "
    "| relay CPU µs/msg | PostgreSQL CPU µs/msg | WAL B/msg |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _format(row: Row) -> str:
    relay = row.cpu_per_message(row.cpu.relay) if row.cpu else "-"
    postgres = row.cpu_per_message(row.cpu.postgres) if row.cpu and row.cpu.postgres else "-"
    wal = f"{row.cpu.wal_bytes / row.messages:,.0f}" if row.cpu and row.cpu.wal_bytes else "-"
    return (
        f"| {row.label} | {row.pairs} | {row.messages} | {row.rate:,.0f} | "
        f"{row.percentile(50):.1f} | {row.percentile(99):.1f} | {relay} | {postgres} | {wal} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100])
    parser.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    parser.add_argument("--messages", type=int, default=6000, help="messages per row (default: %(default)s)")
    parser.add_argument("--window", type=int, default=32, help="unacknowledged sends per sender")
    parser.add_argument("--no-store-only", dest="store_only", action="store_false")
    args = parser.parse_args()
    print(
        f"# relay cluster benchmark: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {BODY_BYTES}-byte bodies, window {args.window}, durable storage",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="e2e-bench-") as tmp, start_cluster(durable=True) as cluster:
        print(f"# PostgreSQL started in {cluster.startup_seconds:.2f} s (fsync on)", flush=True)
        print(HEADER, flush=True)
        asyncio.run(benchmark(args, cluster, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
