"""Where the blob service keeps bytes: the interface, its errors, and the filesystem backend.

Theory
------
A blob is an immutable byte string (an encrypted attachment, opaque here) named by an unguessable
id.  It is made by an *upload*: a reservation of a declared length owned by one device, filled by
appends at the offset the store last confirmed, and turned into a blob in one step when full.  An
append that stops early (the connection dropped) confirms what reached the disk, so the device
continues from there.  A blob becomes visible only whole: there is no moment at which a reader
sees part of it.  Blobs and unfinished uploads expire.

Quota: a device's usage is the length of its unexpired blobs plus the declared length of its
unfinished uploads; an upload is admitted only if that stays within the quota.  An upload that
fails for lack of space is discarded whole, so it charges nothing.

The filesystem backend (:class:`FilesystemBlobStore`, the embedded default) keeps, under its root::

    uploads/<upload id>.part   the bytes received so far (the confirmed offset is its length)
    uploads/<upload id>.json   the upload's owner, declared length and start time
    blobs/<blob id>.json       the blob's owner, size, upload and expiry times
    blobs/<blob id>            the bytes

Each metadata file is written to a temporary name, fsynced and renamed; completing an upload
fsyncs the part, writes the blob's metadata, then renames the part to ``blobs/<blob id>`` and
fsyncs the directory: the data file appears, complete, in one rename, and a blob exists exactly
when its data file does.  At open, leftovers of a crash (metadata without data, temporary files)
are removed and the index of sizes is rebuilt from the metadata files.  Metadata is JSON with a
``"v": 1`` field, never pickled.

What this module does not know
------------------------------
HTTP, tokens, rate limits, or what the bytes mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

__all__ = [
    "BLOB_ID",
    "Upload",
    "BlobInfo",
    "BlobStore",
    "BlobStoreError",
    "UnknownUploadError",
    "UnknownBlobError",
    "OffsetMismatchError",
    "UploadBusyError",
    "UploadOverflowError",
    "StorageFullError",
    "FilesystemBlobStore",
    "valid_id",
]

_log = logging.getLogger("server.blob_store")

# Blob and upload ids: 32 random bytes in unpadded base64url.  Nothing else reaches a path.
BLOB_ID: Final = re.compile(r"[A-Za-z0-9_-]{43}")
_META_VERSION: Final = 1
_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def valid_id(value: str) -> bool:
    """Whether ``value`` has the shape of a blob or upload id (so it cannot name another path)."""
    return BLOB_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Upload:
    """An unfinished upload: its owner (``account``/``device_id``), declared length and progress."""

    upload_id: str
    account: str
    device_id: int
    length: int
    created: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A complete blob: its size, owner, and upload and expiry times (ms since the epoch)."""

    blob_id: str
    size: int
    account: str
    device_id: int
    uploaded: int
    expires: int


class BlobStoreError(Exception):
    """The base of the blob stores' refusals."""


class UnknownUploadError(BlobStoreError):
    """No such unfinished upload (never made, completed, expired or discarded)."""


class UnknownBlobError(BlobStoreError):
    """No such blob, or it has expired."""


