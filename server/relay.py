"""The relay: WebSocket connections, authentication, the prekey directory and message queues.

Theory
------
The relay stores and forwards opaque bytes.  It knows devices by (account, device id) and their
identity public keys, and checks signatures with the core's :meth:`e2e.keys.PublicKey.verify`: a
device's proof of possession of its identity key on each connection, its identity key's signatures
on the prekeys it uploads, and (for linked devices, :mod:`server.device_ops`) the primary's signed
device lists and a companion's account and device signatures.  It never holds a secret
of a client and never looks inside a message.

One connection is one :class:`_Connection`.  It starts unauthenticated with a fresh 32-byte
challenge pushed by the relay; the device proves possession of its identity key by signing the
challenge bound to its account, device id and the relay's origin (``register`` for the first time,
``auth`` afterwards).  One proof attempt is allowed per connection and only before
``Limits.auth_timeout``: a failed, replayed or stale proof closes the connection (4001, 4002).  A
successful proof makes the connection the device's only live one: every older connection of the
device, on this node or another, receives a DISPLACED wake-up through the store and closes with
4003.

Requests of one connection are read in order.  ``send`` and ``ack`` are *pipelined*: the reader
submits the store operation at once (the store commits submitted operations in order, many per
transaction) and answers when that operation's commit completes, so a client may have up to
``Limits.max_pipelined`` of them outstanding.  Every other operation is answered before the next
frame is read.  Responses carry the request id and may therefore overtake one another.

Delivery is at least once.  A per-connection delivery task pushes the device's queue in server-id
order, up to ``Limits.max_inflight`` unacknowledged messages, and sends ``queue_empty`` after each
drain; a message leaves the store only when its recipient acknowledges it, and anything
unacknowledged is pushed again on the next connection.  Nothing is acknowledged to a sender before
the store has durably committed it.

Every frame to a peer goes through one bounded queue and one writer task.  The queue is bounded
in frames (``Limits.max_outgoing_frames``) and, for pushed messages, in bytes
(``Limits.max_outgoing_bytes``).  While answers wait to be written the reader reads no further
request (backpressure through TCP), so a burst of requests is answered in full instead of
overflowing the queue.  A watchdog measures the writer's progress (frames written, bytes taken by
the peer): a connection that makes none for ``Limits.write_timeout`` is aborted at the TCP level
(logged as ``slow_consumer``), which releases its buffers at once; a close handshake would wait
forever behind data the peer never reads.  A slow reader therefore holds a bounded amount of the
relay's memory for a bounded time, and what it was pushed stays queued.  Incoming frames and bytes
are metered by token buckets; a peer over its rate is simply read later.

Logging records metadata only (connection number, address, device, op, sizes, ids, durations):
never a message body, key or signature.

What this module does not know
------------------------------
SQL (see :mod:`server.store`), ratchets, sessions or message formats.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover (not on Windows)
    fcntl = None  # type: ignore[assignment]
    termios = None  # type: ignore[assignment]

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from e2e.errors import DecodeError, InvalidSignatureError
from e2e.keys import PublicKey
from server import protocol as p
from server.blob_tokens import BlobTokens
from server.device_store import MailboxFullError, NotOnDeviceListError, StaleDeviceListError
from server.limits import Limits
from server.protocol import CloseCode, ErrorCode, ProtocolError, Request
from server.store import (
    ClaimedBundle,
    DeviceAddress,
    DeviceEvent,
    EnqueueResult,
    EventKind,
    IdentityMismatchError,
    KeyIdConflictError,
    MessageIdReusedError,
    NewMessage,
    OneTimeKind,
    PreKeyCounts,
    PreKeyRecord,
    PreKeyUpload,
    QueueFullError,
    SignedKind,
    Store,
    StoredMessage,
    StoreError,
    Subscription,
    TooManyDevicesError,
    UnknownAccountError,
    UnknownDeviceError,
    UnknownMessageError,
)

__all__ = ["Relay"]

_log = logging.getLogger("server.relay")

_MAX_KEY_ID = 2**32 - 1
_CURVE25519_P = 2**255 - 19
# Any X25519 private key does: a clamped scalar is a multiple of the cofactor 8, so its product with
# a point of order 1, 2, 4 or 8 is the identity, whose encoding, the all-zero shared secret, the
# library refuses.  A constant key keeps the relay free of hidden randomness.
_LOW_ORDER_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(32)))
_EC_PUBLIC_KEY_LENGTH = 33
_SIGNATURE_LENGTH = 64
_MAX_KEM_PUBLIC_KEY_LENGTH = 2048
# libsignal's Kyber1024 public key: the type byte 0x08, then 1568 bytes (its KyberPreKeyRecord).
_KYBER_TYPE = 0x08
_KYBER_PUBLIC_KEY_LENGTH = 1569
_MAX_CLIENT_ID = 64
_FETCH_BATCH = 64
# A message push without its body: field names, ids, names and the timestamp, generously.
_PUSH_OVERHEAD = 512

# Refusals that say the peer does not speak the protocol; only these count towards Limits.max_errors
# (a refused send to a full queue or a repeated acknowledgement is ordinary life).
_MALFORMED = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.BAD_REQUEST,
        ErrorCode.UNKNOWN_OP,
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.TOO_LARGE,
    }
)

# Which store error becomes which wire error.
_STORE_ERRORS: dict[type[StoreError], ErrorCode] = {
    IdentityMismatchError: ErrorCode.IDENTITY_MISMATCH,
    UnknownDeviceError: ErrorCode.UNKNOWN_DEVICE,
    UnknownAccountError: ErrorCode.UNKNOWN_ACCOUNT,
    KeyIdConflictError: ErrorCode.KEY_ID_CONFLICT,
    QueueFullError: ErrorCode.QUEUE_FULL,
    MessageIdReusedError: ErrorCode.MESSAGE_ID_REUSED,
    TooManyDevicesError: ErrorCode.TOO_MANY_DEVICES,
    UnknownMessageError: ErrorCode.UNKNOWN_MESSAGE,
    # Linked devices (server/device_store.py).
    NotOnDeviceListError: ErrorCode.NOT_LINKED,
    StaleDeviceListError: ErrorCode.STALE_DEVICE_LIST,
    MailboxFullError: ErrorCode.MAILBOX_FULL,
}


_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)
# The ioctl that reads how many bytes a socket's kernel send queue holds (Linux SIOCOUTQ); where it
# is missing the watchdog sees only the transport's own buffer.
_TIOCOUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if termios is not None else None


def _kernel_unsent(sock: Any) -> int:
    """Bytes in ``sock``'s kernel send queue not yet acknowledged by the peer (0 if unknown)."""
    if _TIOCOUTQ is None or sock is None or fcntl is None:
        return 0
    try:
        result = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", result)[0])


