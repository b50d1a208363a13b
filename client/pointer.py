"""The attachment pointer: what a message carries so that its recipient can fetch and open a file.

What this module owns
---------------------
The versioned binary form of an :class:`AttachmentPointer`, the body of an envelope of content
type :data:`client.envelope.CONTENT_ATTACHMENT`.  It travels inside an ordinary end-to-end
encrypted message, so the relay and the blob store never see the key; forwarding a file is sending
the same pointer to someone else (the blob is not uploaded again).  Version 1::

    version      1 byte   0x01
    key          1 byte length (must be 64) ‖ AES-256 key ‖ HMAC-SHA256 key
    digest       32 bytes SHA-256 of the blob
    size         8 bytes  big-endian: the plaintext size (the blob's size follows from it)
    upload_time  8 bytes  big-endian milliseconds since the epoch, the blob service's clock
    blob_id      1 byte length ‖ ASCII [A-Za-z0-9_-], 22 to 64 characters
    content_type 1 byte length ‖ ASCII ``type/subtype`` in lower case, at most 127 bytes
    file_name    2 bytes big-endian length ‖ UTF-8, at most 255 bytes; may be empty

Invariants
----------
:func:`decode_pointer` is strict: anything but exactly this layout raises a subclass of
:class:`InvalidPointerError` (itself an :class:`e2e.errors.DecodeError`): a key of another
length (:class:`PointerKeyError`), a file name that could act as a path or fool a terminal
(:class:`UnsafeFileNameError`: path separators, ``.``/``..``, control and bidirectional-override
characters, Windows' reserved device names, a trailing dot or space), a blob id outside its
alphabet (so it can never traverse a path), trailing bytes.  Encoding checks the same rules, so
we never send what we would refuse.  A decoded file name is safe to show, but the client still
makes its own name when it saves a file (:func:`client.attachments.safe_file_name`): two senders
may pick the same name, and a name is never allowed to overwrite a file.  ``repr`` shows no key.
The pointer knows nothing of groups: the same bytes go to one contact or, later, to a group.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from e2e.attachment import DIGEST_LENGTH, KEY_LENGTH, MAX_SIZE, AttachmentKey
from e2e.errors import DecodeError

__all__ = [
    "POINTER_VERSION",
    "AttachmentPointer",
    "encode_pointer",
    "decode_pointer",
    "check_file_name",
    "InvalidPointerError",
    "PointerKeyError",
    "UnsafeFileNameError",
]

POINTER_VERSION: Final = 1
MAX_FILE_NAME_BYTES: Final = 255
_BLOB_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
_MEDIA_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,62}"
_CONTENT_TYPE = re.compile(f"{_MEDIA_NAME}/{_MEDIA_NAME}")
# Windows' device names, reserved with any extension (CON.txt is the console too).
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
# Characters that reorder or hide text on a terminal without being control characters.
_INVISIBLE = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c\ufeff")
_FORBIDDEN = frozenset('/\\:*?"<>|')


class InvalidPointerError(DecodeError):
    """A pointer that does not decode: wrong version or layout, or a field outside its rules."""


class PointerKeyError(InvalidPointerError):
    """A pointer whose attachment key is not 64 bytes."""


class UnsafeFileNameError(InvalidPointerError):
    """A file name that is a path, a device, or hides characters: refused, never sanitized silently."""


def check_file_name(name: str) -> None:
    """Raise :class:`UnsafeFileNameError` unless ``name`` is a plain file name (empty is allowed)."""
    if not name:
        return
    if len(name.encode("utf-8", errors="surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise UnsafeFileNameError(f"a file name is at most {MAX_FILE_NAME_BYTES} bytes of UTF-8")
    for character in name:
        if character in _FORBIDDEN:
            raise UnsafeFileNameError(f"a file name holds no {character!r}")
        if character in _INVISIBLE or unicodedata.category(character) in ("Cc", "Cs", "Zl", "Zp"):
            raise UnsafeFileNameError(f"a file name holds no control character (U+{ord(character):04X})")
    if name.strip(". ") == "":
        raise UnsafeFileNameError("a file name is more than dots and spaces")
    if name[-1] in ". " or name[0] == " ":
        raise UnsafeFileNameError("a file name neither starts with a space nor ends with a dot or space")
    if name.split(".", 1)[0].rstrip(" ").lower() in _RESERVED:
        raise UnsafeFileNameError(f"{name!r} is a reserved device name")


@dataclass(frozen=True, slots=True)
class AttachmentPointer:
    """Everything a recipient needs to fetch, verify and name one attachment."""

    key: AttachmentKey
    digest: bytes
    size: int
    content_type: str
    file_name: str
    blob_id: str
    upload_time: int

    def __post_init__(self) -> None:
        if not isinstance(self.key, AttachmentKey):
            raise PointerKeyError("the key is an AttachmentKey")
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_LENGTH:
            raise InvalidPointerError(f"the digest is {DIGEST_LENGTH} bytes")
        if type(self.size) is not int or not 0 <= self.size <= MAX_SIZE:
            raise InvalidPointerError("the size is a non-negative 62-bit integer")
        if type(self.upload_time) is not int or not 0 <= self.upload_time < 1 << 64:
            raise InvalidPointerError("the upload time is an unsigned 64-bit number of milliseconds")
        if not isinstance(self.blob_id, str) or not _BLOB_ID.fullmatch(self.blob_id):
            raise InvalidPointerError("the blob id is 22 to 64 characters of [A-Za-z0-9_-]")
        if not isinstance(self.content_type, str) or not _CONTENT_TYPE.fullmatch(self.content_type):
            raise InvalidPointerError("the content type is a lower-case type/subtype")
        if not isinstance(self.file_name, str):
            raise UnsafeFileNameError("the file name is a string")
        check_file_name(self.file_name)


def encode_pointer(pointer: AttachmentPointer) -> bytes:
    """The pointer's version-1 bytes."""
    name = pointer.file_name.encode("utf-8")
    content_type = pointer.content_type.encode("ascii")
    blob_id = pointer.blob_id.encode("ascii")
    return b"".join(
        (
            bytes((POINTER_VERSION, KEY_LENGTH)),
            pointer.key.key,
            pointer.digest,
            pointer.size.to_bytes(8, "big"),
            pointer.upload_time.to_bytes(8, "big"),
            bytes((len(blob_id),)),
            blob_id,
            bytes((len(content_type),)),
            content_type,
            len(name).to_bytes(2, "big"),
            name,
        )
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int, what: str) -> bytes:
        if self._at + n > len(self._data):
            raise InvalidPointerError(f"the pointer ends inside its {what}")
        piece = self._data[self._at : self._at + n]
        self._at += n
        return piece

    def done(self) -> None:
        if self._at != len(self._data):
            raise InvalidPointerError("trailing bytes after the pointer")


