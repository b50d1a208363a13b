"""The relay protocol's vocabulary: frames, field validation, error and close codes, proof transcripts.

Theory
------
Every frame is one JSON object in one WebSocket text frame, versioned by ``"v": 1``
(``docs/relay-protocol.md`` is the specification; this module is its executable half).  A request
is ``{"v": 1, "id": <int or string>, "op": "<name>", ...fields}``; the relay answers with
``{"v": 1, "id": <same>, "ok": true, ...}`` or ``{"v": 1, "id": <same>, "ok": false, "error":
{"code": "...", "message": "..."}}``; unrequested frames are pushes, ``{"v": 1, "push": "<kind>",
...}``.  Binary values are standard base64 with padding.

Parsing is strict about what it reads and silent about what it does not: unknown fields are
ignored, but a known field of the wrong type, a duplicate key, a non-finite number or bad base64
is a :class:`ProtocolError` with a stable :class:`ErrorCode`, raised before anything is stored.

The possession proofs bind a signature to one connection and one relay: the signed transcript is
a label, the relay's fresh 32-byte challenge, the account, the device id and the relay's origin,
each length-prefixed so that no two different tuples give the same bytes (see
:func:`proof_transcript`).

What this module does not know
------------------------------
Sockets, storage and keys: it checks shapes and sizes, never signatures.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal, overload

__all__ = [
    "PROTOCOL_VERSION",
    "CHALLENGE_LENGTH",
    "AUTH_LABEL",
    "REGISTER_LABEL",
    "MAX_DEVICE_ID",
    "ErrorCode",
    "CloseCode",
    "ProtocolError",
    "Request",
    "proof_transcript",
    "canonical_origin",
    "parse_request",
    "encode",
    "ok",
    "error",
    "push",
    "b64",
    "field_str",
    "field_int",
    "field_bytes",
    "field_list",
    "field_object",
    "account_name",
    "device_id",
]

PROTOCOL_VERSION = 1
CHALLENGE_LENGTH = 32
AUTH_LABEL = b"e2e-relay auth v1"
REGISTER_LABEL = b"e2e-relay register v1"
MAX_DEVICE_ID = 2**31 - 1
_MAX_REQUEST_ID = 2**53 - 1

# Lowercase only, so that no two accounts differ by case alone ("Alice" beside "alice").
_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
# C0 controls, DEL and C1 controls: never part of an identifier.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ErrorCode(enum.StrEnum):
    """The ``error.code`` values of a failed response (documented in docs/relay-protocol.md)."""

    BAD_FRAME = "bad_frame"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    UNAUTHENTICATED = "unauthenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    BAD_PROOF = "bad_proof"
    CHALLENGE_EXPIRED = "challenge_expired"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_ACCOUNT = "unknown_account"
    IDENTITY_MISMATCH = "identity_mismatch"
    INVALID_KEY = "invalid_key"
    INVALID_SIGNATURE = "invalid_signature"
    TOO_MANY_KEYS = "too_many_keys"
    KEY_ID_CONFLICT = "key_id_conflict"
    NO_BUNDLE = "no_bundle"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    QUEUE_FULL = "queue_full"
    MESSAGE_ID_REUSED = "message_id_reused"
    UNKNOWN_MESSAGE = "unknown_message"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_DEVICES = "too_many_devices"
    INTERNAL_ERROR = "internal_error"
    # Groups (docs/relay-protocol.md, "Groups").
    UNKNOWN_GROUP = "unknown_group"
    NOT_A_MEMBER = "not_a_member"
    NOT_AN_ADMIN = "not_an_admin"
    GROUP_EXISTS = "group_exists"
    STALE_GROUP = "stale_group"
    BAD_MEMBERSHIP = "bad_membership"
    TOO_MANY_MEMBERS = "too_many_members"
    TOO_MANY_GROUPS = "too_many_groups"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the relay uses (RFC 6455 §7.4; 4000–4999 are ours)."""

    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    AUTH_FAILED = 4001
    AUTH_TIMEOUT = 4002
    DISPLACED = 4003
    SLOW_CONSUMER = 4004


