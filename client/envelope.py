"""The plaintext a client puts inside each encrypted message: id, timestamp and body.

What this module owns
---------------------
The versioned content format that the Double Ratchet encrypts.  libsignal's message formats leave
the plaintext to the application; ours is::

    version (1 byte, 0x01) ‖ message id (16 bytes) ‖ timestamp (8 bytes, big-endian ms) ‖ body

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

__all__ = ["ENVELOPE_VERSION", "MESSAGE_ID_LENGTH", "Envelope", "encode", "decode"]

ENVELOPE_VERSION = 1
MESSAGE_ID_LENGTH = 16
_HEADER = 1 + MESSAGE_ID_LENGTH + 8


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message's content before encryption; ``message_id`` is 16 bytes, shown as hex elsewhere."""

    message_id: bytes
    timestamp: int
    body: bytes = field(repr=False)


def encode(envelope: Envelope) -> bytes:
    """The plaintext bytes for ``envelope``."""
    if len(envelope.message_id) != MESSAGE_ID_LENGTH:
        raise ValueError(f"a message id is {MESSAGE_ID_LENGTH} bytes")
    if not 0 <= envelope.timestamp < 1 << 64:
        raise ValueError("a timestamp is an unsigned 64-bit number of milliseconds")
    header = bytes((ENVELOPE_VERSION,)) + envelope.message_id + envelope.timestamp.to_bytes(8, "big")
    return header + envelope.body


def decode(plaintext: bytes) -> Envelope:
    """Parse a decrypted plaintext; :class:`DecodeError` if it is not an envelope we understand."""
    if len(plaintext) < _HEADER:
        raise DecodeError("a message envelope is at least 25 bytes")
    if plaintext[0] != ENVELOPE_VERSION:
        raise DecodeError(f"unknown message envelope version {plaintext[0]}")
    return Envelope(
        message_id=plaintext[1 : 1 + MESSAGE_ID_LENGTH],
        timestamp=int.from_bytes(plaintext[1 + MESSAGE_ID_LENGTH : _HEADER], "big"),
        body=plaintext[_HEADER:],
    )
