"""Fixtures and helpers for the client library's tests: real relays and client factories.

Every test runs real parts: a relay on 127.0.0.1 (in-process, or a child process that can be
killed with SIGKILL), real SQLite files in ``tmp_path`` and real WebSockets.  The relays run on
the SQLite store, whose file the tests also read byte by byte.

This is a plain module that the test modules import their fixtures from, not a ``conftest.py``:
the test directories have no ``__init__.py`` (``tests/client`` as a package would shadow the
``client`` library), so a second ``conftest.py`` would clash with ``tests/conftest.py`` by name.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from client_settings import TEST_SETTINGS

from client import Client
from server import Limits, Relay, SQLiteStore
from tests.relay.conftest import RelayProcess

TEST_LIMITS = dataclasses.replace(Limits(), auth_timeout=5.0, close_timeout=2.0, sweep_interval=3600.0)


def free_port() -> int:
    """A port that was free a moment ago (for a relay restarted on the same address)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def relay_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Relay]]]:
    """``await relay_factory(name="relay", port=0, **limits)``: an in-process relay whose database is
    ``tmp_path/<name>.db``, with the test limits and any overrides."""
    relays: list[Relay] = []

    async def start(name: str = "relay", port: int = 0, **limits: Any) -> Relay:
        server = Relay(SQLiteStore(tmp_path / f"{name}.db"), dataclasses.replace(TEST_LIMITS, **limits))
        await server.start("127.0.0.1", port)
        relays.append(server)
        return server

    yield start
    for server in relays:
        await server.close()


@pytest.fixture
async def relay(relay_factory: Callable[..., Awaitable[Relay]]) -> Relay:
    """An in-process relay on an ephemeral port, its database ``tmp_path/relay.db``."""
    return await relay_factory()


@pytest.fixture
def relay_process(tmp_path: Path) -> Any:
    processes: list[RelayProcess] = []

    def make() -> RelayProcess:
        """A relay child process on a fixed port (``--port`` given last wins), so that a restart
        after SIGKILL is at the same URL and the clients' reconnect loop finds it again."""
        process = RelayProcess(tmp_path / "relay.db", tmp_path / "relay.log", ["--port", str(free_port())])
        processes.append(process)
        return process

    yield make
    for process in processes:
        if process.process is not None and process.process.poll() is None:
            process.kill()


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., Client]]:
    """``make_client(url, name, **options)``: the device whose store is ``tmp_path/<name>.db``.

    Creates the device on first use and opens the same store afterwards.  Clients made here are
    closed after the test (closing twice is harmless).
    """
    clients: list[Client] = []

    def make(url: str, name: str, device_id: int = 1, *, path: Path | None = None, **options: Any) -> Client:
        options.setdefault("settings", TEST_SETTINGS)
        store = path or tmp_path / f"{name}.db"
        if store.exists():
            client = Client.open(store, url, **options)
        else:
            client = Client.create(store, url, name, device_id, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