def _cork(sock: Any, on: bool) -> bool:
    """Hold (``on``) or release partial TCP segments (Linux ``TCP_CORK``); False where unsupported."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1 if on else 0)
    except (OSError, TypeError):
        return False
    return True


def _fields(**fields: object) -> str:
    return " ".join(f"{key}={value}" for key, value in fields.items())


def log_event(event: str, **fields: object) -> None:
    """One structured log line: ``event key=value ...`` (metadata only)."""
    if _log.isEnabledFor(logging.INFO):
        _log.info("%s %s", event, _fields(**fields))


class _TokenBucket:
    """A token bucket; :meth:`delay` says how long to wait before ``cost`` tokens are available."""

    __slots__ = ("_rate", "_capacity", "_tokens", "_stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate = rate
        self._capacity = capacity
        self._tokens = capacity
        self._stamp = now

    def take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens (going into debt if needed); returns the seconds until out of debt."""
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= cost
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def try_take(self, cost: float, now: float) -> float:
        """Take ``cost`` tokens only if available; else leave the bucket and return the seconds to wait."""
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self._rate


@dataclass(frozen=True, slots=True)
class _CloseAfter:
    """A marker in the outgoing queue: close the connection once everything before it is written."""

    code: CloseCode
    reason: str


_Handler = Callable[["_Connection", Request], Awaitable[None]]
_OPS: dict[str, tuple[_Handler, bool]] = {}


def _op(name: str, *, authenticated: bool = True) -> Callable[[_Handler], _Handler]:
    def register(handler: _Handler) -> _Handler:
        _OPS[name] = (handler, authenticated)
        return handler

    return register


