"""A WebSocket client written by hand on a plain TCP socket, for attacks a library would not make.

The client library and the ``websockets`` client both read what arrives and answer pings, so
neither can play a peer that stops reading with its receive window closed, or one that writes
hundreds of frames in a single TCP write.  :class:`RawSocket` can: it does the RFC 6455 opening
handshake itself, masks and frames text messages itself (§5.2, §5.3), and reads frames only when
the test asks it to.  The socket's receive buffer can be made tiny before it connects, so that
the relay's writes stall after a few kilobytes.

Every call goes through the event loop's socket functions, so an in-process relay on the same loop
keeps running while the test waits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import urllib.parse
from typing import Any

from client.transport import AUTH_LABEL, origin_of, proof_transcript

TCP_ESTABLISHED = 1
"""``tcpi_state`` of an established connection (Linux ``TCP_ESTABLISHED``)."""

_TEXT = 0x1
_CLOSE = 0x8
_PING = 0x9
_PONG = 0xA


def frame(text: str | bytes, opcode: int = _TEXT) -> bytes:
    """One final, masked client frame carrying ``text`` (RFC 6455 §5.2)."""
    payload = text.encode("utf-8") if isinstance(text, str) else text
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    # Masking XORs the payload with the key repeated; doing it on integers keeps it fast.
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
    return header + mask + masked


class RawSocket:
    """One hand-made WebSocket connection to the relay at ``url``."""

    def __init__(self, sock: socket.socket, url: str) -> None:
        self.sock = sock
        self.url = url
        self.buffer = b""
        self.challenge = b""
        self.read_size = 65536
        """At most this many bytes per read."""
        self.read_pause = 0.0
        """Seconds to wait after each read: a reader that drains at read_size / read_pause bytes a second."""

    @classmethod
    async def open(cls, url: str, *, receive_buffer: int | None = None) -> RawSocket:
        """Connect, upgrade and read the challenge push; ``receive_buffer`` sets SO_RCVBUF first."""
        loop = asyncio.get_running_loop()
        parts = urllib.parse.urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connect, so that the window offered in the handshake is already small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        raw = cls(sock, url)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET / HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode("ascii"))
        while b"\r\n\r\n" not in raw.buffer:
            await raw._fill()
        head, _, raw.buffer = raw.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"the upgrade was refused: {status!r}")
        hello = await raw.recv_json()
        assert hello.get("push") == "challenge", hello
        raw.challenge = base64.b64decode(hello["challenge"])
        return raw

    async def _fill(self, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, self.read_size), timeout)
        if not data:
            raise ConnectionError("the relay closed the TCP connection")
        self.buffer += data
        if self.read_pause:
            await asyncio.sleep(self.read_pause)

    async def send_frames(self, texts: list[str]) -> None:
        """Write every text as one frame, all of them in a single ``sendall``."""
        await asyncio.get_running_loop().sock_sendall(self.sock, b"".join(frame(t) for t in texts))

    async def send_json(self, **fields: Any) -> None:
        await self.send_frames([json.dumps({"v": 1, **fields})])

    async def recv_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next frame from the relay as (opcode, payload); pings are answered on the way."""
        while True:
            while True:
                parsed = self._parse()
                if parsed is not None:
                    break
                await self._fill(timeout)
            opcode, payload = parsed
            if opcode == _PING:
                await asyncio.get_running_loop().sock_sendall(self.sock, frame(payload, _PONG))
                continue
            return opcode, payload

    def _parse(self) -> tuple[int, bytes] | None:
        data = self.buffer
        if len(data) < 2:
            return None
        opcode = data[0] & 0x0F
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 4:
                return None
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            if len(data) < 10:
                return None
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        if len(data) < offset + length:
            return None
        self.buffer = data[offset + length :]
        return opcode, data[offset : offset + length]

    async def recv_json(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next text frame as JSON; a close frame raises :class:`ConnectionError` with its code."""
        opcode, payload = await self.recv_frame(timeout)
        if opcode == _CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            raise ConnectionError(f"closed by the relay with {code}", code)
        return dict(json.loads(payload))

    async def response(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next response, skipping pushes."""
        while True:
            message = await self.recv_json(timeout)
            if "push" not in message:
                return message

    async def auth(self, device: Any, request_id: int = 1) -> None:
        """Send an ``auth`` proof for ``device`` (a tests.relay.conftest.Device); does not read."""
        transcript = proof_transcript(
            AUTH_LABEL, self.challenge, device.account, device.device_id, origin_of(self.url)
        )
        signature = base64.b64encode(device.identity.sign(transcript, device.rng)).decode()
        await self.send_json(
            id=request_id, op="auth", account=device.account, device_id=device.device_id, signature=signature
        )

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the relay has ended the TCP connection (EOF or reset), reading whatever is left."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), timeout)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def tcp_state(self) -> int:
        """This socket's TCP state (Linux ``tcp_info.tcpi_state``), read without reading any data."""
        return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]

    def close(self) -> None:
        self.sock.close()