class ProtocolError(Exception):
    """A request the relay refuses; carries the response's code and human-readable message."""

    def __init__(
        self, code: ErrorCode, message: str, *, close: CloseCode | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        """When set, the relay closes the connection with this code after sending the error."""
        self.details = details


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: its id (echoed back), its operation and the whole object for its fields."""

    id: int | str
    op: str
    fields: dict[str, Any]


def proof_transcript(label: bytes, challenge: bytes, account: str, device_id: int, origin: str) -> bytes:
    """The bytes a device signs to prove possession of its identity key on one connection.

    ``label ‖ 0x00 ‖ challenge (32) ‖ u16 len ‖ account (UTF-8) ‖ u32 device id ‖ u16 len ‖ origin``,
    integers big-endian.
    """
    account_bytes = account.encode("utf-8")
    origin_bytes = origin.encode("utf-8")
    return b"".join(
        (
            label,
            b"\x00",
            challenge,
            len(account_bytes).to_bytes(2, "big"),
            account_bytes,
            device_id.to_bytes(4, "big"),
            len(origin_bytes).to_bytes(2, "big"),
            origin_bytes,
        )
    )


def canonical_origin(url: str) -> str:
    """The origin proofs are bound to: ``scheme://host:port``, lowercase host, port written out.

    This is the form a client derives from the URL it dials (``wss://Relay.Example`` becomes
    ``wss://relay.example:443``), so a relay configured with any spelling of its own URL checks the
    same bytes.  Raises ValueError for anything that is not a ``ws://`` or ``wss://`` URL with a host
    and nothing after the port.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has a port that is not a number from 0 to 65535") from None
    if parts.scheme.lower() not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL with a host, e.g. wss://relay.example:443")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r} must be just scheme://host:port, with no path, query or user")
    scheme = parts.scheme.lower()
    port = port or (443 if scheme == "wss" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ProtocolError(ErrorCode.BAD_FRAME, f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ProtocolError(ErrorCode.BAD_FRAME, f"{name} is not valid JSON")


# Built once: json.loads and json.dumps with options build a new decoder or encoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def parse_request(text: str) -> Request:
    """Parse one text frame into a :class:`Request`.

    Raises :class:`ProtocolError`; when the frame had a usable id it is in ``details["id"]`` so the
    error response can carry it.
    """
    try:
        frame = _DECODER.decode(text)
    except ProtocolError:
        raise
    except (ValueError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_FRAME, "the frame is not a JSON document") from None
    if not isinstance(frame, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "the frame is not a JSON object")
    request_id = frame.get("id")
    if isinstance(request_id, bool) or not (
        (isinstance(request_id, int) and 0 <= request_id <= _MAX_REQUEST_ID)
        or (
            isinstance(request_id, str)
            and 0 < len(request_id) <= 64
            and _CONTROL.search(request_id) is None
            and not _has_surrogate(request_id)
        )
    ):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            "id must be an integer in [0, 2**53) or a string of 1 to 64 characters without control "
            "characters",
        )
    # Raw control characters are invalid JSON (the decoder is strict), so a NUL or a lone surrogate
    # can only arrive as a \u escape: frames without one need no further look.
    if "\\u" in text:
        bad = _invalid_string(frame)
        if bad is not None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, bad, id=request_id)
    version = frame.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"this relay speaks version {PROTOCOL_VERSION}", id=request_id
        )
    op = frame.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "op must be a string", id=request_id)
    return Request(request_id, op, frame)


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (U+D800..U+DFFF), which no UTF-8 can carry."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _invalid_string(document: Any) -> str | None:
    """Why some string (key or value, at any depth) of ``document`` is unacceptable, or None.

    Every string of a frame must be text that can be stored and sent back: no lone surrogates
    (JSON allows ``"\\ud800"``, UTF-8 and the stores do not) and no NUL (PostgreSQL text cannot
    hold it).  Unknown fields are checked too: one document, one rule.
    """
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and ("\x00" in item or _has_surrogate(item)):
            return "strings must be valid Unicode text without NUL (a lone surrogate or \\u0000 was sent)"
    return None


def encode(frame: dict[str, Any]) -> str:
    """A frame as compact JSON text."""
    return _ENCODER.encode(frame)


def ok(request_id: int | str, **fields: Any) -> dict[str, Any]:
    """A successful response to ``request_id``."""
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, **fields}


def error(request_id: int | str | None, code: ErrorCode, message: str, **details: Any) -> dict[str, Any]:
    """A failed response (``id`` is null when the frame had no usable id)."""
    body: dict[str, Any] = {"code": code.value, "message": message}
    body.update(details)
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": body}


def push(kind: str, **fields: Any) -> dict[str, Any]:
    """An unrequested frame from the relay."""
    return {"v": PROTOCOL_VERSION, "push": kind, **fields}


def b64(data: bytes) -> str:
    """Standard base64 with padding, as every binary field is written."""
    return base64.b64encode(data).decode("ascii")


def _missing(name: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"missing field {name!r}")