class _Connection:
    """One WebSocket connection: its authentication state, writer, delivery and pipelined requests."""

    def __init__(self, relay: Relay, ws: ServerConnection, number: int, address: str) -> None:
        self.relay = relay
        self.ws = ws
        self.number = number
        self.address = address
        self.limits = relay.limits
        self.device: DeviceAddress | None = None
        self.identity_key: PublicKey | None = None
        self.epoch: int | None = None
        self.displaced_by = 0
        self.challenge = relay.rng(p.CHALLENGE_LENGTH)
        self.challenge_issued = relay.clock()
        self.proof_attempted = False
        self.closing = False
        self.errors = 0
        self.outgoing: collections.deque[str | _CloseAfter] = collections.deque()
        self.queued_chars = 0
        """Characters of the frames in ``outgoing``."""
        self.sending_chars = 0
        """Characters of the frame the writer is writing now (0 when it waits for work)."""
        self.written = 0
        """Frames written so far: the writer's progress, as the watchdog sees it."""
        self.writable = asyncio.Event()
        self.room = asyncio.Event()
        """Set when the backlog is short enough for the reader to read on (see :meth:`backlogged`)."""
        self.room.set()
        self.watchdog: asyncio.TimerHandle | None = None
        self.progress_at = 0.0
        self.last_buffered = 0
        self.last_written = 0
        self.wake = asyncio.Event()
        self.inflight: set[int] = set()
        self.window_full = False
        self.queue_full = False
        self.pipelined: set[asyncio.Future[Any]] = set()
        self.subscription: Subscription | None = None
        self.writer: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        loop_now = asyncio.get_running_loop().time()
        self.frames = _TokenBucket(self.limits.frame_rate, self.limits.frame_burst, loop_now)
        self.bytes = _TokenBucket(self.limits.byte_rate, self.limits.byte_burst, loop_now)

    def __repr__(self) -> str:
        return f"_Connection(#{self.number}, device={self.device})"

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a task that ends with the connection."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # Output.

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame for the writer; a peer that lets the queue overflow is disconnected."""
        if self.closing:
            return
        if len(self.outgoing) >= self.limits.max_outgoing_frames:
            log_event("slow_consumer", conn=self.number, device=self.device, queued=len(self.outgoing))
            self.abort(CloseCode.SLOW_CONSUMER, "outgoing queue overflow")
            return
        text = p.encode(frame)
        self.outgoing.append(text)
        self.queued_chars += len(text)
        if self.room.is_set() and self.backlogged():
            self.room.clear()
        self.writable.set()

    def backlog_chars(self) -> int:
        """Characters queued or being written: what this connection holds of the relay's memory."""
        return self.queued_chars + self.sending_chars

    def backlogged(self) -> bool:
        """Whether the reader must wait for the writer before it reads the next request.

        The delivery task keeps its pushes within half of ``max_outgoing_frames`` and within
        ``max_outgoing_bytes``; the reader stops at five eighths of the frames (or twice the
        bytes), and the answers of pipelined requests (at most ``max_pipelined``) fit in what is
        left.  So a client that reads what it is sent never overflows the queue however fast it
        writes: its requests wait in its own socket instead.
        """
        limits = self.limits
        return (
            len(self.outgoing) >= limits.max_outgoing_frames * 5 // 8
            or self.backlog_chars() >= 2 * limits.max_outgoing_bytes
        )

    def close_after_flush(self, code: CloseCode, reason: str) -> None:
        """Write everything queued so far, then close with ``code``."""
        if self.closing:
            return
        self.closing = True
        self.outgoing.append(_CloseAfter(code, reason))
        self.writable.set()
        self.room.set()

    def abort(self, code: CloseCode, reason: str) -> None:
        """Close with ``code`` now, dropping whatever is still queued."""
        if self.closing:
            return
        self.closing = True
        self.outgoing.clear()
        self.queued_chars = 0
        self.outgoing.append(_CloseAfter(code, reason))
        self.writable.set()
        self.wake.set()
        self.room.set()

    def abort_transport(self) -> None:
        """Drop the TCP connection now with a reset, and everything buffered for it (no close handshake).

        For a peer that does not read: a close frame would wait behind the unread data forever.
        The reader, the writer and the delivery task all see the connection closed and end; the
        messages pushed and not acknowledged stay queued for the device's next connection.
        """
        self.closing = True
        self.outgoing.clear()
        self.queued_chars = 0
        self.room.set()
        self.wake.set()
        self.writable.set()
        sock = self.ws.transport.get_extra_info("socket")
        if sock is not None:
            # Linger zero: closing sends a reset and discards the kernel's send queue.  Without it the
            # kernel would keep the unread data (and the connection, half-closed) until its own
            # timers give up, however long the peer keeps its window shut.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.ws.transport.abort()

    def unsent(self) -> int:
        """Bytes written to this connection that the peer has not yet acknowledged (as far as known)."""
        transport = self.ws.transport
        return transport.get_write_buffer_size() + _kernel_unsent(transport.get_extra_info("socket"))

    def arm_watchdog(self) -> None:
        """Start watching the writer's progress, if not watching already."""
        if self.watchdog is None:
            loop = asyncio.get_running_loop()
            self.progress_at = loop.time()
            self.last_buffered = self.unsent()
            self.last_written = self.written
            self.watchdog = loop.call_later(self.limits.write_timeout / 4, self._watch)

    def _watch(self) -> None:
        """Abort a connection that made no write progress for ``write_timeout``.

        Progress is a frame written, or fewer bytes waiting for the peer than at the last look,
        counting the transport's buffer and the kernel's send queue (the peer read something).  A
        reader draining slowly but steadily is never cut however long its backlog takes; one whose
        receive window stays shut is cut after ``write_timeout`` (plus at most a quarter of it, the
        period of this check).  The watch stops once the writer is idle and the transport has
        nothing buffered, and the writer starts it again with its next frame.
        """
        self.watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.ws.transport.get_write_buffer_size() == 0 and self.sending_chars == 0 and not self.outgoing:
            return
        buffered = self.unsent()
        if self.written != self.last_written or buffered < self.last_buffered:
            self.progress_at = now
        self.last_buffered = buffered
        self.last_written = self.written
        if now - self.progress_at >= self.limits.write_timeout:
            log_event(
                "slow_consumer",
                conn=self.number,
                device=self.device,
                stalled=self.limits.write_timeout,
                buffered=buffered + self.backlog_chars(),
            )
            self.abort_transport()
            return
        self.watchdog = loop.call_later(self.limits.write_timeout / 4, self._watch)

    async def write_loop(self) -> None:
        """Write queued frames in order; a watchdog cuts a peer that stops reading (see :meth:`_watch`)."""
        ws = self.ws
        outgoing = self.outgoing
        limits = self.limits
        sock = ws.transport.get_extra_info("socket") if _TCP_CORK is not None else None
        try:
            while True:
                await self.writable.wait()
                self.writable.clear()
                if not outgoing:
                    continue
                self.arm_watchdog()
                # Several frames at once (a push and the queue-empty marker, a burst of answers) leave
                # in as few TCP segments as they fit: on loopback and on virtual machines every
                # segment costs the relay a send and the peer a wake-up.
                corked = sock is not None and len(outgoing) > 1 and _cork(sock, True)
                try:
                    while outgoing:
                        item = outgoing.popleft()
                        if isinstance(item, _CloseAfter):
                            log_event("close", conn=self.number, device=self.device, code=int(item.code))
                            if corked:
                                _cork(sock, False)
                                corked = False
                            await ws.close(int(item.code), item.reason)
                            return
                        self.queued_chars -= len(item)
                        self.sending_chars = len(item)
                        await ws.send(item)
                        self.sending_chars = 0
                        self.written += 1
                        if (
                            not self.room.is_set()
                            and len(outgoing) <= limits.max_outgoing_frames // 2
                            and self.backlog_chars() < 2 * limits.max_outgoing_bytes
                        ):
                            self.room.set()
                        if (
                            self.queue_full
                            and len(outgoing) <= limits.max_outgoing_frames // 4
                            and self.backlog_chars() <= limits.max_outgoing_bytes // 2
                        ):
                            # Room in the queue again: the delivery task may push more.
                            self.queue_full = False
                            self.wake.set()
                finally:
                    if corked:
                        _cork(sock, False)
                if self.queue_full:
                    self.queue_full = False
                    self.wake.set()
        except ConnectionClosed:
            return
        finally:
            self.sending_chars = 0
            self.closing = True
            self.room.set()
            self.wake.set()

    def refuse(self, request_id: int | str | None, exc: ProtocolError) -> None:
        """Answer with an error; too many malformed requests close the connection (1008)."""
        if exc.code in _MALFORMED:
            self.errors += 1
        log_event("refused", conn=self.number, device=self.device, code=exc.code.value)
        self.send(p.error(request_id, exc.code, exc.message, **exc.details))
        if exc.close is not None:
            self.close_after_flush(exc.close, exc.close.name.lower().replace("_", " "))
        elif self.errors >= self.limits.max_errors:
            self.close_after_flush(CloseCode.POLICY_VIOLATION, "too many malformed requests")

    # Input.

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.writer = writer = asyncio.create_task(self.write_loop())
        self.send(
            p.push(
                "challenge",
                challenge=p.b64(self.challenge),
                origin=self.relay.origin,
                expires_in=self.limits.auth_timeout,
            )
        )
        timer = loop.call_later(self.limits.auth_timeout, self._auth_deadline)
        try:
            async for frame in self.ws:
                size = len(frame)
                now = loop.time()
                delay = max(self.frames.take(1, now), self.bytes.take(size, now))
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.on_frame(frame)
                if not self.room.is_set() and not self.closing:
                    # Backpressure: answers wait to be written, so read nothing more until they are.
                    # The unread requests stay in the socket, and TCP slows the peer down.
                    await self.room.wait()
                if self.closing:
                    break
        except ConnectionClosed:
            pass
        finally:
            timer.cancel()
            if self.subscription is not None:
                self.subscription.close()
            for task in self.tasks:
                task.cancel()
            if self.closing and not writer.done():
                # Let the writer flush and send the close frame it was asked for.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(writer), self.limits.close_timeout + 1)
            if not writer.done():
                # The peer does not read even its close frame: drop the TCP connection, whose
                # buffers would otherwise stay referenced until the peer chose to read.
                self.abort_transport()
            writer.cancel()
            for task in (writer, *self.tasks):
                with contextlib.suppress(BaseException):
                    await task
            if self.watchdog is not None:
                self.watchdog.cancel()
                self.watchdog = None
            self.outgoing.clear()
            self.queued_chars = 0

    def _auth_deadline(self) -> None:
        if self.device is None and not self.closing:
            log_event("auth_timeout", conn=self.number, address=self.address)
            self.abort(CloseCode.AUTH_TIMEOUT, "authentication timed out")

    async def on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self.refuse(None, ProtocolError(ErrorCode.BAD_FRAME, "frames are JSON text, not binary"))
            return
        try:
            request = p.parse_request(frame)
        except ProtocolError as exc:
            self.refuse(exc.details.pop("id", None), exc)
            return
        entry = _OPS.get(request.op)
        if entry is None:
            self.refuse(request.id, ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op {request.op[:64]!r}"))
            return
        handler, authenticated = entry
        if authenticated and self.device is None:
            self.refuse(request.id, ProtocolError(ErrorCode.UNAUTHENTICATED, "authenticate first"))
            return
        started = time.perf_counter()
        try:
            await handler(self, request)
        except ProtocolError as exc:
            self.refuse(request.id, exc)
        except StoreError as exc:
            self.refuse(request.id, _from_store_error(exc))
        except Exception:
            _log.exception("internal error conn=%s op=%s", self.number, request.op)
            self.send(p.error(request.id, ErrorCode.INTERNAL_ERROR, "internal error"))
        else:
            if request.op not in ("send", "ack") and _log.isEnabledFor(logging.INFO):
                log_event(
                    request.op,
                    conn=self.number,
                    device=self.device,
                    ms=f"{(time.perf_counter() - started) * 1000:.1f}",
                )

    def pipeline(
        self,
        request: Request,
        future: Awaitable[Any],
        on_result: Callable[[Any], dict[str, Any]],
    ) -> Awaitable[Any] | None:
        """Answer ``request`` when ``future`` completes; returns an awaitable if the pipeline is full."""
        fut = asyncio.ensure_future(future)
        self.pipelined.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self.pipelined.discard(f)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is None:
                self.send(on_result(f.result()))
            elif isinstance(exc, StoreError):
                self.refuse(request.id, _from_store_error(exc))
            else:
                _log.error("internal error conn=%s op=%s: %s", self.number, request.op, type(exc).__name__)
                self.send(p.error(request.id, ErrorCode.INTERNAL_ERROR, "internal error"))

        fut.add_done_callback(done)
        if len(self.pipelined) >= self.limits.max_pipelined:
            return asyncio.wait(set(self.pipelined), return_when=asyncio.FIRST_COMPLETED)
        return None

    # Authentication.

    def check_challenge(self) -> None:
        if self.device is not None:
            raise ProtocolError(ErrorCode.ALREADY_AUTHENTICATED, "this connection is already authenticated")
        if self.proof_attempted:
            raise ProtocolError(ErrorCode.BAD_PROOF, "one proof per connection")
        self.proof_attempted = True
        if self.relay.clock() - self.challenge_issued > self.limits.auth_timeout:
            raise ProtocolError(
                ErrorCode.CHALLENGE_EXPIRED,
                "the challenge is stale; reconnect for a new one",
                close=CloseCode.AUTH_TIMEOUT,
            )

    def fail_auth(self, code: ErrorCode, message: str) -> ProtocolError:
        log_event("auth_failed", conn=self.number, address=self.address, code=code.value)
        return ProtocolError(code, message, close=CloseCode.AUTH_FAILED)

    async def become(self, request: Request, device: DeviceAddress, identity_key: PublicKey) -> None:
        self.device = device
        self.identity_key = identity_key
        self.subscription = self.relay.store.subscribe(device, self.on_event)
        self.epoch = await self.relay.store.begin_connection(device, self.relay.clock())
        if self.displaced_by > self.epoch:
            self.abort(CloseCode.DISPLACED, "a newer connection of this device took over")
            return
        log_event("authenticated", conn=self.number, address=self.address, device=device, epoch=self.epoch)
        self.send(p.ok(request.id, account=device.account, device_id=device.device_id))
        self.wake.set()
        self.spawn(self.deliver())
        counts = await self.relay.store.prekey_counts(device)
        if SignedKind.EC in counts.signed_ids and _is_low(counts, self.limits.prekey_low_water):
            self.send(_prekeys_low(counts, self.limits.prekey_low_water))

    def on_event(self, event: DeviceEvent) -> None:
        if event.kind is EventKind.MESSAGES:
            self.wake.set()
        elif event.kind is EventKind.DISPLACED:
            self.displaced_by = max(self.displaced_by, event.epoch)
            if self.epoch is not None and event.epoch > self.epoch:
                log_event("displaced", conn=self.number, device=self.device, epoch=self.epoch)
                self.abort(CloseCode.DISPLACED, "a newer connection of this device took over")
        elif event.kind is EventKind.PREKEYS_LOW and self.device is not None:
            self.spawn(self.notify_prekeys_low())
        elif event.kind is EventKind.REMOVED:
            # The primary's new device list dropped this device (server/device_ops.py).
            log_event("device_removed", conn=self.number, device=self.device)
            self.abort(CloseCode.DEVICE_REMOVED, "this device was removed from its account")

    async def notify_prekeys_low(self) -> None:
        assert self.device is not None
        counts = await self.relay.store.prekey_counts(self.device)
        if _is_low(counts, self.limits.prekey_low_water):
            self.send(_prekeys_low(counts, self.limits.prekey_low_water))

    # Delivery.

    async def deliver(self) -> None:
        """Push the queue in order, at most ``max_inflight`` unacknowledged, then ``queue_empty``."""
        assert self.device is not None
        store = self.relay.store
        limits = self.limits
        cursor = 0
        first = True
        push_chars = _PUSH_OVERHEAD + 4 * ((limits.max_body_bytes + 2) // 3)
        while not self.closing:
            await self.wake.wait()
            self.wake.clear()
            pushed = 0
            drained = False
            while not self.closing:
                inflight_room = limits.max_inflight - len(self.inflight)
                queue_room = limits.max_outgoing_frames // 2 - len(self.outgoing)
                # The byte budget, in pushes as large as the largest of the last batch (at first, as
                # large as a push can be): a fetch overshoots it by at most one push.
                backlog = self.backlog_chars()
                byte_room = (limits.max_outgoing_bytes - backlog) // push_chars
                if not backlog:
                    # Always room for one, however small the budget against the largest push.
                    byte_room = max(byte_room, 1)
                queue_room = min(queue_room, byte_room)
                room = min(inflight_room, queue_room, _FETCH_BATCH)
                if room <= 0:
                    # Woken again by an acknowledgement or by the writer making room.
                    self.window_full = inflight_room <= 0
                    self.queue_full = queue_room <= 0
                    break
                try:
                    batch = await store.fetch(self.device, cursor, room, self.relay.clock())
                except StoreError as exc:
                    # Try again shortly; the messages stay queued meanwhile.
                    _log.error("fetch failed conn=%s: %s", self.number, exc)
                    await asyncio.sleep(1.0)
                    self.wake.set()
                    break
                fetched = len(batch)
                if batch:
                    push_chars = _PUSH_OVERHEAD + max(4 * ((len(m.body) + 2) // 3) for m in batch)
                for message in batch:
                    self.send(_message_push(message))
                    self.inflight.add(message.server_id)
                    cursor = message.server_id
                # The pushes hold the bodies now (as base64); the fetched copies are not kept while
                # this task waits, which would double what a slow reader holds.
                batch.clear()
                pushed += fetched
                if fetched < room:
                    drained = True
                    break
                # A long backlog: let other connections run between batches.
                await asyncio.sleep(0)
            if drained and (pushed or first):
                first = False
                self.send(p.push("queue_empty"))
            if pushed:
                log_event("pushed", conn=self.number, device=self.device, count=pushed, last=cursor)


def _from_store_error(exc: StoreError) -> ProtocolError:
    code = _STORE_ERRORS.get(type(exc), ErrorCode.INTERNAL_ERROR)
    if isinstance(exc, UnknownMessageError):
        return ProtocolError(code, str(exc), server_ids=list(exc.server_ids))
    if code is ErrorCode.INTERNAL_ERROR:
        _log.error("store failure: %s", exc)
        return ProtocolError(code, "storage failure")
    return ProtocolError(code, str(exc))


def _is_low(counts: PreKeyCounts, low_water: int) -> bool:
    ec_low = counts.one_time.get(OneTimeKind.EC, 0) < low_water
    kem_in_use = (
        SignedKind.KEM_LAST_RESORT in counts.signed_ids or counts.one_time.get(OneTimeKind.KEM, 0) > 0
    )
    kem_low = kem_in_use and counts.one_time.get(OneTimeKind.KEM, 0) < low_water
    kyber_in_use = (
        SignedKind.KYBER_LAST_RESORT in counts.signed_ids or counts.one_time.get(OneTimeKind.KYBER, 0) > 0
    )
    kyber_low = kyber_in_use and counts.one_time.get(OneTimeKind.KYBER, 0) < low_water
    return ec_low or kem_low or kyber_low


def _counts_fields(counts: PreKeyCounts) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "pre_keys": counts.one_time.get(OneTimeKind.EC, 0),
        "kem_pre_keys": counts.one_time.get(OneTimeKind.KEM, 0),
        "kyber_pre_keys": counts.one_time.get(OneTimeKind.KYBER, 0),
    }
    if SignedKind.EC in counts.signed_ids:
        fields["signed_pre_key_id"] = counts.signed_ids[SignedKind.EC]
    if SignedKind.KEM_LAST_RESORT in counts.signed_ids:
        fields["kem_last_resort_id"] = counts.signed_ids[SignedKind.KEM_LAST_RESORT]
    if SignedKind.KYBER_LAST_RESORT in counts.signed_ids:
        fields["kyber_last_resort_id"] = counts.signed_ids[SignedKind.KYBER_LAST_RESORT]
    return fields


def _prekeys_low(counts: PreKeyCounts, low_water: int) -> dict[str, Any]:
    return p.push("prekeys_low", low_water=low_water, **_counts_fields(counts))


def _message_push(message: StoredMessage) -> dict[str, Any]:
    return p.push(
        "message",
        server_id=message.server_id,
        sender={"account": message.sender.account, "device_id": message.sender.device_id},
        client_id=message.client_id,
        type=message.type,
        body=p.b64(message.body),
        timestamp=int(message.created_at * 1000),
        **({} if message.group_id is None else {"group_id": p.b64(message.group_id)}),
    )


def _signed_fields(record: PreKeyRecord) -> dict[str, Any]:
    assert record.signature is not None
    return {"id": record.key_id, "public_key": p.b64(record.public_key), "signature": p.b64(record.signature)}


def _bundle_fields(bundle: ClaimedBundle) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "account": bundle.device.account,
        "device_id": bundle.device.device_id,
        "registration_id": bundle.registration_id,
        "identity_key": p.b64(bundle.identity_key),
        "signed_pre_key": _signed_fields(bundle.signed[SignedKind.EC]),
    }
    pre_key = bundle.one_time.get(OneTimeKind.EC)
    if pre_key is not None:
        fields["pre_key"] = {"id": pre_key.key_id, "public_key": p.b64(pre_key.public_key)}
    kem = bundle.one_time.get(OneTimeKind.KEM)
    if kem is not None:
        fields["kem_pre_key"] = {**_signed_fields(kem), "last_resort": False}
    elif SignedKind.KEM_LAST_RESORT in bundle.signed:
        fields["kem_pre_key"] = {
            **_signed_fields(bundle.signed[SignedKind.KEM_LAST_RESORT]),
            "last_resort": True,
        }
    kyber = bundle.one_time.get(OneTimeKind.KYBER)
    if kyber is not None:
        fields["kyber_pre_key"] = {**_signed_fields(kyber), "last_resort": False}
    elif SignedKind.KYBER_LAST_RESORT in bundle.signed:
        fields["kyber_pre_key"] = {
            **_signed_fields(bundle.signed[SignedKind.KYBER_LAST_RESORT]),
            "last_resort": True,
        }
    return fields


def _ec_public_key(obj: dict[str, Any], name: str) -> bytes:
    """A Curve25519 public key in libsignal's encoding that can take part in a Diffie-Hellman.

    Beyond the encoding, the ``u`` coordinate must be canonical (below 2^255 - 19, top bit clear)
    and not of low order: a low-order key (all zeros is one) makes every X25519 with it all zeros
    (RFC 7748 §6.1), so a bundle carrying one would be refused by every client that fetches it, or
    worse, used by one that does not check.  The relay refuses it at upload instead.
    """
    data = p.field_bytes(obj, name, max_length=_EC_PUBLIC_KEY_LENGTH)
    try:
        key = PublicKey.deserialize(data)
    except DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_KEY, f"{name!r}: {exc}") from None
    u = key.raw
    if int.from_bytes(u, "little") >= _CURVE25519_P:
        raise ProtocolError(ErrorCode.INVALID_KEY, f"{name!r}: not a canonical Curve25519 encoding")
    try:
        _LOW_ORDER_PROBE.exchange(X25519PublicKey.from_public_bytes(u))
    except ValueError:
        raise ProtocolError(
            ErrorCode.INVALID_KEY, f"{name!r}: a low-order point (every Diffie-Hellman with it is all zeros)"
        ) from None
    return data


def _kyber_public_key(obj: dict[str, Any], where: str) -> bytes:
    """A Kyber1024 public key in libsignal's encoding: exactly ``0x08 ‖ 1568`` bytes.

    The relay checks only the framing (and, in :func:`_signed_record`, the owner's signature):
    whether the 1568 bytes are a valid key is for the client that encapsulates to it.
    """
    data = p.field_bytes(obj, "public_key", max_length=_MAX_KEM_PUBLIC_KEY_LENGTH)
    if len(data) != _KYBER_PUBLIC_KEY_LENGTH or data[0] != _KYBER_TYPE:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{where}: a Kyber1024 public key is {_KYBER_PUBLIC_KEY_LENGTH} bytes starting 0x08",
        )
    return data


