"""The plaintext a client puts inside each encrypted message: id, timestamp and body.

What this module owns
---------------------
The versioned content format that the Double Ratchet encrypts.  libsignal's message formats leave
the plaintext to the application; ours is::

    version (1 byte, 0x01) ‖ message id (16 bytes) ‖ timestamp (8 bytes, big-endian ms) ‖ body

The message id and the sender's timestamp travel inside the encryption, so the relay can neither
read nor alter them: the id the recipient removes duplicates by is the one the sender chose.

A body other than text is marked by a content type (version 2, one byte more)::

    version (1 byte, 0x02) ‖ message id (16) ‖ timestamp (8) ‖ content type (1 byte) ‖ body

:data:`CONTENT_TEXT` (0) is always written as version 1, so text messages keep their bytes;
:data:`CONTENT_ATTACHMENT` (1) carries an attachment pointer (:mod:`client.pointer`);
:data:`CONTENT_SENDER_KEY` (2) a group's sender-key distribution and :data:`CONTENT_SENDER_KEY_RETRY`
(3) a member asking a sender for it again (both :mod:`client.groups`);
:data:`CONTENT_QUICK_REPLIES` (4) and :data:`CONTENT_QUICK_REPLY` (5) a quick-reply offer and the
reply that picks an option (:mod:`client.structured`); :data:`CONTENT_TRANSCRIPT` (6) a message
we sent, copied to our own other devices (:mod:`client.fanout`).

The fallback rule
-----------------
The body of every content type from 4 on opens with a *fallback text*::

    fallback length (2 bytes, big-endian, ≤ MAX_FALLBACK_BYTES) ‖ fallback (UTF-8) ‖ payload

A decoder that meets a content type of 4 or more that it does not know gives the application an
ordinary text message holding the fallback (so a newer kind of message degrades to readable text),
and refuses it only when even the fallback does not decode.  Clients older than this rule refuse
every content type they do not know (docs/business.md says what that means for quick replies).

Invariants
----------
:func:`decode` accepts exactly these layouts: a short input, an unknown version, an unknown
content type below 4 (or one from 4 on whose fallback does not decode) raises
:class:`e2e.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2e.errors import DecodeError

__all__ = [
    "ENVELOPE_VERSION",
    "MESSAGE_ID_LENGTH",
    "CONTENT_TEXT",
    "CONTENT_ATTACHMENT",
    "CONTENT_SENDER_KEY",
    "CONTENT_SENDER_KEY_RETRY",
    "CONTENT_QUICK_REPLIES",
    "CONTENT_QUICK_REPLY",
    "MAX_FALLBACK_BYTES",
    "CONTENT_TRANSCRIPT",
    "Envelope",
    "with_fallback",
    "split_fallback",
    "encode",
    "decode",
]

ENVELOPE_VERSION = 1
MESSAGE_ID_LENGTH = 16
_HEADER = 1 + MESSAGE_ID_LENGTH + 8
# Version 2 adds the content type byte after the header.
_TYPED_VERSION = 2
CONTENT_TEXT = 0
CONTENT_ATTACHMENT = 1
CONTENT_SENDER_KEY = 2
CONTENT_SENDER_KEY_RETRY = 3
CONTENT_QUICK_REPLIES = 4
CONTENT_QUICK_REPLY = 5
CONTENT_TRANSCRIPT = 6
"""A copy of a message we sent, for our own other devices (client/fanout.py)."""
_CONTENT_TYPES = frozenset(
    {
        CONTENT_TEXT,
        CONTENT_ATTACHMENT,
        CONTENT_SENDER_KEY,
        CONTENT_SENDER_KEY_RETRY,
        CONTENT_QUICK_REPLIES,
        CONTENT_QUICK_REPLY,
        CONTENT_TRANSCRIPT,
    }
)
# From this content type on, a body opens with a fallback text (the module docstring's rule).
_FIRST_WITH_FALLBACK = 4
MAX_FALLBACK_BYTES = 4096


def with_fallback(fallback: str, payload: bytes) -> bytes:
    """A body of a content type from 4 on: ``fallback`` (what older clients show), then ``payload``."""
    text = fallback.encode("utf-8")
    if len(text) > MAX_FALLBACK_BYTES:
        raise ValueError(f"a fallback text is at most {MAX_FALLBACK_BYTES} bytes of UTF-8")
    return len(text).to_bytes(2, "big") + text + payload


def split_fallback(body: bytes) -> tuple[str, bytes]:
    """The fallback text and the payload of a body made by :func:`with_fallback`; :class:`DecodeError`
    for a body too short for its fallback, an oversized one, or one that is not UTF-8."""
    if len(body) < 2:
        raise DecodeError("the body ends inside its fallback length")
    length = int.from_bytes(body[:2], "big")
    if length > MAX_FALLBACK_BYTES or len(body) < 2 + length:
        raise DecodeError("the fallback text is oversized or cut short")
    try:
        fallback = body[2 : 2 + length].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("the fallback text is not UTF-8") from None
    return fallback, body[2 + length :]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message's content before encryption; ``message_id`` is 16 bytes, shown as hex elsewhere."""

    message_id: bytes
    timestamp: int
    body: bytes = field(repr=False)
    content_type: int = CONTENT_TEXT