def decode_pointer(data: bytes) -> AttachmentPointer:
    """Parse a pointer strictly; see the module docstring for what is refused."""
    reader = _Reader(data)
    version = reader.take(1, "version")[0]
    if version != POINTER_VERSION:
        raise InvalidPointerError(f"unknown attachment pointer version {version}")
    key_length = reader.take(1, "key length")[0]
    if key_length != KEY_LENGTH:
        raise PointerKeyError(f"an attachment key is {KEY_LENGTH} bytes, not {key_length}")
    key = AttachmentKey(reader.take(KEY_LENGTH, "key"))
    digest = reader.take(DIGEST_LENGTH, "digest")
    size = int.from_bytes(reader.take(8, "size"), "big")
    upload_time = int.from_bytes(reader.take(8, "upload time"), "big")
    blob_id = reader.take(reader.take(1, "blob id length")[0], "blob id")
    content_type = reader.take(reader.take(1, "content type length")[0], "content type")
    name = reader.take(int.from_bytes(reader.take(2, "file name length"), "big"), "file name")
    reader.done()
    try:
        blob_id_text = blob_id.decode("ascii")
        content_type_text = content_type.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidPointerError("the blob id and content type are ASCII") from None
    try:
        name_text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeFileNameError("the file name is not UTF-8") from None
    return AttachmentPointer(
        key=key,
        digest=digest,
        size=size,
        content_type=content_type_text,
        file_name=name_text,
        blob_id=blob_id_text,
        upload_time=upload_time,
    )