def _signed_record(
    identity_key: PublicKey, obj: dict[str, Any], where: str, *, kem: bool, kyber: bool = False
) -> PreKeyRecord:
    key_id = p.field_int(obj, "id", low=0, high=_MAX_KEY_ID)
    if kyber:
        public_key = _kyber_public_key(obj, where)
    elif kem:
        public_key = p.field_bytes(obj, "public_key", max_length=_MAX_KEM_PUBLIC_KEY_LENGTH)
    else:
        public_key = _ec_public_key(obj, "public_key")
    signature = p.field_bytes(obj, "signature", max_length=_SIGNATURE_LENGTH, exact=_SIGNATURE_LENGTH)
    try:
        identity_key.verify(public_key, signature)
    except InvalidSignatureError:
        raise ProtocolError(
            ErrorCode.INVALID_SIGNATURE,
            f"{where} id {key_id}: the signature does not verify under this device's identity key",
        ) from None
    return PreKeyRecord(key_id, public_key, signature)


def _records(obj: dict[str, Any], name: str, limit: int) -> list[dict[str, Any]]:
    items = p.field_list(obj, name, optional=True) or []
    if len(items) > limit:
        raise ProtocolError(ErrorCode.TOO_MANY_KEYS, f"at most {limit} {name} per upload")
    for item in items:
        if not isinstance(item, dict):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"every entry of {name!r} must be an object")
    return items