def encode(envelope: Envelope) -> bytes:
    """The plaintext bytes for ``envelope``."""
    if len(envelope.message_id) != MESSAGE_ID_LENGTH:
        raise ValueError(f"a message id is {MESSAGE_ID_LENGTH} bytes")
    if not 0 <= envelope.timestamp < 1 << 64:
        raise ValueError("a timestamp is an unsigned 64-bit number of milliseconds")
    if envelope.content_type not in _CONTENT_TYPES:
        raise ValueError(f"unknown content type {envelope.content_type}")
    fields = envelope.message_id + envelope.timestamp.to_bytes(8, "big")
    if envelope.content_type == CONTENT_TEXT:
        return bytes((ENVELOPE_VERSION,)) + fields + envelope.body
    return bytes((_TYPED_VERSION,)) + fields + bytes((envelope.content_type,)) + envelope.body


def decode(plaintext: bytes) -> Envelope:
    """Parse a decrypted plaintext; :class:`DecodeError` if it is not an envelope we understand."""
    if len(plaintext) < _HEADER:
        raise DecodeError("a message envelope is at least 25 bytes")
    if plaintext[0] not in (ENVELOPE_VERSION, _TYPED_VERSION):
        raise DecodeError(f"unknown message envelope version {plaintext[0]}")
    content_type, body_start = CONTENT_TEXT, _HEADER
    if plaintext[0] == _TYPED_VERSION:
        if len(plaintext) < _HEADER + 1:
            raise DecodeError("a typed message envelope is at least 26 bytes")
        content_type, body_start = plaintext[_HEADER], _HEADER + 1
        if content_type == CONTENT_TEXT:
            raise DecodeError("text is written as envelope version 1")
        if content_type not in _CONTENT_TYPES:
            if content_type < _FIRST_WITH_FALLBACK:
                raise DecodeError(f"unknown message content type {content_type}")
            # A newer content type: what we show is its fallback text (the module's rule).
            fallback, _payload = split_fallback(plaintext[body_start:])
            return Envelope(
                message_id=plaintext[1 : 1 + MESSAGE_ID_LENGTH],
                timestamp=int.from_bytes(plaintext[1 + MESSAGE_ID_LENGTH : _HEADER], "big"),
                body=fallback.encode("utf-8"),
                content_type=CONTENT_TEXT,
            )
    return Envelope(
        message_id=plaintext[1 : 1 + MESSAGE_ID_LENGTH],
        timestamp=int.from_bytes(plaintext[1 + MESSAGE_ID_LENGTH : _HEADER], "big"),
        body=plaintext[body_start:],
        content_type=content_type,
    )
