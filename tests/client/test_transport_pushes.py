"""What a hostile relay pushes is checked by the transport before the client sees it.

A real WebSocket server on loopback plays the relay: it sends the challenge, then one message push,
and the client's real :class:`client.transport.Connection` reads it.
"""

from __future__ import annotations

import base64
import json
import os

import pytest
from websockets.asyncio.server import serve

from client.transport import Connection, IncomingMessage


def _push(sender: object, device: object = 1, client_id: object = "c1") -> str:
    return json.dumps(
        {
            "v": 1,
            "push": "message",
            "server_id": 1,
            "sender": {"account": sender, "device_id": device},
            "client_id": client_id,
            "type": 1,
            "body": base64.b64encode(b"ciphertext").decode(),
            "timestamp": 1,
        }
    )


async def _pushes_from(frame: str) -> tuple[list[object], str]:
    async def relay(ws) -> None:
        challenge = base64.b64encode(os.urandom(32)).decode()
        await ws.send(json.dumps({"v": 1, "push": "challenge", "challenge": challenge, "origin": "x"}))
        await ws.send(frame)
        await ws.close()

    async with serve(relay, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        connection = await Connection.open(f"ws://127.0.0.1:{port}")
        pushes = [push async for push in connection.pushes()]
        lost = await connection.wait_closed()
        await connection.close()
    return pushes, str(lost)


@pytest.mark.parametrize(
    ("sender", "device", "client_id"),
    [
        ("mallory\x1b]0;pwned\x07", 1, "c1"),
        ("../../etc", 1, "c1"),
        ("a" * 65, 1, "c1"),
        (["not", "a", "name"], 1, "c1"),
        ("mallory", 0, "c1"),
        ("mallory", 2**31, "c1"),
        ("mallory", 1, ""),
        ("mallory", 1, "x" * 65),
        ("mallory", 1, "\ud800"),
    ],
)
async def test_a_push_outside_the_relays_own_rules_is_a_protocol_violation(sender, device, client_id) -> None:
    pushes, lost = await _pushes_from(_push(sender, device, client_id))
    assert pushes == []
    assert "protocol violation by the relay: a malformed message push" in lost


async def test_a_well_formed_push_is_handed_on() -> None:
    pushes, _ = await _pushes_from(_push("mallory"))
    assert len(pushes) == 1 and isinstance(pushes[0], IncomingMessage)
    assert (pushes[0].sender, pushes[0].sender_device, pushes[0].client_id) == ("mallory", 1, "c1")
