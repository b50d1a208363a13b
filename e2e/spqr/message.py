"""The SPQR message: what rides in field 5 (``pq_ratchet``) of every v4 SignalMessage.

What this module owns
---------------------
:class:`MessageType`, :class:`SpqrMessage` and their byte encoding, exactly as Signal's ``spqr``
crate writes them (``v1/chunked/states/serialize.rs``)::

    version (1 byte, 0x01) ‖ varint(epoch) ‖ varint(index) ‖ type (1 byte)
        [‖ varint(chunk index) ‖ chunk (32 bytes)]

* ``epoch`` (≥ 1): the braid epoch the sender is working on.
* ``index``: the sender's message number in its SPQR sending chain for epoch ``epoch − 1``
  (:mod:`e2e.spqr.chain`), starting at 1.
* ``type``: one of :class:`MessageType`.  ``NONE`` and ``CT1_ACK`` carry no chunk; the others
  carry one chunk of the value they name (:mod:`e2e.spqr.erasure`).
* Varints are the protobuf base-128 encoding, least significant group first, at most 10 bytes.

So a message without a chunk is 4 bytes while epoch and index are below 128, and 37 bytes with a
chunk whose index is below 128; each varint grows by a byte per 7 bits.

Decoding rules (the crate's)
----------------------------
An empty string is version 0 (no SPQR) and is not an :class:`SpqrMessage`; the first byte is the
version; epoch 0 is invalid; the index must fit 32 bits and the chunk index 16; a type above 6 or
any truncation is malformed (:class:`~e2e.spqr.errors.MalformedSpqrMessageError`).  Bytes after a
complete message are ignored, so a later version can append fields; the crate reads them the
same way.  Nothing here is authenticated: the enclosing SignalMessage's MAC covers these bytes.

What it does not know
---------------------
What a chunk means in a given state (:mod:`e2e.spqr.braid`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from e2e.spqr.erasure import CHUNK_SIZE, MAX_CHUNK_INDEX, Chunk
from e2e.spqr.errors import MalformedSpqrMessageError

__all__ = ["VERSION_V1", "MessageType", "SpqrMessage", "describe"]

VERSION_V1: Final = 1
"""The first byte of every V1 message."""
_MAX_VARINT_LENGTH: Final = 10


class MessageType(enum.IntEnum):
    """What an SPQR message carries (the crate's ``MessageType``)."""

    NONE = 0
    """Nothing: the sender is waiting for the peer."""
    HDR = 1
    """A chunk of the new encapsulation-key header and its MAC (96 bytes in all)."""
    EK = 2
    """A chunk of the encapsulation-key vector (1,152 bytes)."""
    EK_CT1_ACK = 3
    """A chunk of the vector, and the news that the whole first ciphertext part arrived."""
    CT1_ACK = 4
    """Only that news (the vector has been sent often enough)."""
    CT1 = 5
    """A chunk of the first ciphertext part (960 bytes)."""
    CT2 = 6
    """A chunk of the second ciphertext part and the ciphertext MAC (160 bytes)."""

    @property
    def has_chunk(self) -> bool:
        return self not in (MessageType.NONE, MessageType.CT1_ACK)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_LENGTH):
        if at + i >= len(data):
            raise MalformedSpqrMessageError("truncated varint in SPQR message")
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if value >= 1 << 64:
                raise MalformedSpqrMessageError("varint larger than 64 bits in SPQR message")
            return value, at + i + 1
    raise MalformedSpqrMessageError("varint longer than 10 bytes in SPQR message")


@dataclass(frozen=True, slots=True)
class SpqrMessage:
    """One decoded V1 message."""

    epoch: int
    index: int
    type: MessageType
    chunk: Chunk | None = None

    def __post_init__(self) -> None:
        if self.epoch < 1 or self.epoch >= 1 << 64:
            raise ValueError("an SPQR epoch is a positive 64-bit integer")
        if not 0 <= self.index <= 0xFFFF_FFFF:
            raise ValueError("an SPQR message index is a 32-bit integer")
        if self.type.has_chunk != (self.chunk is not None):
            raise ValueError(
                f"an SPQR {self.type.name} message {'needs' if self.type.has_chunk else 'has no'} chunk"
            )

    def serialize(self) -> bytes:
        """The bytes of field 5 (``pq_ratchet``)."""
        out = bytes((VERSION_V1,)) + _varint(self.epoch) + _varint(self.index) + bytes((self.type,))
        if self.chunk is not None:
            out += _varint(self.chunk.index) + self.chunk.data
        return out

    @classmethod
    def deserialize(cls, data: bytes) -> SpqrMessage:
        """Parse a V1 message; raises :class:`~e2e.spqr.errors.MalformedSpqrMessageError`."""
        if not isinstance(data, bytes):
            raise MalformedSpqrMessageError(f"an SPQR message is bytes, not {type(data).__name__}")
        if not data or data[0] != VERSION_V1:
            raise MalformedSpqrMessageError("not an SPQR V1 message")
        epoch, at = _read_varint(data, 1)
        if epoch == 0:
            raise MalformedSpqrMessageError("SPQR epoch 0 is invalid")
        index, at = _read_varint(data, at)
        if index > 0xFFFF_FFFF:
            raise MalformedSpqrMessageError("SPQR message index larger than 32 bits")
        if at >= len(data):
            raise MalformedSpqrMessageError("SPQR message without a type")
        try:
            message_type = MessageType(data[at])
        except ValueError:
            raise MalformedSpqrMessageError(f"unknown SPQR message type {data[at]}") from None
        at += 1
        chunk = None
        if message_type.has_chunk:
            chunk_index, at = _read_varint(data, at)
            if chunk_index > MAX_CHUNK_INDEX or at + CHUNK_SIZE > len(data):
                raise MalformedSpqrMessageError("malformed chunk in SPQR message")
            chunk = Chunk(chunk_index, data[at : at + CHUNK_SIZE])
        return cls(epoch, index, message_type, chunk)


def describe(data: bytes) -> dict[str, str | int]:
    """The public fields of a ``pq_ratchet`` field, for explanations and logs; never raises.

    ``{"spqr_version": 1, "spqr_epoch": …, "spqr_index": …, "spqr_type": "HDR", "spqr_chunk": …}``
    (no ``spqr_chunk`` for a type without one); ``{"spqr_version": 0}`` for an empty field and
    ``{"spqr_malformed": 1}`` for bytes that do not parse.  Chunk
    contents are left out: they are public, but of no use to a reader.
    """
    if not data:
        return {"spqr_version": 0}
    try:
        message = SpqrMessage.deserialize(data)
    except MalformedSpqrMessageError:
        return {"spqr_malformed": 1}
    out: dict[str, str | int] = {
        "spqr_version": VERSION_V1,
        "spqr_epoch": message.epoch,
        "spqr_index": message.index,
        "spqr_type": message.type.name,
    }
    if message.chunk is not None:
        out["spqr_chunk"] = message.chunk.index
    return out
