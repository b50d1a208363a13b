"""The blob service's client half: resumable uploads and resumable, bounded downloads over HTTP.

What this module owns
---------------------
:class:`BlobClient` speaks the protocol of :mod:`server.blobs` (docs/attachments.md).  An upload
takes a *source*: a function from an offset to the blob's bytes from that offset on, so that an
upload that breaks off can continue from the byte the service confirmed without the blob being
kept anywhere (the attachment layer re-encrypts the file and skips what was sent; encryption is
deterministic for a given key and IV).  A download appends to a file and continues with a Range
request from its length, and never writes more than the size the pointer announced: a hostile
or broken service cannot grow the file past it or hold more than a chunk in memory.

Invariants
----------
Refusals by the service raise :class:`BlobServiceError` with the service's error code; a
connection that keeps failing raises it with code ``unreachable`` after ``retries`` attempts.
Tokens never appear in errors or logs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from client.errors import ClientError

__all__ = ["BlobServiceError", "UploadReceipt", "BlobClient", "Progress", "Source"]

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as an upload or download advances."""
Source = Callable[[int], AsyncIterator[bytes]]
"""The blob's bytes from an offset on."""

_CHUNK: Final = 256 * 1024


class BlobServiceError(ClientError):
    """The blob service refused a request (``code`` is its error code) or could not be reached."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class UploadReceipt:
    """What the service says of a completed upload (times in ms since the epoch)."""

    blob_id: str
    size: int
    uploaded: int
    expires: int


async def _refusal(response: aiohttp.ClientResponse) -> BlobServiceError:
    try:
        body = json.loads(await response.read())
        error = body["error"]
        return BlobServiceError(str(error["code"]), str(error["message"]), response.status)
    except (ValueError, KeyError, TypeError):
        return BlobServiceError("http_error", f"HTTP status {response.status}", response.status)


def _offset(value: str | None, length: int) -> int:
    """An ``Upload-Offset`` the service sent, checked to lie within the upload."""
    if value is None or not value.isdigit() or int(value) > length:
        raise BlobServiceError("bad_offset", f"the service confirmed an impossible offset {value!r}")
    return int(value)


class BlobClient:
    """HTTP to one or more blob services; ``sleep`` is a parameter so tests need not wait."""

    def __init__(
        self,
        *,
        retries: int = 8,
        retry_delay: float = 0.2,
        timeout: float = 60.0,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._retries = retries
        self._retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _pause(self, attempt: int) -> None:
        await self._sleep(min(5.0, self._retry_delay * 2**attempt))

    async def upload(
        self, url: str, token: str, length: int, source: Source, progress: Progress | None = None
    ) -> UploadReceipt:
        """Upload ``length`` bytes from ``source``; resumes after a dropped connection.

        Every attempt that ends without the service confirming a byte more than before counts as a
        failure; after ``retries`` of them the upload gives up (``unreachable``).
        """
        auth = {"Authorization": f"Bearer {token}"}
        http = self._http()
        upload_id = await self._create(http, url, auth, length)
        location = f"{url}/v1/uploads/{upload_id}"
        offset, failures = 0, 0
        while True:
            before = offset
            try:
                offset_or_receipt = await self._attempt(
                    http, location, auth, offset, length, source, progress
                )
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                offset_or_receipt = None
            if isinstance(offset_or_receipt, UploadReceipt):
                return offset_or_receipt
            if offset_or_receipt is None:
                await self._pause(failures + 1)
                offset = await self._confirmed(http, location, auth, length, failures)
            else:
                offset = offset_or_receipt
            if offset <= before:
                failures += 1
                if failures > self._retries:
                    raise BlobServiceError("unreachable", "the upload makes no progress")

    async def _attempt(
        self,
        http: aiohttp.ClientSession,
        location: str,
        auth: dict[str, str],
        offset: int,
        length: int,
        source: Source,
        progress: Progress | None,
    ) -> UploadReceipt | int | None:
        """One PATCH from ``offset``: the receipt, the offset to continue at, or None to ask."""
        sent = offset

        async def body() -> AsyncIterator[bytes]:
            nonlocal sent
            async for chunk in source(offset):
                sent += len(chunk)
                if progress is not None:
                    progress(sent, length)
                yield chunk

        headers = {**auth, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        async with http.patch(location, data=body(), headers=headers) as response:
            if response.status == 201:
                receipt = await response.json()
                return UploadReceipt(
                    str(receipt["blob_id"]),
                    int(receipt["size"]),
                    int(receipt["uploaded"]),
                    int(receipt["expires"]),
                )
            if response.status == 204:
                return _offset(response.headers.get("Upload-Offset"), length)
            error = await _refusal(response)
            if error.code == "offset_mismatch":
                return _offset(response.headers.get("Upload-Offset"), length)
            if error.code in ("busy", "rate_limited"):
                return None
            raise error

    async def _create(self, http: aiohttp.ClientSession, url: str, auth: dict[str, str], length: int) -> str:
        for attempt in range(self._retries + 1):
            try:
                async with http.post(
                    f"{url}/v1/uploads", headers={**auth, "Upload-Length": str(length)}
                ) as response:
                    if response.status == 201:
                        return str((await response.json())["upload_id"])
                    error = await _refusal(response)
                    if error.code != "rate_limited":
                        raise error
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            await self._pause(attempt)
        raise BlobServiceError("unreachable", "the blob service could not be reached")

    async def _confirmed(
        self, http: aiohttp.ClientSession, location: str, auth: dict[str, str], length: int, failures: int
    ) -> int:
        while True:
            try:
                async with http.head(location, headers=auth) as response:
                    if response.status == 200:
                        return _offset(response.headers.get("Upload-Offset"), length)
                    if response.status != 429:
                        raise BlobServiceError(
                            "upload_lost", f"HTTP status {response.status}", response.status
                        )
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            failures += 1
            if failures > self._retries:
                raise BlobServiceError("unreachable", "the blob service could not be reached")
            await self._pause(failures)

    async def download(
        self, url: str, blob_id: str, destination: Path, size: int, progress: Progress | None = None
    ) -> None:
        """Make ``destination`` hold the blob's ``size`` bytes, continuing from what it holds."""
        http = self._http()
        failures = 0
        with open(destination, "ab") as file:
            while True:
                offset = file.tell()
                if offset > size:
                    file.truncate(0)
                    raise BlobServiceError("too_long", "the partial download is longer than the blob")
                if offset == size:
                    break
                headers = {"Range": f"bytes={offset}-"} if offset else {}
                try:
                    async with http.get(f"{url}/v1/blobs/{blob_id}", headers=headers) as response:
                        if response.status not in (200, 206):
                            error = await _refusal(response)
                            if error.code != "rate_limited":
                                raise error
                        else:
                            if response.status == 200 and offset:
                                file.truncate(0)
                                file.seek(0)
                                offset = 0
                            elif response.status == 206 and not response.headers.get(
                                "Content-Range", ""
                            ).startswith(f"bytes {offset}-"):
                                raise BlobServiceError("bad_range", "the service answered another range")
                            async for chunk in response.content.iter_chunked(_CHUNK):
                                if offset + len(chunk) > size:
                                    raise BlobServiceError(
                                        "too_long", "the blob is longer than its pointer says"
                                    )
                                file.write(chunk)
                                offset += len(chunk)
                                if progress is not None:
                                    progress(offset, size)
                            file.flush()
                            if offset == size:
                                continue
                except (TimeoutError, aiohttp.ClientError, ConnectionError):
                    file.flush()
                failures += 1
                if failures > self._retries:
                    raise BlobServiceError("unreachable", "the download failed too many times")
                await self._pause(failures)
            # No fsync: the partial ciphertext is a cache for resuming; losing it costs a download,
            # and what must be durable is the verified plaintext, which the caller fsyncs.
            file.flush()