class OffsetMismatchError(BlobStoreError):
    """An append at another offset than the confirmed one; ``offset`` is the confirmed one."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the upload continues at byte {offset}")
        self.offset = offset


class UploadBusyError(BlobStoreError):
    """Another append to the same upload is in progress."""


class UploadOverflowError(BlobStoreError):
    """An append carried bytes beyond the declared length; nothing past the old offset is kept."""


class StorageFullError(BlobStoreError):
    """The storage ran out of space; the upload was discarded and charges nothing."""


class BlobStore(Protocol):
    """The operations the blob service needs; every method refuses with a :class:`BlobStoreError`."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_upload(self, upload: Upload) -> None:
        """Reserve an upload (its id is fresh and unguessable, chosen by the service)."""

    async def get_upload(self, upload_id: str) -> Upload:
        """The upload with its confirmed offset."""

    async def append(self, upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Append ``chunks`` at ``offset``; returns the new confirmed offset, even if they stop early."""

    async def complete(self, upload_id: str, blob_id: str, uploaded: int, expires: int) -> BlobInfo:
        """Turn a full upload into a visible blob, in one step."""

    async def blob(self, blob_id: str, now: int) -> BlobInfo:
        """A blob that exists and has not expired at ``now``."""

    def read(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The blob's bytes ``[start, end)`` in chunks."""

    async def usage(self, account: str, device_id: int, now: int) -> int:
        """Bytes charged to the device: unexpired blobs plus unfinished uploads' declared lengths."""

    async def expire(self, now: int, upload_ttl: int) -> int:
        """Delete blobs past their expiry and uploads older than ``upload_ttl`` ms; returns how many."""


_CHUNK: Final = 256 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomically(path: Path, document: dict[str, object]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(document, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _read_meta(path: Path, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """A metadata file of version 1 with ``fields``, or None (logged, left in place) if it is not one."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("v") != _META_VERSION:
            raise ValueError("not a version-1 metadata object")
        for name in fields:
            if not isinstance(meta.get(name), str if name == "account" else int):
                raise ValueError(f"field {name!r} is missing or of the wrong type")
        return meta
    except (OSError, ValueError) as error:
        _log.error("blob store: %s is unreadable, ignored: %s", path.name, error)
        return None


def _storage_error(error: OSError) -> BlobStoreError | None:
    return StorageFullError("the blob storage is full") if error.errno in _FULL_ERRNOS else None


class FilesystemBlobStore:
    """Blobs as files under ``root`` (see the module docstring); one process owns a root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._uploads_dir = self.root / "uploads"
        self._blobs_dir = self.root / "blobs"
        self._uploads: dict[str, Upload] = {}
        self._blobs: dict[str, BlobInfo] = {}
        self._busy: set[str] = set()
        # The offset of each upload confirmed on disk; a running append may have written past it.
        self._confirmed: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"FilesystemBlobStore({str(self.root)!r})"

    async def open(self) -> None:
        self._uploads_dir.mkdir(parents=True, exist_ok=True)
        self._blobs_dir.mkdir(parents=True, exist_ok=True)
        self._uploads.clear()
        self._blobs.clear()
        for path in self._uploads_dir.iterdir():
            if path.suffix == ".tmp":
                path.unlink()
            elif path.suffix == ".json" and valid_id(path.stem):
                meta = _read_meta(path, ("account", "device_id", "length", "created"))
                part = path.with_suffix(".part")
                if meta is None:
                    continue
                if not part.exists():
                    path.unlink()
                    continue
                self._uploads[path.stem] = Upload(
                    path.stem, meta["account"], meta["device_id"], meta["length"], meta["created"]
                )
                self._confirmed[path.stem] = part.stat().st_size
        for path in self._blobs_dir.iterdir():
            if path.suffix == ".tmp":
                path.unlink()
            elif path.suffix == ".json" and valid_id(path.stem):
                if not (self._blobs_dir / path.stem).exists():
                    # Metadata written but the data never renamed into place: a crash mid-completion.
                    path.unlink()
                    continue
                meta = _read_meta(path, ("size", "account", "device_id", "uploaded", "expires"))
                if meta is None:
                    continue
                self._blobs[path.stem] = BlobInfo(
                    path.stem,
                    meta["size"],
                    meta["account"],
                    meta["device_id"],
                    meta["uploaded"],
                    meta["expires"],
                )

    async def close(self) -> None:
        self._uploads.clear()
        self._blobs.clear()

    def _part(self, upload_id: str) -> Path:
        return self._uploads_dir / f"{upload_id}.part"

    async def create_upload(self, upload: Upload) -> None:
        if not valid_id(upload.upload_id) or upload.upload_id in self._uploads:
            raise ValueError("a fresh upload id")
        try:
            self._part(upload.upload_id).touch(exist_ok=False)
            _write_json_atomically(
                self._uploads_dir / f"{upload.upload_id}.json",
                {
                    "v": _META_VERSION,
                    "account": upload.account,
                    "device_id": upload.device_id,
                    "length": upload.length,
                    "created": upload.created,
                },
            )
        except OSError as error:
            self._discard(upload.upload_id)
            raise _storage_error(error) or error from None
        self._uploads[upload.upload_id] = upload
        self._confirmed[upload.upload_id] = 0

    async def get_upload(self, upload_id: str) -> Upload:
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise UnknownUploadError("no such upload")
        offset = self._confirmed[upload_id]
        return Upload(upload_id, upload.account, upload.device_id, upload.length, upload.created, offset)

    def _discard(self, upload_id: str) -> None:
        self._uploads.pop(upload_id, None)
        self._confirmed.pop(upload_id, None)
        for suffix in (".part", ".json", ".json.tmp"):
            with contextlib.suppress(FileNotFoundError):
                (self._uploads_dir / f"{upload_id}{suffix}").unlink()

    async def append(self, upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        upload = await self.get_upload(upload_id)
        if upload_id in self._busy:
            raise UploadBusyError("another append to this upload is in progress")
        if offset != upload.offset:
            raise OffsetMismatchError(upload.offset)
        self._busy.add(upload_id)
        position = offset
        try:
            with open(self._part(upload_id), "r+b") as file:
                file.seek(offset)
                try:
                    try:
                        async for chunk in chunks:
                            if position + len(chunk) > upload.length:
                                position = offset
                                raise UploadOverflowError("more bytes than the upload's declared length")
                            file.write(chunk)
                            position += len(chunk)
                    finally:
                        # Whatever arrived is confirmed only once it is on disk, and nothing after it
                        # (bytes of an earlier attempt) stays in the file.
                        file.truncate(position)
                        file.flush()
                        await asyncio.to_thread(os.fsync, file.fileno())
                        self._confirmed[upload_id] = position
                except OSError as error:
                    full = _storage_error(error)
                    if full is None:
                        raise
                    self._discard(upload_id)
                    raise full from None
        finally:
            self._busy.discard(upload_id)
        return position

    async def complete(self, upload_id: str, blob_id: str, uploaded: int, expires: int) -> BlobInfo:
        upload = await self.get_upload(upload_id)
        if upload.offset != upload.length:
            raise OffsetMismatchError(upload.offset)
        if upload_id in self._busy or not valid_id(blob_id) or blob_id in self._blobs:
            raise UploadBusyError("the upload is being completed")
        info = BlobInfo(blob_id, upload.length, upload.account, upload.device_id, uploaded, expires)
        self._busy.add(upload_id)
        try:
            _write_json_atomically(
                self._blobs_dir / f"{blob_id}.json",
                {
                    "v": _META_VERSION,
                    "size": info.size,
                    "account": info.account,
                    "device_id": info.device_id,
                    "uploaded": uploaded,
                    "expires": expires,
                },
            )
            os.replace(self._part(upload_id), self._blobs_dir / blob_id)
            _fsync_dir(self._blobs_dir)
        except OSError as error:
            with contextlib.suppress(FileNotFoundError):
                (self._blobs_dir / f"{blob_id}.json").unlink()
            self._discard(upload_id)
            raise _storage_error(error) or error from None
        finally:
            self._busy.discard(upload_id)
        self._discard(upload_id)
        self._blobs[blob_id] = info
        return info

    async def blob(self, blob_id: str, now: int) -> BlobInfo:
        info = self._blobs.get(blob_id) if valid_id(blob_id) else None
        if info is None or info.expires <= now:
            raise UnknownBlobError("no such blob")
        return info

    async def read(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        if blob_id not in self._blobs:
            raise UnknownBlobError("no such blob")
        with open(self._blobs_dir / blob_id, "rb") as file:
            file.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = file.read(min(_CHUNK, remaining))
                if not chunk:
                    raise UnknownBlobError("the blob is shorter than its metadata says")
                remaining -= len(chunk)
                yield chunk

    async def usage(self, account: str, device_id: int, now: int) -> int:
        blobs = sum(
            b.size
            for b in self._blobs.values()
            if b.account == account and b.device_id == device_id and b.expires > now
        )
        uploads = sum(
            u.length for u in self._uploads.values() if (u.account, u.device_id) == (account, device_id)
        )
        return blobs + uploads

    async def expire(self, now: int, upload_ttl: int) -> int:
        removed = 0
        for blob_id, info in list(self._blobs.items()):
            if info.expires <= now:
                del self._blobs[blob_id]
                for path in (self._blobs_dir / blob_id, self._blobs_dir / f"{blob_id}.json"):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                removed += 1
        for upload_id, upload in list(self._uploads.items()):
            if upload.created + upload_ttl <= now and upload_id not in self._busy:
                self._discard(upload_id)
                removed += 1
        return removed