def _unique_ids(records: list[PreKeyRecord], name: str) -> None:
    if len({r.key_id for r in records}) != len(records):
        raise ProtocolError(ErrorCode.KEY_ID_CONFLICT, f"{name} repeats a key id")


# Operations.


@_op("ping", authenticated=False)
async def _ping(conn: _Connection, request: Request) -> None:
    conn.send(p.ok(request.id))


@_op("register", authenticated=False)
async def _register(conn: _Connection, request: Request) -> None:
    fields = request.fields
    account = p.account_name(fields)
    device_id = p.device_id(fields)
    identity_bytes = _ec_public_key(fields, "identity_key")
    registration_id = p.field_int(fields, "registration_id", low=0, high=_MAX_KEY_ID)
    signature = p.field_bytes(fields, "signature", max_length=_SIGNATURE_LENGTH, exact=_SIGNATURE_LENGTH)
    conn.check_challenge()
    identity_key = PublicKey.deserialize(identity_bytes)
    transcript = p.proof_transcript(p.REGISTER_LABEL, conn.challenge, account, device_id, conn.relay.origin)
    try:
        identity_key.verify(transcript, signature)
    except InvalidSignatureError:
        raise conn.fail_auth(ErrorCode.BAD_PROOF, "the registration proof does not verify") from None
    device = DeviceAddress(account, device_id)
    try:
        created = await conn.relay.store.register_device(
            device,
            identity_bytes,
            registration_id,
            conn.relay.clock(),
            max_devices=conn.limits.max_devices_per_account,
        )
    except IdentityMismatchError:
        raise conn.fail_auth(
            ErrorCode.IDENTITY_MISMATCH, "this account is registered with a different identity key"
        ) from None
    except NotOnDeviceListError:
        raise conn.fail_auth(
            ErrorCode.NOT_LINKED,
            "a new companion registers with register_companion after its primary links it",
        ) from None
    except TooManyDevicesError:
        raise conn.fail_auth(
            ErrorCode.TOO_MANY_DEVICES,
            f"this account already has {conn.limits.max_devices_per_account} devices; reuse a device id",
        ) from None
    log_event("registered", conn=conn.number, device=device, created=created)
    await conn.become(request, device, identity_key)


