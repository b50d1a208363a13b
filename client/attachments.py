"""Sending and receiving files: encrypt while uploading, download, verify, then release the plaintext.

What this module owns
---------------------
The file half of attachments, between :mod:`e2e.attachment` (the crypto, no I/O),
:mod:`client.blobs` (HTTP) and :class:`client.Client` (which calls these functions from
``send_file``, ``forward_file`` and ``download``):

* :func:`upload_file` encrypts a file with a fresh key and IV while uploading it, chunk by chunk;
  if the upload breaks off it re-reads and re-encrypts the file, skipping the bytes the service
  confirmed (the same key and IV give the same blob), so nothing but a chunk is ever in memory
  and nothing is written to disk.  It returns the :class:`~client.pointer.AttachmentPointer`.
* :func:`download_file` downloads the blob into ``.partial/<blob id>.blob`` under the folder
  (resumable), verifies it whole (length, digest, MAC: :class:`e2e.attachment.AttachmentVerifier`)
  without decrypting, then decrypts it in a second pass into a temporary file, and only when the
  decryptor's final check passed links that file under a safe name.  A blob that fails any check
  is deleted and never yields a plaintext file.
* :func:`safe_file_name` makes the name the file is saved under from the sender's: no path
  components, no control or direction-changing characters, no reserved device names, never an
  existing file (``name (2).ext`` and so on; the final step is a hard link, which fails instead of
  replacing).

Invariants
----------
The plaintext file appears only whole and verified.  Temporary and partial files are mode 0600.
A file that changes size while it is being sent is refused
(:class:`e2e.attachment.AttachmentLengthError`) and so is one that changes content between two
attempts of one upload (:class:`FileChangedError`).
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from client.blobs import BlobClient, Progress
from client.errors import ClientError
from client.pointer import AttachmentPointer, UnsafeFileNameError, check_file_name
from e2e.attachment import (
    AttachmentEncryptor,
    AttachmentKey,
    AttachmentVerifier,
    InvalidAttachmentError,
    blob_size,
)
from e2e.keys import Rng

__all__ = ["FileChangedError", "SentFile", "safe_file_name", "upload_file", "download_file", "PARTIAL_FOLDER"]

PARTIAL_FOLDER: Final = ".partial"
_CHUNK: Final = 256 * 1024
_IV_LENGTH: Final = 16
_NAME_BUDGET: Final = 200
_FALLBACK: Final = "attachment"
_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_INVISIBLE = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c\ufeff")


class FileChangedError(ClientError):
    """The file being sent changed between two attempts of its upload."""


@dataclass(frozen=True, slots=True)
class SentFile:
    """A file sent: the message that carried its pointer, and the pointer (to forward it later)."""

    message_id: str
    pointer: AttachmentPointer


def safe_file_name(name: str, fallback: str = _FALLBACK) -> str:
    """A plain file name made from ``name``: the last path component, cleaned, never empty.

    The result always passes :func:`client.pointer.check_file_name`.
    """
    name = re.split(r"[/\\]", name)[-1]
    cleaned = []
    for character in unicodedata.normalize("NFC", name):
        if character in _INVISIBLE or unicodedata.category(character) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            continue
        cleaned.append("_" if character in ':*?"<>|' else character)
    name = "".join(cleaned).strip(" .")
    if _RESERVED.fullmatch(name):
        name = "_" + name
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    while len(name.encode("utf-8")) > _NAME_BUDGET:
        if len(stem) > 1:
            stem = stem[: max(1, len(stem) - 8)]
        else:
            extension = extension[: max(0, len(extension) - 8)]
        name = f"{stem}.{extension}" if extension else stem
        name = name.strip(" .")
    if not name:
        name = fallback
    try:
        check_file_name(name)
    except UnsafeFileNameError:
        return fallback
    return name


def _content_type(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    guessed, _ = mimetypes.guess_type(path.name, strict=False)
    if guessed and re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", guessed.lower()):
        return guessed.lower()
    return "application/octet-stream"


async def upload_file(
    blobs: BlobClient,
    url: str,
    token: str,
    path: Path,
    rng: Rng,
    *,
    content_type: str | None = None,
    progress: Progress | None = None,
) -> AttachmentPointer:
    """Encrypt ``path`` with a fresh key while uploading it; the pointer for the message."""
    size = path.stat().st_size
    key = AttachmentKey.generate(rng)
    iv = rng(_IV_LENGTH)
    digests: list[bytes] = []

    async def source(offset: int) -> AsyncIterator[bytes]:
        encryptor = AttachmentEncryptor(key, iv, size)
        position = 0

        def skip(data: bytes) -> bytes:
            nonlocal position
            start = max(0, offset - position)
            position += len(data)
            return data[start:]

        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                out = skip(encryptor.update(chunk))
                if out:
                    yield out
        for tail in encryptor.finalize(_CHUNK):
            out = skip(tail)
            if out:
                yield out
        if digests and digests[0] != encryptor.digest:
            raise FileChangedError(f"{path.name} changed while it was being sent")
        digests.append(encryptor.digest)

    receipt = await blobs.upload(url, token, blob_size(size), source, progress)
    if not digests:
        # The service had every byte before this attempt's stream ended: run it once for the digest.
        async for _ in source(blob_size(size)):
            pass
    return AttachmentPointer(
        key=key,
        digest=digests[-1],
        size=size,
        content_type=_content_type(path, content_type),
        file_name=safe_file_name(path.name),
        blob_id=receipt.blob_id,
        upload_time=receipt.uploaded,
    )


def _place(temporary: Path, folder: Path, name: str) -> Path:
    """Give ``temporary`` its final name without ever replacing a file; returns the name used."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        stem, extension = name, ""
    for number in range(1, 10_000):
        candidate = (
            name if number == 1 else (f"{stem} ({number}).{extension}" if extension else f"{stem} ({number})")
        )
        target = folder / candidate
        try:
            os.link(temporary, target)
        except FileExistsError:
            continue
        temporary.unlink()
        return target
    raise ClientError(f"no free file name for {name!r} in {folder}")


