"""The client half of the relay protocol: one authenticated WebSocket connection to a relay.

Theory
------
A :class:`Connection` is a thin layer over one WebSocket speaking ``docs/relay-protocol.md``.
It owns framing and correlation and nothing else: every request gets a fresh integer id, the
matching response resolves the request's future (responses may arrive in any order), and every
unrequested frame becomes a typed push (:class:`IncomingMessage`, :class:`QueueEmpty`,
:class:`PreKeysLow`) that :meth:`Connection.pushes` yields in arrival order.

Authentication proves possession of the identity key without revealing it: the relay pushes a
fresh 32-byte challenge when the connection opens, and the device signs (XEdDSA, through
:meth:`e2e.keys.KeyPair.sign`) a transcript binding that challenge to its account, its device id
and the relay origin *the client dialled* (:func:`proof_transcript`).  A proof made for one
connection or one relay is therefore useless on any other.

Requests are written the moment they are made.  :meth:`Connection.send` and
:meth:`Connection.submit` return a future without awaiting the network, so a caller that submits
sends one after another has them committed by the relay in that order while many are in flight.

Everything the relay pushes is checked before it is handed on: a message push whose sender is
not an account name by the relay's own rules, whose device id is out of range or whose client id
is not 1 to 64 characters is a protocol violation, like malformed JSON.

Failures are typed: :class:`RelayError` for a refused request (its ``code`` is the protocol's
error code), :class:`ConnectionLost` when the connection ends (every pending request fails with it
and the push iterator ends), :class:`TransportError` at the root.

What this module does not know
------------------------------
Sessions, ratchets, the local store, reconnection policy or deduplication: that is
:mod:`client.client`'s business.  Delivery is at least once, so the same
:class:`IncomingMessage` may arrive again on a later connection until it is acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from client.names import check_account_name, check_device_id
from e2e.kem import KemPublicKey
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.kyber import KyberPublicKey
from e2e.x3dh import PreKeyBundle

__all__ = [
    "PROTOCOL_VERSION",
    "AUTH_LABEL",
    "REGISTER_LABEL",
    "TransportError",
    "ConnectionLost",
    "RelayError",
    "IncomingMessage",
    "QueueEmpty",
    "PreKeysLow",
    "Push",
    "PreKeyCounts",
    "SendResult",
    "SignedKey",
    "proof_transcript",
    "origin_of",
    "Connection",
    "connect",
]

PROTOCOL_VERSION = 1
AUTH_LABEL = b"e2e-relay auth v1"
REGISTER_LABEL = b"e2e-relay register v1"
_CHALLENGE_LENGTH = 32
_DEFAULT_MAX_SIZE = 1024 * 1024
_RESERVED = frozenset(("v", "id", "op"))
_A = TypeVar("_A")
_B = TypeVar("_B")


class TransportError(Exception):
    """The root of every failure of a relay connection."""


class ConnectionLost(TransportError):
    """The connection closed (or never opened); ``code`` and ``reason`` are the close frame's, if any."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message if code is None else f"{message} (close code {code}: {reason or '-'})")
        self.code = code
        self.reason = reason