@_op("auth", authenticated=False)
async def _auth(conn: _Connection, request: Request) -> None:
    fields = request.fields
    account = p.account_name(fields)
    device_id = p.device_id(fields)
    signature = p.field_bytes(fields, "signature", max_length=_SIGNATURE_LENGTH, exact=_SIGNATURE_LENGTH)
    conn.check_challenge()
    device = DeviceAddress(account, device_id)
    try:
        identity_bytes = await conn.relay.store.identity_key(device)
    except UnknownDeviceError:
        raise conn.fail_auth(ErrorCode.UNKNOWN_DEVICE, "no such device; register first") from None
    identity_key = PublicKey.deserialize(identity_bytes)
    transcript = p.proof_transcript(p.AUTH_LABEL, conn.challenge, account, device_id, conn.relay.origin)
    try:
        identity_key.verify(transcript, signature)
    except InvalidSignatureError:
        raise conn.fail_auth(ErrorCode.BAD_PROOF, "the proof does not verify") from None
    await conn.become(request, device, identity_key)


@_op("upload_prekeys")
async def _upload_prekeys(conn: _Connection, request: Request) -> None:
    assert conn.device is not None and conn.identity_key is not None
    fields = request.fields
    limit = conn.limits.max_keys_per_upload
    identity_key = conn.identity_key
    signed: dict[SignedKind, PreKeyRecord] = {}
    one_time: dict[OneTimeKind, list[PreKeyRecord]] = {}
    spk = p.field_object(fields, "signed_pre_key", optional=True)
    if spk is not None:
        signed[SignedKind.EC] = _signed_record(identity_key, spk, "signed_pre_key", kem=False)
    last_resort = p.field_object(fields, "kem_last_resort", optional=True)
    if last_resort is not None:
        signed[SignedKind.KEM_LAST_RESORT] = _signed_record(
            identity_key, last_resort, "kem_last_resort", kem=True
        )
    kyber_last_resort = p.field_object(fields, "kyber_last_resort", optional=True)
    if kyber_last_resort is not None:
        signed[SignedKind.KYBER_LAST_RESORT] = _signed_record(
            identity_key, kyber_last_resort, "kyber_last_resort", kem=True, kyber=True
        )
    pre_keys = []
    for item in _records(fields, "pre_keys", limit):
        key_id = p.field_int(item, "id", low=0, high=_MAX_KEY_ID)
        pre_keys.append(PreKeyRecord(key_id, _ec_public_key(item, "public_key")))
    kem_pre_keys = [
        _signed_record(identity_key, item, "kem_pre_keys", kem=True)
        for item in _records(fields, "kem_pre_keys", limit)
    ]
    kyber_pre_keys = [
        _signed_record(identity_key, item, "kyber_pre_keys", kem=True, kyber=True)
        for item in _records(fields, "kyber_pre_keys", limit)
    ]
    _unique_ids(pre_keys, "pre_keys")
    _unique_ids(kem_pre_keys, "kem_pre_keys")
    _unique_ids(kyber_pre_keys, "kyber_pre_keys")
    if pre_keys:
        one_time[OneTimeKind.EC] = pre_keys
    if kem_pre_keys:
        one_time[OneTimeKind.KEM] = kem_pre_keys
    if kyber_pre_keys:
        one_time[OneTimeKind.KYBER] = kyber_pre_keys
    upload = PreKeyUpload(signed=signed, one_time=one_time)
    counts = await conn.relay.store.put_prekeys(
        conn.device, upload, conn.relay.clock(), conn.limits.signed_prekey_grace
    )
    log_event(
        "prekeys_uploaded",
        conn=conn.number,
        device=conn.device,
        signed=",".join(k.value for k in signed) or "-",
        pre_keys=len(pre_keys),
        kem_pre_keys=len(kem_pre_keys),
        kyber_pre_keys=len(kyber_pre_keys),
    )
    conn.send(p.ok(request.id, **_counts_fields(counts)))


