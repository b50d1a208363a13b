"""Fixtures for the relay tests: real relays on 127.0.0.1, real SQLite files, real WebSockets.

* ``relay_factory`` starts in-process relays (a :class:`server.Relay` on an ephemeral port with
  its database in ``tmp_path``) with any :class:`server.Limits` or clock, and closes them after
  the test.
* ``relay`` is one such relay with the default test limits.
* ``relay_process`` runs ``python -m server`` as a child process (for SIGKILL and SIGTERM tests);
  its log goes to a file in ``tmp_path``.
* :class:`Device` is a test device: an identity key pair and helpers to register, connect and
  publish prekeys through :mod:`client.transport`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import transport
from client.transport import Connection, IncomingMessage, Push, QueueEmpty
from e2e.keys import KeyPair, Rng
from server import Limits, Relay
from server.stores import store_from_url
from server.testing.fixtures import pg_cluster, pg_database, pg_template  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]

# Fast timeouts so that tests of them take a fraction of a second; everything else as shipped.
TEST_LIMITS = dataclasses.replace(Limits(), auth_timeout=5.0, close_timeout=2.0, sweep_interval=3600.0)


class Device:
    """A test device: (account, device id), an identity key pair and a registration id."""

    def __init__(self, account: str, device_id: int, rng: Rng, registration_id: int = 1234) -> None:
        self.account = account
        self.device_id = device_id
        self.rng = rng
        self.identity = KeyPair.generate(rng)
        self.registration_id = registration_id
        self._next_key_id = 1

    async def register(self, url: str) -> Connection:
        return await transport.connect(
            url,
            account=self.account,
            device_id=self.device_id,
            identity_key=self.identity,
            registration_id=self.registration_id,
            register=True,
            rng=self.rng,
        )

    async def connect(self, url: str) -> Connection:
        return await transport.connect(
            url, account=self.account, device_id=self.device_id, identity_key=self.identity, rng=self.rng
        )

    def signed_pre_key(self, key_id: int = 1) -> tuple[int, Any, bytes]:
        key = KeyPair.generate(self.rng).public_key
        return (key_id, key, self.identity.sign(key.serialize(), self.rng))

    def one_time_pre_keys(self, count: int) -> list[tuple[int, Any]]:
        keys = []
        for _ in range(count):
            keys.append((self._next_key_id, KeyPair.generate(self.rng).public_key))
            self._next_key_id += 1
        return keys

    async def publish(self, connection: Connection, one_time: int = 0, signed_id: int = 1) -> None:
        await connection.upload_prekeys(
            signed_pre_key=self.signed_pre_key(signed_id), one_time_pre_keys=self.one_time_pre_keys(one_time)
        )


async def collect(
    connection: Connection, *, until: Callable[[list[Push]], bool], timeout: float = 10.0
) -> list[Push]:
    """Read pushes until ``until(pushes)`` holds (or fail after ``timeout`` seconds)."""
    pushes: list[Push] = []

    async def read() -> None:
        async for item in connection.pushes():
            pushes.append(item)
            if until(pushes):
                return

    await asyncio.wait_for(read(), timeout)
    return pushes


async def drain(connection: Connection, *, ack: bool = True, timeout: float = 10.0) -> list[IncomingMessage]:
    """Read messages (acknowledging each) until the relay says the queue is empty."""
    messages: list[IncomingMessage] = []

    async def read() -> None:
        async for item in connection.pushes():
            if isinstance(item, IncomingMessage):
                messages.append(item)
                if ack:
                    await connection.ack([item.server_id])
            elif isinstance(item, QueueEmpty):
                return

    await asyncio.wait_for(read(), timeout)
    return messages


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> str:
    """Every relay test runs once on each storage backend."""
    return str(request.param)


@pytest.fixture
def store_url(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[Path | None], str]:
    """The store URL for a database "file": the same path always names the same database.

    On SQLite it is the file itself; on PostgreSQL each distinct path gets a database of its own
    on the session's server (``pg_database``), so restart tests find their data again.
    """
    databases: dict[Path, str] = {}
    create_database = request.getfixturevalue("pg_database") if store_backend == "postgresql" else None

    def url(db: Path | None = None) -> str:
        path = db or tmp_path / "relay.sqlite3"
        if create_database is None:
            return f"sqlite:{path}"
        if path not in databases:
            databases[path] = create_database()
        return databases[path]

    return url


@pytest.fixture
async def relay_factory(
    store_url: Callable[[Path | None], str],
) -> AsyncIterator[Callable[..., Awaitable[Relay]]]:
    relays: list[Relay] = []

    async def start(
        limits: Limits | None = None,
        *,
        db: Path | None = None,
        clock: Callable[[], float] = time.time,
        **limit_overrides: Any,
    ) -> Relay:
        chosen = dataclasses.replace(limits or TEST_LIMITS, **limit_overrides)
        relay = Relay(store_from_url(store_url(db)), chosen, clock=clock)
        await relay.start("127.0.0.1", 0)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.close()


@pytest.fixture
async def relay(relay_factory: Callable[..., Awaitable[Relay]]) -> Relay:
    return await relay_factory()


class RelayProcess:
    """``python -m server`` as a child process on an ephemeral port, logging to a file."""

    def __init__(self, db: Path, log: Path, args: list[str]) -> None:
        self.db = db
        self.log = log
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._log_offset = 0

    def start(self, timeout: float = 20.0) -> str:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server", "--port", "0", "--db", str(self.db), *self.args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[self._log_offset :].decode("utf-8", "replace")
            found = re.search(r"listening url=(ws://\S+)", text)
            if found:
                self.url = found.group(1)
                return self.url
            if self.process.poll() is not None:
                raise RuntimeError(f"the relay exited early:\n{text}")
            time.sleep(0.02)
        raise RuntimeError("the relay did not start listening in time")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")


@pytest.fixture
def relay_process(
    tmp_path: Path, store_url: Callable[[Path | None], str]
) -> Iterator[Callable[..., RelayProcess]]:
    processes: list[RelayProcess] = []

    def make(*args: str) -> RelayProcess:
        db = tmp_path / "relay.sqlite3"
        args = ("--store", store_url(db), *args)
        process = RelayProcess(db, tmp_path / "relay.log", list(args))
        processes.append(process)
        return process

    yield make
    for process in processes:
        if process.process is not None and process.process.poll() is None:
            process.kill()


async def link(url: str, primary: Connection, primary_device: Device, companion: Device) -> Connection:
    """Link ``companion`` to ``primary_device``'s account the real way; returns its connection.

    The companion shows an offer, the primary links it (device list, then the sealed payload), the
    companion fetches and opens the payload and registers.  ``companion.device_id`` is set to the
    id the primary gave it.
    """
    from client.devices import link_device, register_companion, wait_for_link
    from e2e.linking import LinkOffer

    offer = LinkOffer.generate(companion.identity.public_key, companion.rng)
    waiting = asyncio.ensure_future(wait_for_link(url, offer, timeout=20.0, poll_interval=0.05))
    device_id, _ = await link_device(primary, primary_device.identity, offer, rng=primary_device.rng)
    opened = await waiting
    companion.account, companion.device_id = primary_device.account, device_id
    return await register_companion(
        url, opened, companion.identity, companion.registration_id, rng=companion.rng
    )