async def download_file(
    blobs: BlobClient,
    url: str,
    pointer: AttachmentPointer,
    folder: Path,
    *,
    progress: Progress | None = None,
) -> Path:
    """Download, verify and decrypt the pointer's file into ``folder``; returns the saved file."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / PARTIAL_FOLDER
    partial.mkdir(mode=0o700, exist_ok=True)
    ciphertext = partial / f"{pointer.blob_id}.blob"
    if not ciphertext.exists():
        os.close(os.open(ciphertext, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    await blobs.download(url, pointer.blob_id, ciphertext, blob_size(pointer.size), progress)
    try:
        verifier = AttachmentVerifier(pointer.key, pointer.digest, pointer.size)
        with open(ciphertext, "rb") as file:
            while chunk := file.read(_CHUNK):
                verifier.update(chunk)
        verified = verifier.verify()
    except InvalidAttachmentError:
        ciphertext.unlink()
        raise
    descriptor, temporary_name = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=".tmp")
    temporary = Path(temporary_name)
    try:
        decryptor = verified.decryptor()
        with open(ciphertext, "rb") as source, os.fdopen(descriptor, "wb") as sink:
            while chunk := source.read(_CHUNK):
                sink.write(decryptor.update(chunk))
            decryptor.finalize()
            sink.flush()
            os.fsync(sink.fileno())
        saved = _place(temporary, folder, safe_file_name(pointer.file_name))
    except InvalidAttachmentError:
        temporary.unlink()
        ciphertext.unlink()
        raise
    except BaseException:
        # Anything else (a full disk, a cancellation) keeps the verified ciphertext for a retry.
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    ciphertext.unlink()
    return saved
