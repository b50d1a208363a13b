"""The protobuf subset: varints and length-delimited fields, and every malformation the parser refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e import protobuf
from e2e.errors import DecodeError
from e2e.protobuf import LEN, VARINT, Field

SCHEMA = {1: Field(LEN), 2: Field(VARINT), 3: Field(LEN, repeated=True)}


# Values and encodings from the Protocol Buffers encoding guide ("Base 128 Varints").
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (150, "9601"),
        (300, "ac02"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
)
def test_varint_known_encodings(value: int, encoded: str) -> None:
    assert protobuf.encode_varint(value) == bytes.fromhex(encoded)
    assert protobuf.decode_varint(bytes.fromhex(encoded), 0, len(encoded) // 2) == (value, len(encoded) // 2)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = protobuf.encode_varint(value)
    assert protobuf.decode_varint(encoded, 0, len(encoded)) == (value, len(encoded))


@pytest.mark.parametrize("value", [-1, 2**64])
def test_varint_out_of_range_is_not_encoded(value: int) -> None:
    with pytest.raises(ValueError):
        protobuf.encode_varint(value)


def test_fields_round_trip_and_order_is_free() -> None:
    data = protobuf.encode_uint_field(2, 300) + protobuf.encode_bytes_field(1, b"key")
    assert protobuf.parse(data, SCHEMA) == {2: 300, 1: b"key"}


def test_repeated_field_collects_in_order() -> None:
    data = b"".join(protobuf.encode_bytes_field(3, value) for value in (b"a", b"b", b"c"))
    record = protobuf.parse(data, SCHEMA)
    assert protobuf.get_repeated_bytes(record, 3) == [b"a", b"b", b"c"]
    assert protobuf.get_repeated_bytes({}, 3) == []


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    data = (
        protobuf.encode_uint_field(9, 5)
        + bytes((10 << 3 | 1,)) + bytes(8)  # fixed64
        + protobuf.encode_bytes_field(11, b"ignored")
        + bytes((12 << 3 | 5,)) + bytes(4)  # fixed32
        + protobuf.encode_uint_field(2, 7)
    )  # fmt: skip
    assert protobuf.parse(data, SCHEMA) == {2: 7}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x10", "truncated varint"),  # tag of field 2 and no value
        (b"\x10\x80", "truncated varint"),  # a continuation bit and nothing after it
        (b"\x10" + b"\x80" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x10" + b"\xff" * 9 + b"\x7f", "larger than 64 bits"),
        (b"\x0a\x05abc", "truncated length-delimited"),
        (b"\x0a", "truncated varint"),
        (b"\x08\x01", "wire type 0, expected 2"),  # field 1 sent as a varint
        (b"\x12\x01a", "wire type 2, expected 0"),  # field 2 sent as bytes
        (b"\x10\x01\x10\x02", "more than once"),
        (b"\x00\x01", "field number 0"),
        (b"\x0b", "unsupported wire type 3"),  # a group start
        (b"\x0c", "unsupported wire type 4"),
        (b"\x0e", "unsupported wire type 6"),
        (b"\x0f", "unsupported wire type 7"),
        (b"\x49\x00", "truncated 64-bit"),
        (b"\x4d\x00", "truncated 32-bit"),
    ],
)
def test_malformed_records_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        protobuf.parse(data, SCHEMA)


@pytest.mark.parametrize("data", [bytearray(b"\x10\x01"), "text", None, 5])
def test_non_bytes_input_is_refused(data: object) -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        protobuf.parse(data, SCHEMA)  # type: ignore[arg-type]


def test_typed_getters() -> None:
    record = protobuf.parse(
        protobuf.encode_uint_field(2, 2**32) + protobuf.encode_bytes_field(1, b"x"), SCHEMA
    )
    assert protobuf.get_uint(record, 2, "counter") == 2**32
    assert protobuf.get_bytes(record, 1, "key") == b"x"
    with pytest.raises(DecodeError, match="counter out of range"):
        protobuf.get_uint(record, 2, "counter", 2**32 - 1)
    with pytest.raises(DecodeError, match="missing thing"):
        protobuf.get_uint(record, 7, "thing")
    with pytest.raises(DecodeError, match="missing blob"):
        protobuf.get_bytes(record, 7, "blob")
    with pytest.raises(DecodeError, match="not a byte string"):
        protobuf.get_bytes(record, 2, "counter")
    with pytest.raises(DecodeError, match="out of range"):
        protobuf.get_uint(record, 1, "key")


def test_schema_fields_are_varint_or_len_only() -> None:
    with pytest.raises(ValueError):
        Field(protobuf.FIXED64)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_decode_error(data: bytes) -> None:
    try:
        record = protobuf.parse(data, SCHEMA)
    except DecodeError:
        return
    assert set(record) <= set(SCHEMA)
