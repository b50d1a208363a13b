"""The attachment pointer and the typed envelope: round trips, the frozen version-1 fixture, and
strict refusal of every malformed or hostile pointer."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import envelope
from client.pointer import (
    AttachmentPointer,
    InvalidPointerError,
    PointerKeyError,
    UnsafeFileNameError,
    check_file_name,
    decode_pointer,
    encode_pointer,
)
from e2e.attachment import AttachmentKey
from e2e.errors import DecodeError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "attachment-pointer-v1.json"
GOOD = AttachmentPointer(
    key=AttachmentKey(bytes(range(64))),
    digest=bytes(32),
    size=5,
    content_type="text/plain",
    file_name="notes.txt",
    blob_id="a" * 43,
    upload_time=1,
)

HOSTILE_NAMES = [
    "../etc/passwd",
    "..",
    ".",
    "...",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "C:evil",
    "a/b",
    "a\\b",
    "name\x00.txt",
    "bell\x07",
    "esc\x1b[31mred",
    "new\nline",
    "del\x7f",
    "c1\x85",
    "rlo\u202egnp.exe",
    "lsep\u2028",
    "CON",
    "con.txt",
    "Lpt1.log",
    "nul",
    "COM9.tar.gz",
    "trailing.",
    "trailing ",
    " leading",
    "x" * 256,
    "ä" * 128,
    "star*",
    "pipe|",
]


def test_round_trip_and_repr_redacts_the_key() -> None:
    assert decode_pointer(encode_pointer(GOOD)) == GOOD
    assert bytes(range(64)).hex() not in repr(GOOD)


def test_the_frozen_version_1_fixture_still_decodes() -> None:
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    pointer = decode_pointer(bytes.fromhex(fixture["record"]))
    expected = fixture["expected"]
    assert pointer.key.key.hex() == expected["key"]
    assert pointer.digest.hex() == expected["digest"]
    assert (pointer.size, pointer.content_type, pointer.file_name) == (
        expected["size"],
        expected["content_type"],
        expected["file_name"],
    )
    assert (pointer.blob_id, pointer.upload_time) == (expected["blob_id"], expected["upload_time"])
    assert encode_pointer(pointer).hex() == fixture["record"]


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters='/\\:*?"<>|'),
    min_size=1,
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(min_size=64, max_size=64),
    digest=st.binary(min_size=32, max_size=32),
    size=st.integers(0, (1 << 62) - 1),
    upload_time=st.integers(0, (1 << 64) - 1),
    blob_id=st.from_regex(r"[A-Za-z0-9_-]{22,64}", fullmatch=True),
    name=names,
)
def test_any_pointer_round_trips_or_its_name_is_refused(
    key, digest, size, upload_time, blob_id, name
) -> None:
    try:
        check_file_name(name)
    except UnsafeFileNameError:
        with pytest.raises(UnsafeFileNameError):
            replace(GOOD, file_name=name)
        return
    pointer = AttachmentPointer(AttachmentKey(key), digest, size, "image/jpeg", name, blob_id, upload_time)
    assert decode_pointer(encode_pointer(pointer)) == pointer


def test_every_truncation_and_any_trailing_byte_is_refused() -> None:
    data = encode_pointer(GOOD)
    for cut in range(len(data)):
        with pytest.raises(InvalidPointerError):
            decode_pointer(data[:cut])
    with pytest.raises(InvalidPointerError):
        decode_pointer(data + b"\x00")
    assert issubclass(InvalidPointerError, DecodeError)


@pytest.mark.parametrize("length", [0, 32, 63, 65, 255])
def test_a_bad_key_length_is_refused(length: int) -> None:
    data = bytearray(encode_pointer(GOOD))
    data[1] = length
    with pytest.raises(PointerKeyError):
        decode_pointer(bytes(data))


def _with_name(raw: bytes) -> bytes:
    data = encode_pointer(GOOD)
    name_length = len(GOOD.file_name.encode())
    return data[: -name_length - 2] + len(raw).to_bytes(2, "big") + raw


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_file_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeFileNameError):
        decode_pointer(_with_name(name.encode("utf-8")))
    with pytest.raises(UnsafeFileNameError):
        replace(GOOD, file_name=name)


def test_a_name_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(UnsafeFileNameError):
        decode_pointer(_with_name(b"\xff\xfe.png"))


def test_plain_names_pass() -> None:
    for name in ("photo.jpg", "Ferien am Meer ☀.png", ".hidden", "a.b.c", "console.log", "", "日本語.txt"):
        check_file_name(name)


@pytest.mark.parametrize(
    "blob_id", ["../../../../etc/passwd", "a" * 21, "a" * 65, "a/" + "b" * 30, "a." + "b" * 30, "é" * 30]
)
def test_blob_ids_outside_their_alphabet_are_refused(blob_id: str) -> None:
    with pytest.raises(InvalidPointerError):
        replace(GOOD, blob_id=blob_id)
    data = encode_pointer(GOOD)
    start = 1 + 1 + 64 + 32 + 16
    raw = blob_id.encode("utf-8")
    tampered = data[:start] + bytes((len(raw),)) + raw + data[start + 1 + 43 :]
    with pytest.raises(InvalidPointerError):
        decode_pointer(tampered)


@pytest.mark.parametrize("content_type", ["", "image", "Image/PNG", "image/png; x=1", "a/b/c", "ö/x"])
def test_bad_content_types_are_refused(content_type: str) -> None:
    with pytest.raises(InvalidPointerError):
        replace(GOOD, content_type=content_type)


def test_unknown_version_and_bad_fields() -> None:
    data = encode_pointer(GOOD)
    with pytest.raises(InvalidPointerError):
        decode_pointer(b"\x02" + data[1:])
    with pytest.raises(InvalidPointerError):
        decode_pointer(b"")
    with pytest.raises(InvalidPointerError):
        replace(GOOD, digest=bytes(31))
    with pytest.raises(InvalidPointerError):
        replace(GOOD, size=-1)


def test_text_envelopes_keep_their_version_1_bytes() -> None:
    message = envelope.Envelope(bytes(16), 7, b"hello")
    encoded = envelope.encode(message)
    assert encoded == b"\x01" + bytes(16) + (7).to_bytes(8, "big") + b"hello"
    assert envelope.decode(encoded) == message


def test_an_attachment_envelope_carries_its_content_type() -> None:
    body = encode_pointer(GOOD)
    message = envelope.Envelope(bytes(16), 7, body, envelope.CONTENT_ATTACHMENT)
    encoded = envelope.encode(message)
    assert encoded[0] == 2 and encoded[25] == envelope.CONTENT_ATTACHMENT
    decoded = envelope.decode(encoded)
    assert decoded == message and decode_pointer(decoded.body) == GOOD


# Content types 2 and 3 are group sender keys, 4 and 5 quick replies, 6 a transcript for our own
# devices; 7 and 255 are unknown, with no fallback text.
@pytest.mark.parametrize("content_type", [0, 7, 255])
def test_a_typed_envelope_with_an_unknown_or_text_type_is_refused(content_type: int) -> None:
    encoded = b"\x02" + bytes(16) + bytes(8) + bytes((content_type,)) + b"x"
    with pytest.raises(DecodeError):
        envelope.decode(encoded)
    with pytest.raises(DecodeError):
        envelope.decode(b"\x02" + bytes(24))
    with pytest.raises(ValueError):
        envelope.encode(envelope.Envelope(bytes(16), 0, b"", 9))