@overload
def field_str(obj: dict[str, Any], name: str, *, max_length: int, optional: Literal[False] = ...) -> str: ...
@overload
def field_str(obj: dict[str, Any], name: str, *, max_length: int, optional: Literal[True]) -> str | None: ...
def field_str(obj: dict[str, Any], name: str, *, max_length: int, optional: bool = False) -> str | None:
    """A string field of 1 to ``max_length`` characters, none of them a control character."""
    value = obj.get(name)
    if value is None:
        if optional:
            return None
        raise _missing(name)
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must be a string of 1 to {max_length} chars")
    if _CONTROL.search(value) is not None or _has_surrogate(value):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must not contain control characters")
    return value


@overload
def field_int(
    obj: dict[str, Any], name: str, *, low: int, high: int, optional: Literal[False] = ...
) -> int: ...
@overload
def field_int(
    obj: dict[str, Any], name: str, *, low: int, high: int, optional: Literal[True]
) -> int | None: ...
def field_int(obj: dict[str, Any], name: str, *, low: int, high: int, optional: bool = False) -> int | None:
    """An integer field in ``[low, high]`` (booleans are not integers here)."""
    value = obj.get(name)
    if value is None:
        if optional:
            return None
        raise _missing(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must be an integer in [{low}, {high}]")
    return value


@overload
def field_bytes(
    obj: dict[str, Any],
    name: str,
    *,
    max_length: int,
    exact: int | None = ...,
    optional: Literal[False] = ...,
) -> bytes: ...
@overload
def field_bytes(
    obj: dict[str, Any], name: str, *, max_length: int, exact: int | None = ..., optional: Literal[True]
) -> bytes | None: ...
def field_bytes(
    obj: dict[str, Any], name: str, *, max_length: int, exact: int | None = None, optional: bool = False
) -> bytes | None:
    """A base64 field decoding to 1 to ``max_length`` bytes (or exactly ``exact``); never empty."""
    value = obj.get(name)
    if value is None:
        if optional:
            return None
        raise _missing(name)
    if not isinstance(value, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must be a base64 string")
    if len(value) > 4 * ((max_length + 2) // 3):
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{name!r} is longer than {max_length} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} is not valid base64") from None
    if not data:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must not be empty")
    if exact is not None and len(data) != exact:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must be {exact} bytes")
    if len(data) > max_length:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{name!r} is longer than {max_length} bytes")
    return data


@overload
def field_list(obj: dict[str, Any], name: str, *, optional: Literal[False] = ...) -> list[Any]: ...
@overload
def field_list(obj: dict[str, Any], name: str, *, optional: Literal[True]) -> list[Any] | None: ...
def field_list(obj: dict[str, Any], name: str, *, optional: bool = False) -> list[Any] | None:
    """A JSON array field."""
    value = obj.get(name)
    if value is None:
        if optional:
            return None
        raise _missing(name)
    if not isinstance(value, list):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must be an array")
    return value


@overload
def field_object(obj: dict[str, Any], name: str, *, optional: Literal[False] = ...) -> dict[str, Any]: ...
@overload
def field_object(obj: dict[str, Any], name: str, *, optional: Literal[True]) -> dict[str, Any] | None: ...
def field_object(obj: dict[str, Any], name: str, *, optional: bool = False) -> dict[str, Any] | None:
    """A JSON object field."""
    value = obj.get(name)
    if value is None:
        if optional:
            return None
        raise _missing(name)
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name!r} must be an object")
    return value


def account_name(obj: dict[str, Any], name: str = "account") -> str:
    """An account name: 1 to 64 characters of ``a-z 0-9 . _ @ + -``, starting with a letter or digit.

    Lowercase only: a name that differs from another by case alone is refused, never a second
    account (``docs/relay-protocol.md``, *Names*).
    """
    value = obj.get(name)
    if value is None:
        raise _missing(name)
    if not isinstance(value, str) or _ACCOUNT.fullmatch(value) is None:
        hint = ""
        if isinstance(value, str) and _ACCOUNT.fullmatch(value.lower()) is not None:
            hint = f" (account names are lowercase: {value.lower()!r})"
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"{name!r} must be 1 to 64 characters of lowercase letters, digits and . _ @ + -, starting "
            f"with a letter or digit{hint}",
        )
    return value


@overload
def device_id(obj: dict[str, Any], name: str = ..., *, optional: Literal[False] = ...) -> int: ...
@overload
def device_id(obj: dict[str, Any], name: str = ..., *, optional: Literal[True]) -> int | None: ...
def device_id(obj: dict[str, Any], name: str = "device_id", *, optional: bool = False) -> int | None:
    """A device id in ``[1, 2**31 - 1]``."""
    if optional:
        return field_int(obj, name, low=1, high=MAX_DEVICE_ID, optional=True)
    return field_int(obj, name, low=1, high=MAX_DEVICE_ID)
