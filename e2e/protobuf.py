"""The few rules of the Protocol Buffers wire format that libsignal's messages need.

What this module owns
---------------------
Encoding and strict decoding of the two wire types libsignal's v3 messages use (the Protocol
Buffers "Encoding" reference, sections "Base 128 Varints" and "Length-Delimited Records"):

* wire type 0, VARINT: an unsigned integer in little-endian groups of seven bits, the high bit of
  each byte saying "more follows";
* wire type 2, LEN: a varint length followed by that many bytes.

A record is a sequence of fields, each a varint *tag* ``(field_number << 3) | wire_type`` followed
by its value.  :func:`encode_varint`, :func:`encode_uint_field` and :func:`encode_bytes_field` write
them; :func:`parse` reads a whole record against a *schema* that names the known fields.

Strictness (what :func:`parse` refuses with :class:`~e2e.errors.DecodeError`)
----------------------------------------------------------------------------
* a truncated varint, or one longer than 10 bytes or worth more than 64 bits;
* a truncated length-delimited value;
* field number 0, or a wire type that does not exist (6, 7) or is a deprecated group (3, 4);
* a known field sent with a wire type other than its schema's;
* a known, non-repeated field that occurs twice (protobuf itself would keep the last one; a
  message with two ratchet keys is not something an honest peer sends);
* input that is not ``bytes``.

Unknown fields are skipped, as the protobuf rules require, so that a later version may add fields.
Where a skipped field changes the bytes of an authenticated message, the MAC over those bytes
still catches it.

What this module does not know
------------------------------
What any field means, which fields are required, or which values are in range: the message types
in :mod:`e2e.wire` and the state formats in :mod:`e2e.records` and :mod:`e2e.session` check that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from e2e.errors import DecodeError

__all__ = [
    "VARINT",
    "FIXED64",
    "LEN",
    "FIXED32",
    "MAX_VARINT_LENGTH",
    "Field",
    "encode_varint",
    "encode_uint_field",
    "encode_bytes_field",
    "decode_varint",
    "Value",
    "Record",
    "parse",
    "get_uint",
    "get_bytes",
    "get_repeated_bytes",
]

VARINT: Final = 0
FIXED64: Final = 1
LEN: Final = 2
FIXED32: Final = 5

MAX_VARINT_LENGTH: Final = 10
"""A 64-bit value needs at most ten seven-bit groups."""

_UINT64_LIMIT: Final = 1 << 64

# The single-byte encodings of 0..127 are by far the most common varints (counters, ids, lengths
# of keys); a table spares building them byte by byte.
_SMALL_VARINTS: Final = tuple(bytes((n,)) for n in range(128))


class Field:
    """A known field of a schema: its wire type and whether it may repeat."""

    __slots__ = ("wire_type", "repeated")

    def __init__(self, wire_type: int, repeated: bool = False) -> None:
        if wire_type not in (VARINT, LEN):
            raise ValueError("only VARINT and LEN fields are supported")
        self.wire_type = wire_type
        self.repeated = repeated

    def __repr__(self) -> str:
        return f"Field(wire_type={self.wire_type}, repeated={self.repeated})"


def encode_varint(value: int) -> bytes:
    """The varint encoding of an unsigned 64-bit integer."""
    if 0 <= value < 128:
        return _SMALL_VARINTS[value]
    if not 0 <= value < _UINT64_LIMIT:
        raise ValueError("a varint holds an unsigned 64-bit integer")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_uint_field(number: int, value: int) -> bytes:
    """Field ``number`` as a VARINT holding ``value``."""
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def encode_bytes_field(number: int, value: bytes) -> bytes:
    """Field ``number`` as a LEN record holding ``value``."""
    return encode_varint(number << 3 | LEN) + encode_varint(len(value)) + value


def decode_varint(data: bytes, position: int, end: int) -> tuple[int, int]:
    """Read one varint from ``data[position:end]``; return its value and the position after it."""
    if position >= end:
        raise DecodeError("truncated varint")
    byte = data[position]
    if byte < 0x80:
        return byte, position + 1
    value = 0
    shift = 0
    start = position
    while True:
        if position >= end:
            raise DecodeError("truncated varint")
        if position - start >= MAX_VARINT_LENGTH:
            raise DecodeError("varint longer than 10 bytes")
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            break
        shift += 7
    if value >= _UINT64_LIMIT:
        raise DecodeError("varint larger than 64 bits")
    return value, position


Value = int | bytes
Record = dict[int, Value | list[Value]]
"""A decoded record: field number to value, or to the list of values of a repeated field."""


def parse(data: bytes, schema: Mapping[int, Field]) -> Record:
    """Decode one record: ``{field_number: value}`` for the known fields that are present.

    A repeated field maps to the list of its values in order; any other field to its single value
    (an ``int`` for VARINT, ``bytes`` for LEN).  Unknown fields are skipped.  Raises
    :class:`~e2e.errors.DecodeError` on everything listed in the module docstring.
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    fields: Record = {}
    position = 0
    end = len(data)
    # Tags, lengths and small values are nearly always one byte: those are read inline, and
    # decode_varint handles the rest (and every truncated or over-long case).
    while position < end:
        tag = data[position]
        if tag < 0x80:
            position += 1
        else:
            tag, position = decode_varint(data, position, end)
        number = tag >> 3
        wire_type = tag & 7
        if number == 0:
            raise DecodeError("field number 0 is not allowed")
        value: Value
        if wire_type == VARINT:
            if position < end and data[position] < 0x80:
                value = data[position]
                position += 1
            else:
                value, position = decode_varint(data, position, end)
        elif wire_type == LEN:
            if position < end and data[position] < 0x80:
                length = data[position]
                position += 1
            else:
                length, position = decode_varint(data, position, end)
            if length > end - position:
                raise DecodeError(f"field {number}: truncated length-delimited value")
            value = data[position : position + length]
            position += length
        elif wire_type == FIXED64:
            if end - position < 8:
                raise DecodeError(f"field {number}: truncated 64-bit value")
            value = data[position : position + 8]
            position += 8
        elif wire_type == FIXED32:
            if end - position < 4:
                raise DecodeError(f"field {number}: truncated 32-bit value")
            value = data[position : position + 4]
            position += 4
        else:
            raise DecodeError(f"field {number}: unsupported wire type {wire_type}")
        known = schema.get(number)
        if known is None:
            continue
        if wire_type != known.wire_type:
            raise DecodeError(f"field {number}: wire type {wire_type}, expected {known.wire_type}")
        if known.repeated:
            values = fields.get(number)
            if isinstance(values, list):
                values.append(value)
            else:
                fields[number] = [value]
        elif number in fields:
            raise DecodeError(f"field {number} occurs more than once")
        else:
            fields[number] = value
    return fields


def get_uint(record: Record, number: int, what: str, maximum: int = _UINT64_LIMIT - 1) -> int:
    """The VARINT field ``number`` of ``record``, which must be present and at most ``maximum``."""
    value = record.get(number)
    if value is None:
        raise DecodeError(f"missing {what}")
    if not isinstance(value, int) or value > maximum:
        raise DecodeError(f"{what} out of range")
    return value


def get_bytes(record: Record, number: int, what: str) -> bytes:
    """The LEN field ``number`` of ``record``, which must be present."""
    value = record.get(number)
    if value is None:
        raise DecodeError(f"missing {what}")
    if not isinstance(value, bytes):
        raise DecodeError(f"{what} is not a byte string")
    return value


def get_repeated_bytes(record: Record, number: int) -> list[bytes]:
    """The values of the repeated LEN field ``number`` (an empty list when absent)."""
    values = record.get(number, [])
    if not isinstance(values, list) or not all(isinstance(value, bytes) for value in values):
        raise DecodeError(f"field {number} is not a list of byte strings")
    return [value for value in values if isinstance(value, bytes)]
