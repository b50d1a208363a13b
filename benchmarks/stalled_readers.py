"""The relay's memory under the stalled-reader attack: devices that authenticate and never read.

Run ``python benchmarks/stalled_readers.py`` (``--help`` for the knobs); ``--source DIR`` runs the
relay from another checkout of the project (for a before/after comparison in one sitting).

What it does
------------
1. Starts ``python -m server`` (SQLite in a temporary folder) with ``--write-timeout`` as given.
2. Registers ``--devices`` recipient devices and queues ``--messages`` messages of ``--body-kib``
   KiB for each of them through the client library.
3. For ``--rounds`` rounds: opens one raw TCP connection per recipient with a receive buffer of
   4 KiB, does the WebSocket handshake, reads the challenge, sends a valid ``auth`` proof and then
   never reads again.  The relay pushes the queue into a window that stays shut.
4. Samples the relay's resident memory (``VmRSS``) every half second for ``--hold`` seconds of
   each round.  At the end of the round, before closing anything itself, it counts the stalled
   connections whose handler the relay ended (its ``disconnected`` lines) and those whose TCP
   connection the relay really dropped (the socket's TCP state is no longer established).

It prints the resident memory before the attack, its peak and its last value in each round, the
memory above the baseline per stalled connection, and how many stalled connections were still open
when the round ended.  Compare runs of one sitting; see ``docs/relay-security.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from client import transport  # noqa: E402
from e2e.keys import KeyPair  # noqa: E402
from tests.relay.rawsocket import RawSocket  # noqa: E402


class _Device:
    """What :meth:`RawSocket.auth` needs of a device."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.device_id = 1
        self.rng = os.urandom
        self.identity = KeyPair.generate(os.urandom)


_TCP_ESTABLISHED = 1


def _tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state (Linux ``tcp_info.tcpi_state``: 1 established, 7 closed, 8 close-wait)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def main(args: argparse.Namespace) -> None:
    source = Path(args.source).resolve() if args.source else REPO
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as workdir:
        log = Path(workdir) / "relay.log"
        command = [
            sys.executable,
            "-m",
            "server",
            "--port",
            str(port),
            "--db",
            str(Path(workdir) / "relay.sqlite3"),
            "--write-timeout",
            str(args.write_timeout),
        ]
        with log.open("wb") as sink:
            relay = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                cwd=source,
                env={**os.environ, "PYTHONPATH": str(source)},
            )
        try:
            while "listening" not in log.read_text():
                if relay.poll() is not None:
                    raise RuntimeError(log.read_text())
                await asyncio.sleep(0.05)
            await attack(args, url, relay.pid, log)
        finally:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(30)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()


async def attack(args: argparse.Namespace, url: str, pid: int, log: Path) -> None:
    sender_identity = KeyPair.generate(os.urandom)
    sender = await transport.connect(
        url,
        account="sender",
        device_id=1,
        identity_key=sender_identity,
        registration_id=1,
        register=True,
        rng=os.urandom,
    )
    recipients = [_Device(f"victim{i}") for i in range(args.devices)]
    for device in recipients:
        connection = await transport.connect(
            url,
            account=device.account,
            device_id=1,
            identity_key=device.identity,
            registration_id=1,
            register=True,
            rng=os.urandom,
        )
        await connection.close()
    body = os.urandom(args.body_kib * 1024)
    window = asyncio.Semaphore(32)

    async def one(account: str, i: int) -> None:
        async with window:
            await sender.send(account, 1, f"{account}-{i}", 1, body)

    for device in recipients:
        await asyncio.gather(*(one(device.account, i) for i in range(args.messages)))
    await sender.close()
    await asyncio.sleep(1.0)
    baseline = _rss_kib(pid)
    print(f"relay source: {args.source or REPO}")
    print(
        f"devices={args.devices} messages={args.messages} body={args.body_kib} KiB "
        f"write_timeout={args.write_timeout}s hold={args.hold}s"
    )
    print(f"resident before the attack: {baseline / 1024:.1f} MiB")
    for round_number in range(1, args.rounds + 1):
        offset = len(log.read_text())
        stalled = []
        for device in recipients:
            raw = await RawSocket.open(url, receive_buffer=4096)
            await raw.auth(device)
            stalled.append(raw)
        started = time.monotonic()
        peak = baseline
        samples = []
        while time.monotonic() - started < args.hold:
            await asyncio.sleep(0.5)
            rss = _rss_kib(pid)
            peak = max(peak, rss)
            samples.append((time.monotonic() - started, rss))
        # Counted before this side closes anything: only the relay can have ended them.  The log
        # says when the relay's handler gave up; the socket's TCP state says whether the relay
        # really let go of the connection (an RST or a FIN arrived).
        ended = len(re.findall(r"disconnected conn=\d+ device=victim", log.read_text()[offset:]))
        dropped = sum(_tcp_state(raw.sock) != _TCP_ESTABLISHED for raw in stalled)
        last = samples[-1][1]
        print(
            f"round {round_number}: peak {peak / 1024:.1f} MiB, "
            f"after {args.hold:.0f} s {last / 1024:.1f} MiB "
            f"(+{(peak - baseline) / 1024 / args.devices:.1f} MiB per stalled connection at peak); "
            f"handlers ended (log): {ended} of {args.devices}; "
            f"TCP connections dropped by the relay: {dropped} of {args.devices}"
        )
        trace = " ".join(f"{t:.0f}s:{r / 1024:.0f}" for t, r in samples[:: max(1, len(samples) // 12)])
        print(f"  RSS MiB over time: {trace}")
        for raw in stalled:
            raw.close()
        await asyncio.sleep(2.0)
    if args.show_log:
        for line in log.read_text().splitlines():
            if re.search(r"slow_consumer|disconnected|close |authenticated", line):
                print("  log:", line.split(" ", 3)[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=4, help="stalled connections per round")
    parser.add_argument("--messages", type=int, default=300, help="messages queued per device")
    parser.add_argument("--body-kib", type=int, default=90, help="size of each message body")
    parser.add_argument("--write-timeout", type=float, default=5.0, help="the relay's --write-timeout")
    parser.add_argument(
        "--hold",
        type=float,
        default=45.0,
        help="seconds each round keeps its sockets (default: past the keepalive's 20 s ping + 20 s timeout)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--show-log", action="store_true", help="print the relay's connection events")
    parser.add_argument("--source", default=None, help="run the relay from this checkout instead")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