@_op("prekey_count")
async def _prekey_count(conn: _Connection, request: Request) -> None:
    assert conn.device is not None
    counts = await conn.relay.store.prekey_counts(conn.device)
    conn.send(p.ok(request.id, **_counts_fields(counts)))


@_op("get_bundle")
async def _get_bundle(conn: _Connection, request: Request) -> None:
    assert conn.device is not None
    fields = request.fields
    account = p.account_name(fields)
    device_id = p.device_id(fields, optional=True)
    wait = conn.relay.bundle_bucket(conn.device).try_take(1, asyncio.get_running_loop().time())
    if wait > 0:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED, "too many bundle fetches", retry_after=round(wait + 0.0005, 3)
        )
    bundles = await conn.relay.store.claim_bundles(account, device_id, conn.limits.prekey_low_water)
    if not bundles:
        raise ProtocolError(ErrorCode.NO_BUNDLE, "no device of this account has published a signed prekey")
    log_event(
        "bundle",
        conn=conn.number,
        device=conn.device,
        of=account,
        devices=len(bundles),
        one_time=sum(len(b.one_time) for b in bundles),
    )
    conn.send(p.ok(request.id, bundles=[_bundle_fields(b) for b in bundles]))


@_op("get_signed_pre_key")
async def _get_signed_pre_key(conn: _Connection, request: Request) -> None:
    fields = request.fields
    account = p.account_name(fields)
    device_id = p.device_id(fields)
    key_id = p.field_int(fields, "key_id", low=0, high=_MAX_KEY_ID)
    kind_name = p.field_str(fields, "kind", max_length=32, optional=True) or SignedKind.EC.value
    try:
        kind = SignedKind(kind_name)
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "kind must be 'ec', 'kem_last_resort' or 'kyber_last_resort'"
        ) from None
    record = await conn.relay.store.signed_prekey(
        DeviceAddress(account, device_id), kind, key_id, conn.relay.clock(), conn.limits.signed_prekey_grace
    )
    if record is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "no such signed prekey (or its grace period is over)")
    conn.send(p.ok(request.id, signed_pre_key=_signed_fields(record)))


@_op("send")
async def _send(conn: _Connection, request: Request) -> None:
    assert conn.device is not None
    fields = request.fields
    to = p.field_object(fields, "to")
    recipient_id = p.device_id(to)
    recipient = DeviceAddress(p.account_name(to), recipient_id)
    client_id = p.field_str(fields, "client_id", max_length=_MAX_CLIENT_ID)
    message_type = p.field_int(fields, "type", low=0, high=255)
    body = p.field_bytes(fields, "body", max_length=conn.limits.max_body_bytes)
    limits = conn.limits
    message = NewMessage(conn.device, recipient, client_id, message_type, body)
    started = time.perf_counter()
    future = conn.relay.store.enqueue(
        message, conn.relay.clock(), limits.message_ttl, limits.max_queue_messages, limits.max_queue_bytes
    )

    def answer(result: EnqueueResult) -> dict[str, Any]:
        if _log.isEnabledFor(logging.INFO):
            log_event(
                "send",
                conn=conn.number,
                device=conn.device,
                to=recipient,
                bytes=len(body),
                server_id=result.server_id,
                duplicate=result.duplicate,
                ms=f"{(time.perf_counter() - started) * 1000:.1f}",
            )
        return p.ok(request.id, server_id=result.server_id, duplicate=result.duplicate)

    wait = conn.pipeline(request, future, answer)
    if wait is not None:
        await wait