class RelayError(TransportError):
    """The relay refused a request; ``code`` is the protocol's error code (e.g. ``"queue_full"``)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A queued message pushed by the relay; acknowledge ``server_id`` once it is safely processed."""

    server_id: int
    sender: str
    sender_device: int
    client_id: str
    type: int
    body: bytes
    timestamp: int
    """Milliseconds since the epoch when the relay accepted the message."""
    group_id: bytes | None = None
    """The group the relay fanned this message out to (None for a 1:1 message)."""

    def __repr__(self) -> str:
        return (
            f"IncomingMessage(server_id={self.server_id}, sender={self.sender}/{self.sender_device}, "
            f"client_id={self.client_id!r}, type={self.type}, body=<{len(self.body)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class QueueEmpty:
    """Everything queued for this device so far has been pushed on this connection."""


@dataclass(frozen=True, slots=True)
class PreKeysLow:
    """The relay's stock of this device's one-time prekeys fell below ``low_water``."""

    pre_keys: int
    kem_pre_keys: int
    low_water: int
    kyber_pre_keys: int = 0


Push = IncomingMessage | QueueEmpty | PreKeysLow


@dataclass(frozen=True, slots=True)
class PreKeyCounts:
    """What the relay holds for this device: unclaimed one-time prekeys and current signed key ids."""

    pre_keys: int
    kem_pre_keys: int
    signed_pre_key_id: int | None
    kem_last_resort_id: int | None
    kyber_pre_keys: int = 0
    kyber_last_resort_id: int | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """The relay's id for a committed message; ``duplicate`` when this client id was already sent."""

    server_id: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class SignedKey:
    """A signed prekey as the relay returns it: id, encoded public key, signature."""

    key_id: int
    public_key: bytes
    signature: bytes


def proof_transcript(label: bytes, challenge: bytes, account: str, device_id: int, origin: str) -> bytes:
    """The bytes signed to prove possession of an identity key (docs/relay-protocol.md, "Proofs").

    ``label ‖ 0x00 ‖ challenge ‖ u16 len ‖ account ‖ u32 device id ‖ u16 len ‖ origin``, big-endian.
    """
    account_bytes = account.encode("utf-8")
    origin_bytes = origin.encode("utf-8")
    return (
        label
        + b"\x00"
        + challenge
        + len(account_bytes).to_bytes(2, "big")
        + account_bytes
        + device_id.to_bytes(4, "big")
        + len(origin_bytes).to_bytes(2, "big")
        + origin_bytes
    )


def origin_of(url: str) -> str:
    """The relay origin a URL names: ``scheme://host:port`` with the port always written out."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TransportError(f"not a ws:// or wss:// URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise TransportError(f"the relay sent a malformed {what}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TransportError(f"the relay sent malformed base64 in {what}") from None


def _signed_key(obj: Any, what: str) -> SignedKey:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), int):
        raise TransportError(f"the relay sent a malformed {what}")
    return SignedKey(obj["id"], _unb64(obj.get("public_key"), what), _unb64(obj.get("signature"), what))


def _client_id(value: Any) -> str:
    """A pushed message's ``client_id``: 1 to 64 characters, as the relay accepts them, all encodable."""
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise ValueError("a client id is a string of 1 to 64 characters")
    value.encode("utf-8")  # A lone surrogate raises UnicodeEncodeError, a ValueError.
    return value


def _key_bytes(key: PublicKey | KemPublicKey | KyberPublicKey | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.serialize()


def _signed_entry(
    entry: tuple[int, PublicKey | KemPublicKey | KyberPublicKey | bytes, bytes],
) -> dict[str, Any]:
    key_id, key, signature = entry
    return {"id": key_id, "public_key": _b64(_key_bytes(key)), "signature": _b64(signature)}


def _then(source: asyncio.Future[_A], convert: Callable[[_A], _B]) -> asyncio.Future[_B]:
    """A future resolving to ``convert(source's result)``, or failing as ``source`` fails."""
    result: asyncio.Future[_B] = asyncio.get_running_loop().create_future()

    def done(f: asyncio.Future[_A]) -> None:
        if result.done():
            return
        if f.cancelled():
            result.cancel()
        elif (exc := f.exception()) is not None:
            result.set_exception(exc)
        else:
            result.set_result(convert(f.result()))

    source.add_done_callback(done)
    return result


class Connection:
    """One WebSocket connection to a relay; see the module docstring.

    Open one with :func:`connect` (authenticated) or :meth:`open` (not yet authenticated, for
    callers that drive ``register``/``authenticate`` themselves).
    """

    def __init__(self, ws: ClientConnection, origin: str) -> None:
        self._ws = ws
        self.origin = origin
        """The origin this client signs its proofs for (what it dialled)."""
        self.relay_origin = ""
        """The origin the relay announced in its challenge."""
        self.challenge = b""
        self.account: str | None = None
        self.device_id: int | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pushes: asyncio.Queue[Push | None] = asyncio.Queue()
        self._challenge_received: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost: ConnectionLost | None = None
        self._outgoing: collections.deque[tuple[str, asyncio.Future[dict[str, Any]]]] = collections.deque()
        self._writable = asyncio.Event()
        self._writer = asyncio.create_task(self._write_loop())
        self._reader = asyncio.create_task(self._read_loop())

    def __repr__(self) -> str:
        return f"Connection(origin={self.origin!r}, account={self.account!r}, device_id={self.device_id})"

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        origin: str | None = None,
        open_timeout: float = 10.0,
        max_size: int = _DEFAULT_MAX_SIZE,
    ) -> Connection:
        """Connect and wait for the relay's challenge; the connection is not yet authenticated."""
        expected_origin = origin or origin_of(url)
        try:
            ws = await ws_connect(
                url,
                compression=None,
                open_timeout=open_timeout,
                max_size=max_size,
                proxy=None,
                user_agent_header=None,
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise ConnectionLost(f"cannot connect to {url}: {exc}") from exc
        connection = cls(ws, expected_origin)
        try:
            await asyncio.wait_for(asyncio.shield(connection._challenge_received), open_timeout)
        except TimeoutError:
            await connection.close()
            raise ConnectionLost("the relay sent no challenge") from None
        except BaseException:
            await connection.close()
            raise
        return connection

    # Reading.

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if isinstance(frame, bytes):
                    raise TransportError("the relay sent a binary frame")
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        except TransportError as exc:
            self._lost = ConnectionLost(f"protocol violation by the relay: {exc}")
            await self._ws.close(1002, "protocol error")
        finally:
            if self._lost is None:
                self._lost = ConnectionLost(
                    "the connection to the relay closed", self._ws.close_code, self._ws.close_reason or ""
                )
            lost = self._lost
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()
            self._outgoing.clear()
            self._writer.cancel()
            if not self._challenge_received.done():
                self._challenge_received.set_exception(lost)
            self._pushes.put_nowait(None)

    def _dispatch(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            raise TransportError("a frame that is not JSON") from None
        if not isinstance(frame, dict) or frame.get("v") != PROTOCOL_VERSION:
            raise TransportError("a frame of an unknown version")
        if "push" in frame:
            self._on_push(frame)
            return
        request_id = frame.get("id")
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is None:
            if frame.get("ok") is False:
                # A refusal of something that had no usable id (a garbled frame): nothing waits for it.
                return
            raise TransportError("a response to no request")
        if future.done():
            return
        if frame.get("ok") is True:
            future.set_result(frame)
        else:
            error = frame.get("error")
            if not isinstance(error, dict):
                error = {}
            details = {k: v for k, v in error.items() if k not in ("code", "message")}
            future.set_exception(
                RelayError(str(error.get("code", "unknown")), str(error.get("message", "")), details)
            )

    def _on_push(self, frame: dict[str, Any]) -> None:
        kind = frame["push"]
        if kind == "challenge":
            challenge = _unb64(frame.get("challenge"), "challenge")
            if len(challenge) != _CHALLENGE_LENGTH:
                raise TransportError("a challenge of the wrong length")
            self.challenge = challenge
            self.relay_origin = str(frame.get("origin", ""))
            if not self._challenge_received.done():
                self._challenge_received.set_result(None)
        elif kind == "message":
            sender = frame.get("sender")
            if not isinstance(sender, dict):
                raise TransportError("a message push without a sender")
            try:
                message = IncomingMessage(
                    server_id=int(frame["server_id"]),
                    sender=check_account_name(sender["account"]),
                    sender_device=check_device_id(sender["device_id"]),
                    client_id=_client_id(frame["client_id"]),
                    type=int(frame["type"]),
                    body=_unb64(frame.get("body"), "message body"),
                    timestamp=int(frame["timestamp"]),
                    group_id=None if frame.get("group_id") is None else _unb64(frame["group_id"], "group id"),
                )
            except (KeyError, TypeError, ValueError):
                # (InvalidInputError is a ValueError: a sender name or device id outside the
                # relay's own rules, which no honest relay sends.)
                raise TransportError("a malformed message push") from None
            self._pushes.put_nowait(message)
        elif kind == "queue_empty":
            self._pushes.put_nowait(QueueEmpty())
        elif kind == "prekeys_low":
            self._pushes.put_nowait(
                PreKeysLow(
                    int(frame.get("pre_keys", 0)),
                    int(frame.get("kem_pre_keys", 0)),
                    int(frame.get("low_water", 0)),
                    int(frame.get("kyber_pre_keys", 0)),
                )
            )
        # Unknown pushes are ignored, as unknown fields are: a newer relay may send more.

    async def pushes(self) -> AsyncIterator[Push]:
        """The relay's pushes in arrival order; ends when the connection closes.  One consumer only."""
        while True:
            item = await self._pushes.get()
            if item is None:
                self._pushes.put_nowait(None)
                return
            yield item

    # Writing.

    def submit(self, op: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """Write a request now; the future resolves to the success response or raises."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            future.set_exception(self._lost)
            return future
        if not _RESERVED.isdisjoint(fields):
            raise ValueError(f"request fields may not be named {sorted(_RESERVED & fields.keys())}")
        request_id = next(self._ids)
        frame = {"v": PROTOCOL_VERSION, "id": request_id, "op": op, **fields}
        self._pending[request_id] = future
        self._write(json.dumps(frame, separators=(",", ":")), future)
        return future

    def _write(self, text: str, future: asyncio.Future[dict[str, Any]]) -> None:
        # One writer task sends the frames in the order of these calls.
        self._outgoing.append((text, future))
        self._writable.set()

    async def _write_loop(self) -> None:
        while True:
            await self._writable.wait()
            self._writable.clear()
            while self._outgoing:
                text, future = self._outgoing.popleft()
                try:
                    await self._ws.send(text)
                except ConnectionClosed:
                    lost = self._lost or ConnectionLost("the connection closed", self._ws.close_code)
                    for _, waiting in [(text, future), *self._outgoing]:
                        if not waiting.done():
                            waiting.set_exception(lost)
                    self._outgoing.clear()
                    return

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its response (raises :class:`RelayError` on refusal)."""
        return await self.submit(op, **fields)

    async def send_frame(self, data: str | bytes) -> None:
        """Write raw bytes or text as one frame (for tests of the relay's input handling)."""
        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise ConnectionLost("the connection to the relay closed", self._ws.close_code) from exc

    async def close(self) -> None:
        """Close the connection (1000) and wait for the reader to finish."""
        with contextlib.suppress(Exception):
            await self._ws.close()
        with contextlib.suppress(BaseException):
            await self._reader
        self._writer.cancel()
        with contextlib.suppress(BaseException):
            await self._writer

    async def wait_closed(self) -> ConnectionLost:
        """Wait until the relay closes the connection; returns how it ended."""
        with contextlib.suppress(BaseException):
            await self._reader
        assert self._lost is not None
        return self._lost

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    # Authentication.

    async def register(
        self, account: str, device_id: int, identity_key: KeyPair, registration_id: int, rng: Rng = os.urandom
    ) -> None:
        """Register (or re-register) this device with its identity key; authenticates the connection."""
        transcript = proof_transcript(REGISTER_LABEL, self.challenge, account, device_id, self.origin)
        await self.request(
            "register",
            account=account,
            device_id=device_id,
            identity_key=_b64(identity_key.public_key.serialize()),
            registration_id=registration_id,
            signature=_b64(identity_key.sign(transcript, rng)),
        )
        self.account, self.device_id = account, device_id

    async def authenticate(
        self, account: str, device_id: int, identity_key: KeyPair, rng: Rng = os.urandom
    ) -> None:
        """Prove possession of a registered device's identity key on this connection."""
        transcript = proof_transcript(AUTH_LABEL, self.challenge, account, device_id, self.origin)
        await self.request(
            "auth", account=account, device_id=device_id, signature=_b64(identity_key.sign(transcript, rng))
        )
        self.account, self.device_id = account, device_id

    # Prekeys.

    async def upload_prekeys(
        self,
        *,
        signed_pre_key: tuple[int, PublicKey, bytes] | None = None,
        one_time_pre_keys: Iterable[tuple[int, PublicKey]] = (),
        kem_pre_keys: Iterable[tuple[int, KemPublicKey | bytes, bytes]] = (),
        kem_last_resort: tuple[int, KemPublicKey | bytes, bytes] | None = None,
        kyber_pre_keys: Iterable[tuple[int, KyberPublicKey | bytes, bytes]] = (),
        kyber_last_resort: tuple[int, KyberPublicKey | bytes, bytes] | None = None,
    ) -> PreKeyCounts:
        """Upload a signed prekey (rotating the current one), one-time prekeys and KEM prekeys.

        At most 100 one-time prekeys of each kind per call.  Signatures are the identity key's over
        each key's encoding (``0x05 ‖ key`` for Curve25519, ``0x0A ‖ key`` for ML-KEM-1024,
        ``0x08 ‖ key`` for Kyber1024, the KEM of Signal's PQXDH and message version 4).
        """
        fields: dict[str, Any] = {}
        if signed_pre_key is not None:
            fields["signed_pre_key"] = _signed_entry(signed_pre_key)
        pre_keys = [{"id": key_id, "public_key": _b64(key.serialize())} for key_id, key in one_time_pre_keys]
        if pre_keys:
            fields["pre_keys"] = pre_keys
        kem = [_signed_entry(entry) for entry in kem_pre_keys]
        if kem:
            fields["kem_pre_keys"] = kem
        if kem_last_resort is not None:
            fields["kem_last_resort"] = _signed_entry(kem_last_resort)
        kyber = [_signed_entry(entry) for entry in kyber_pre_keys]
        if kyber:
            fields["kyber_pre_keys"] = kyber
        if kyber_last_resort is not None:
            fields["kyber_last_resort"] = _signed_entry(kyber_last_resort)
        return self._counts(await self.request("upload_prekeys", **fields))

    @staticmethod
    def _counts(response: dict[str, Any]) -> PreKeyCounts:
        return PreKeyCounts(
            pre_keys=int(response.get("pre_keys", 0)),
            kem_pre_keys=int(response.get("kem_pre_keys", 0)),
            signed_pre_key_id=response.get("signed_pre_key_id"),
            kem_last_resort_id=response.get("kem_last_resort_id"),
            kyber_pre_keys=int(response.get("kyber_pre_keys", 0)),
            kyber_last_resort_id=response.get("kyber_last_resort_id"),
        )

    async def prekey_counts(self) -> PreKeyCounts:
        """How many unclaimed prekeys the relay holds for this device."""
        return self._counts(await self.request("prekey_count"))

    async def prekey_count(self) -> int:
        """How many unclaimed one-time Curve25519 prekeys the relay holds for this device."""
        return (await self.prekey_counts()).pre_keys

    async def fetch_bundles(
        self, account: str, device_id: int | None = None, *, kyber: bool = True
    ) -> list[PreKeyBundle]:
        """Claim a bundle for one device of ``account``, or for every device when ``device_id`` is None.

        Each bundle holds a one-time prekey that no other fetch receives (absent when the device had
        none left) and, if the device published any, a KEM prekey: its Kyber1024 prekey (Signal's
        PQXDH, a version-4 session) when it published one and ``kyber`` is true, else its ML-KEM
        prekey (the project's PQXDH, version 3).  Signatures are not checked here:
        :meth:`e2e.x3dh.PreKeyBundle.verify` does that where the session starts.
        """
        fields: dict[str, Any] = {"account": account}
        if device_id is not None:
            fields["device_id"] = device_id
        response = await self.request("get_bundle", **fields)
        bundles = response.get("bundles")
        if not isinstance(bundles, list):
            raise TransportError("the relay sent a malformed bundle list")
        return [self._bundle(b, kyber) for b in bundles]

    async def fetch_bundle(self, account: str, device_id: int, *, kyber: bool = True) -> PreKeyBundle:
        """Claim a bundle for one device; see :meth:`fetch_bundles`."""
        bundles = await self.fetch_bundles(account, device_id, kyber=kyber)
        if len(bundles) != 1:
            raise TransportError("the relay sent the wrong number of bundles")
        return bundles[0]

    @staticmethod
    def _bundle(obj: Any, kyber: bool = True) -> PreKeyBundle:
        if not isinstance(obj, dict):
            raise TransportError("the relay sent a malformed bundle")
        try:
            signed = _signed_key(obj.get("signed_pre_key"), "signed prekey")
            fields: dict[str, Any] = {
                "registration_id": int(obj["registration_id"]),
                "device_id": int(obj["device_id"]),
                "identity_key": PublicKey.deserialize(_unb64(obj.get("identity_key"), "identity key")),
                "signed_pre_key_id": signed.key_id,
                "signed_pre_key": PublicKey.deserialize(signed.public_key),
                "signed_pre_key_signature": signed.signature,
            }
            pre_key = obj.get("pre_key")
            if pre_key is not None:
                fields["pre_key_id"] = int(pre_key["id"])
                fields["pre_key"] = PublicKey.deserialize(_unb64(pre_key.get("public_key"), "prekey"))
            kem = obj.get("kem_pre_key")
            kyber_pre_key = obj.get("kyber_pre_key") if kyber else None
            if kyber_pre_key is not None:
                kyber_key = _signed_key(kyber_pre_key, "Kyber prekey")
                fields["kem_pre_key_id"] = kyber_key.key_id
                fields["kem_pre_key"] = KyberPublicKey.deserialize(kyber_key.public_key)
                fields["kem_pre_key_signature"] = kyber_key.signature
            elif kem is not None:
                kem_key = _signed_key(kem, "KEM prekey")
                fields["kem_pre_key_id"] = kem_key.key_id
                fields["kem_pre_key"] = KemPublicKey.deserialize(kem_key.public_key)
                fields["kem_pre_key_signature"] = kem_key.signature
            return PreKeyBundle(**fields)
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"the relay sent a malformed bundle: {exc}") from None

    async def get_signed_pre_key(
        self, account: str, device_id: int, key_id: int, kind: str = "ec"
    ) -> SignedKey:
        """A device's current signed prekey, or a rotated-out one still in its grace period."""
        response = await self.request(
            "get_signed_pre_key", account=account, device_id=device_id, key_id=key_id, kind=kind
        )
        return _signed_key(response.get("signed_pre_key"), "signed prekey")

    # Messages.

    def send_message(
        self, recipient: str, recipient_device: int, client_id: str, message_type: int, body: bytes
    ) -> asyncio.Future[SendResult]:
        """Write a send request now; resolves once the relay has durably committed the message."""
        response = self.submit(
            "send",
            to={"account": recipient, "device_id": recipient_device},
            client_id=client_id,
            type=message_type,
            body=_b64(body),
        )
        return _then(
            response, lambda frame: SendResult(int(frame["server_id"]), bool(frame.get("duplicate")))
        )

    def send(
        self, recipient: str, recipient_device: int, client_id: str, message_type: int, body: bytes
    ) -> asyncio.Future[int]:
        """Like :meth:`send_message`, resolving to the server id alone."""
        sent = self.send_message(recipient, recipient_device, client_id, message_type, body)
        return _then(sent, lambda result: result.server_id)

    async def ack(self, server_ids: Iterable[int]) -> int:
        """Tell the relay these messages are processed; it deletes them (all or none)."""
        response = await self.request("ack", server_ids=list(server_ids))
        return int(response.get("acked", 0))

    async def ping(self) -> None:
        """A round trip through the relay's request handling."""
        await self.request("ping")

    # Groups (docs/relay-protocol.md, "Groups").

    async def group_change(self, op: str, change: bytes) -> int:
        """Publish a signed membership change with ``op`` (``group_create``, ``group_add``,
        ``group_remove``, ``group_leave``); returns how many devices the relay queued it for."""
        response = await self.request(op, change=_b64(change))
        return int(response.get("recipients", 0))

    async def group_members(self, group_id: bytes) -> dict[str, Any]:
        """The relay's view of a group: ``epoch``, ``members`` and the newest ``change`` (bytes)."""
        response = await self.request("group_members", group_id=_b64(group_id))
        return {**response, "change": _unb64(response.get("change"), "membership change")}

    async def group_history(
        self, group_id: bytes, after_epoch: int = -1, max_changes: int = 100_000
    ) -> list[bytes]:
        """Every membership change of a group after ``after_epoch`` (-1: from its creation).

        A relay that keeps saying there is more stops being asked after ``max_changes`` changes
        (:class:`TransportError`), so it cannot hold the client in a loop or grow its memory.
        """
        changes: list[bytes] = []
        while True:
            if len(changes) > max_changes:
                raise TransportError(f"the relay's history of the group goes on past {max_changes} changes")
            response = await self.request("group_history", group_id=_b64(group_id), after_epoch=after_epoch)
            batch = [_unb64(c, "membership change") for c in response.get("changes", [])]
            changes.extend(batch)
            if not response.get("more") or not batch:
                return changes
            after_epoch += len(batch)

    def group_send(
        self, group_id: bytes, client_id: str, message_type: int, body: bytes
    ) -> asyncio.Future[dict[str, Any]]:
        """Write a group send now; resolves once the relay committed it for every member device."""
        return self.submit(
            "group_send", group_id=_b64(group_id), client_id=client_id, type=message_type, body=_b64(body)
        )


async def connect(
    url: str,
    *,
    account: str,
    device_id: int,
    identity_key: KeyPair,
    registration_id: int = 0,
    register: bool = False,
    rng: Rng = os.urandom,
    origin: str | None = None,
    open_timeout: float = 10.0,
) -> Connection:
    """Open an authenticated connection (registering the device first when ``register`` is set)."""
    connection = await Connection.open(url, origin=origin, open_timeout=open_timeout)
    try:
        if register:
            await connection.register(account, device_id, identity_key, registration_id, rng)
        else:
            await connection.authenticate(account, device_id, identity_key, rng)
    except BaseException:
        await connection.close()
        raise
    return connection
