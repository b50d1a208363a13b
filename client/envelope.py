"""The plaintext a client puts inside each encrypted message: id, timestamp and body.

What this module owns
---------------------
The versioned content format that the Double Ratchet encrypts.  libsignal's message formats leave
the plaintext to the application; ours is::

    version (1 byte, 0x01) ‖ message id (16 bytes) ‖ timestamp (8 bytes, big-endian ms) ‖ body

for a text message, and, for any other content type (version 2)::

    version (1 byte, 0x02) ‖ message id (16) ‖ timestamp (8) ‖ content type (1 byte) ‖ body

Content types: :data:`TEXT` (1; always written as version 1, so older clients read it),
:data:`SENDER_KEY` (2; a group's sender-key distribution, :mod:`client.groups`) and
:data:`SENDER_KEY_RETRY` (3; a member asking for a sender's distribution again).  An unknown
content type is a :class:`e2e.errors.DecodeError`.

The message id and the sender's timestamp travel inside the encryption, so the relay can neither
read nor alter them: the id the recipient removes duplicates by is the one the sender chose.

Invariants
----------
:func:`decode` accepts exactly this layout: a short input or an unknown version raises
:class:`e2e.errors.DecodeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2e.errors import DecodeError

__all__ = [
    "ENVELOPE_VERSION",
    "TYPED_ENVELOPE_VERSION",
    "MESSAGE_ID_LENGTH",
    "TEXT",
    "SENDER_KEY",
    "SENDER_KEY_RETRY",
    "Envelope",
    "encode",
    "decode",
]

ENVELOPE_VERSION = 1
TYPED_ENVELOPE_VERSION = 2
MESSAGE_ID_LENGTH = 16
TEXT = 1
SENDER_KEY = 2
SENDER_KEY_RETRY = 3
_CONTENT_TYPES = frozenset({TEXT, SENDER_KEY, SENDER_KEY_RETRY})
_HEADER = 1 + MESSAGE_ID_LENGTH + 8


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message's content before encryption; ``message_id`` is 16 bytes, shown as hex elsewhere."""

    message_id: bytes
    timestamp: int
    body: bytes = field(repr=False)
    content_type: int = TEXT


def encode(envelope: Envelope) -> bytes:
    """The plaintext bytes for ``envelope``."""
    if len(envelope.message_id) != MESSAGE_ID_LENGTH:
        raise ValueError(f"a message id is {MESSAGE_ID_LENGTH} bytes")
    if not 0 <= envelope.timestamp < 1 << 64:
        raise ValueError("a timestamp is an unsigned 64-bit number of milliseconds")
    if envelope.content_type not in _CONTENT_TYPES:
        raise ValueError(f"unknown content type {envelope.content_type}")
    if envelope.content_type == TEXT:
        header = bytes((ENVELOPE_VERSION,)) + envelope.message_id + envelope.timestamp.to_bytes(8, "big")
        return header + envelope.body
    header = bytes((TYPED_ENVELOPE_VERSION,)) + envelope.message_id + envelope.timestamp.to_bytes(8, "big")
    return header + bytes((envelope.content_type,)) + envelope.body


def decode(plaintext: bytes) -> Envelope:
    """Parse a decrypted plaintext; :class:`DecodeError` if it is not an envelope we understand."""
    if len(plaintext) < _HEADER:
        raise DecodeError("a message envelope is at least 25 bytes")
    if plaintext[0] == TYPED_ENVELOPE_VERSION:
        if len(plaintext) < _HEADER + 1 or plaintext[_HEADER] not in _CONTENT_TYPES - {TEXT}:
            raise DecodeError("a typed envelope without a known content type")
        return Envelope(
            message_id=plaintext[1 : 1 + MESSAGE_ID_LENGTH],
            timestamp=int.from_bytes(plaintext[1 + MESSAGE_ID_LENGTH : _HEADER], "big"),
            body=plaintext[_HEADER + 1 :],
            content_type=plaintext[_HEADER],
        )
    if plaintext[0] != ENVELOPE_VERSION:
        raise DecodeError(f"unknown message envelope version {plaintext[0]}")
    return Envelope(
        message_id=plaintext[1 : 1 + MESSAGE_ID_LENGTH],
        timestamp=int.from_bytes(plaintext[1 + MESSAGE_ID_LENGTH : _HEADER], "big"),
        body=plaintext[_HEADER:],
    )
