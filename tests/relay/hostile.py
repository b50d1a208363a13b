"""A hostile relay for tests: a WebSocket proxy on loopback between clients and a real relay that
can rewrite, drop or record any frame in either direction.

``HostileShim(upstream_url, tamper)`` listens on 127.0.0.1; each client connection gets its own
upstream connection.  ``tamper(direction, frame)`` receives every JSON frame (``"up"``: client →
relay, ``"down"``: relay → client) as a dict and returns the dict to forward, or None to drop it.
Clients that dial the shim sign their proofs for the real relay's origin (``origin=relay.url``),
as a client behind a relay that terminates TLS in front of itself would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

Tamper = Callable[[str, dict[str, Any]], dict[str, Any] | None]


class HostileShim:
    def __init__(self, upstream_url: str, tamper: Tamper) -> None:
        self.upstream_url = upstream_url
        self.tamper = tamper
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self._server: Server | None = None
        self._clients: set[ServerConnection] = set()
        self.url = ""

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"

    async def drop_connections(self) -> None:
        """Close every client connection now (a network failure); the shim keeps listening."""
        for connection in list(self._clients):
            await connection.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

    async def _handle(self, client: ServerConnection) -> None:
        self._clients.add(client)
        try:
            await self._relay(client)
        finally:
            self._clients.discard(client)

    async def _relay(self, client: ServerConnection) -> None:
        async with ws_connect(self.upstream_url, compression=None, proxy=None) as upstream:

            async def pump(source: Any, sink: Any, direction: str) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for text in source:
                        frame = json.loads(text)
                        self.frames.append((direction, frame))
                        changed = self.tamper(direction, frame)
                        if changed is not None:
                            await sink.send(json.dumps(changed))
                await sink.close()

            await asyncio.gather(pump(client, upstream, "up"), pump(upstream, client, "down"))