@_op("ack")
async def _ack(conn: _Connection, request: Request) -> None:
    assert conn.device is not None
    ids = p.field_list(request.fields, "server_ids")
    if not 0 < len(ids) <= conn.limits.max_ack_ids:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"server_ids must hold 1 to {conn.limits.max_ack_ids} ids")
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 < i < 2**63 for i in ids):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "server_ids must be positive integers")
    future = conn.relay.store.ack(conn.device, ids, conn.relay.clock())

    def answer(count: int) -> dict[str, Any]:
        conn.inflight.difference_update(ids)
        if conn.window_full:
            conn.window_full = False
            conn.wake.set()
        log_event("ack", conn=conn.number, device=conn.device, count=count)
        return p.ok(request.id, acked=count)

    wait = conn.pipeline(request, future, answer)
    if wait is not None:
        await wait


@_op("blob_upload_token")
async def _blob_upload_token(conn: _Connection, request: Request) -> None:
    # An upload token for the blob service (server/blob_tokens.py), issued only over an
    # authenticated connection and naming its device.
    assert conn.device is not None
    tokens = conn.relay.blob_tokens
    if tokens is None:
        raise ProtocolError(ErrorCode.NOT_FOUND, "this relay has no blob service")
    token, expires = tokens.issue(conn.device.account, conn.device.device_id)
    log_event("blob_upload_token", conn=conn.number, device=conn.device)
    conn.send(p.ok(request.id, token=token, url=tokens.url, expires=expires))


class Relay:
    """A relay on one ``store``: ``await start(host, port)``, serve, ``await close()``.

    ``origin`` is the name proofs are bound to (default ``ws://host:port`` as bound); clients sign
    over the origin they dialled, so it must match what they use.  It is kept in canonical form
    (:func:`server.protocol.canonical_origin`; ValueError for a URL that cannot be an origin).
    ``clock`` (seconds since the epoch) and ``rng`` are parameters so tests can move time and the
    relay draws no hidden state.
    """

    def __init__(
        self,
        store: Store,
        limits: Limits | None = None,
        *,
        origin: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.clock = clock
        self.rng = rng
        self._origin = p.canonical_origin(origin) if origin is not None else None
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._numbers = itertools.count(1)
        self._per_address: dict[str, int] = {}
        self._bundle_buckets: dict[DeviceAddress, _TokenBucket] = {}
        self.blob_tokens: BlobTokens | None = None
        """Set to issue blob upload tokens (op ``blob_upload_token``); None answers ``not_found``."""
        # Business-name certificates (server/business_names.py): the board and its two ops.
        self.business_names = BusinessNameBoard()
        self.host = ""
        self.port = 0

    def __repr__(self) -> str:
        return f"Relay(origin={self._origin!r}, store={self.store!r})"

    @property
    def origin(self) -> str:
        if self._origin is None:
            raise RuntimeError("the relay is not started")
        return self._origin

    @property
    def url(self) -> str:
        """The ``ws://`` URL a local client can dial."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    def bundle_bucket(self, device: DeviceAddress) -> _TokenBucket:
        bucket = self._bundle_buckets.get(device)
        if bucket is None:
            if len(self._bundle_buckets) > 100_000:
                self._bundle_buckets.clear()
            bucket = _TokenBucket(
                self.limits.bundle_rate, self.limits.bundle_burst, asyncio.get_running_loop().time()
            )
            self._bundle_buckets[device] = bucket
        return bucket

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Open the store and listen; ``port`` 0 picks a free port (see :attr:`port`)."""
        await self.store.open()
        limits = self.limits
        try:
            self._server = await serve(
                self._handle,
                host,
                port,
                compression=None,
                max_size=limits.max_frame_bytes,
                open_timeout=limits.open_timeout,
                ping_interval=limits.ping_interval,
                ping_timeout=limits.ping_timeout,
                close_timeout=limits.close_timeout,
                server_header=None,
            )
        except BaseException:
            # Nothing listens (the port is taken, the address is not ours): leave nothing open.
            await self.store.close()
            raise
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        if self._origin is None:
            self._origin = self.url
        self._sweeper = asyncio.create_task(self._sweep())
        log_event("listening", url=self.url, origin=self._origin)

    async def close(self) -> None:
        """Stop accepting, close every connection (1001), finish pending commits, close the store."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        await self.store.close()
        log_event("stopped")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            try:
                removed = await self.store.expire(self.clock())
            except StoreError as exc:
                _log.error("expiry sweep failed: %s", exc)
                continue
            if removed:
                log_event("expired", count=removed)

    async def _handle(self, ws: ServerConnection) -> None:
        remote = ws.remote_address
        address = str(remote[0]) if remote else "-"
        number = next(self._numbers)
        if self._per_address.get(address, 0) >= self.limits.max_connections_per_address:
            log_event("refused_connection", conn=number, address=address, reason="per-address limit")
            await ws.close(int(CloseCode.TRY_AGAIN_LATER), "too many connections from this address")
            return
        self._per_address[address] = self._per_address.get(address, 0) + 1
        log_event("connected", conn=number, address=address)
        started = time.perf_counter()
        conn = _Connection(self, ws, number, address)
        try:
            await conn.run()
        finally:
            remaining = self._per_address[address] - 1
            if remaining:
                self._per_address[address] = remaining
            else:
                del self._per_address[address]
            log_event(
                "disconnected",
                conn=number,
                device=conn.device,
                code=ws.close_code,
                seconds=f"{time.perf_counter() - started:.1f}",
            )


# The group operations live in their own module; importing it registers them beside the ones above.
# The linked-device operations join the table above (docs/devices.md).
from server import device_ops  # noqa: E402, F401
from server import group_ops as _group_ops  # noqa: E402, F401

# Business names: the board's ops register themselves in _OPS (server/business_names.py).
from server.business_names import BusinessNameBoard  # noqa: E402
