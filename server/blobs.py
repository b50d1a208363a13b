"""The blob service: an HTTP adapter over a :class:`~server.blob_store.BlobStore`.

Theory
------
Encrypted attachments do not travel through the message queue: the sender uploads the blob here
and sends only a pointer inside an end-to-end encrypted message.  The service stores bytes it
cannot read and serves them to whoever knows a blob's id, as a CDN serves media: the id (32
random bytes) is the capability to download.  Uploading needs a token that the relay issued to an
authenticated device (:mod:`server.blob_tokens`).  The protocol (docs/attachments.md)::

    POST  /v1/uploads            Authorization: Bearer T, Upload-Length: N  → 201 {"upload_id", "offset": 0}
    HEAD  /v1/uploads/{id}       Authorization: Bearer T                   → 200, Upload-Offset, Upload-Length
    PATCH /v1/uploads/{id}       Authorization, Upload-Offset: K, body      → 204 Upload-Offset (partial)
                                                                            → 201 {"blob_id", ...} (complete)
    GET   /v1/blobs/{blob id}    [Range: bytes=A-B]                         → 200 / 206 / 304 / 416
    HEAD  /v1/blobs/{blob id}                                               → 200 with the headers only

Every refusal is a JSON body ``{"error": {"code": ..., "message": ...}}`` with a stable code
(:class:`BlobErrorCode`) and a status.  An upload is resumable: a PATCH that breaks off confirms
the bytes that reached the disk, and HEAD tells the device where to continue.  Only the device
that created an upload may see or continue it.  Blobs are immutable, so downloads carry
``Cache-Control: public, max-age=…, immutable`` and an ``ETag`` (a cache in front sees only
ciphertext).

Bounds (:class:`BlobLimits`): the size of one blob (2 GiB by default), each device's quota, the
rate of upload creations per device and of requests per address (token buckets), how long a
blob lives (30 days), how long an unfinished upload may wait (1 day) and how long a body may stall
(30 s).  A PATCH body is read in chunks and written as it arrives: no request holds more than a
chunk in memory, and a stalled sender holds its upload only until the idle timeout.

What this module does not know
------------------------------
Identity keys, messages, or what a blob holds; who may register (the relay's job).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from server.blob_store import (
    BlobStore,
    OffsetMismatchError,
    StorageFullError,
    UnknownBlobError,
    UnknownUploadError,
    Upload,
    UploadBusyError,
    UploadOverflowError,
    valid_id,
)
from server.blob_tokens import BlobTokens, TokenError, TokenHolder

__all__ = ["BlobErrorCode", "BlobLimits", "BlobService"]

_log = logging.getLogger("server.blobs")

KIB: Final = 1024
MIB: Final = 1024 * KIB
GIB: Final = 1024 * MIB
DAY: Final = 86400.0
_READ_CHUNK: Final = 256 * KIB
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class BlobErrorCode:
    """The ``error.code`` values of the blob service, with their HTTP statuses."""

    UNAUTHENTICATED = ("unauthenticated", 401)
    FORBIDDEN = ("forbidden", 403)
    BAD_REQUEST = ("bad_request", 400)
    BAD_ID = ("bad_id", 400)
    NOT_FOUND = ("not_found", 404)
    TOO_LARGE = ("too_large", 413)
    OVER_QUOTA = ("over_quota", 403)
    OFFSET_MISMATCH = ("offset_mismatch", 409)
    BUSY = ("busy", 409)
    INCOMPLETE = ("incomplete", 409)
    RANGE_NOT_SATISFIABLE = ("range_not_satisfiable", 416)
    RATE_LIMITED = ("rate_limited", 429)
    STORAGE_FULL = ("storage_full", 507)


@dataclass(frozen=True, slots=True)
class BlobLimits:
    """The blob service's bounds; the defaults suit a small public service."""

    max_blob_bytes: int = 2 * GIB
    """The largest blob (an encrypted attachment of up to about 1.9 GiB of plaintext)."""
    device_quota_bytes: int = 10 * GIB
    """Bytes one device may have stored and reserved at once."""
    blob_ttl: float = 30 * DAY
    """Seconds a blob is kept after its upload completed."""
    upload_ttl: float = 1 * DAY
    """Seconds an unfinished upload may wait for its remaining bytes."""
    upload_rate: float = 1.0
    """Uploads per second a device may start, sustained."""
    upload_burst: int = 20
    request_rate: float = 50.0
    """Requests per second one address may make, sustained."""
    request_burst: int = 200
    sweep_interval: float = 60.0
    """Seconds between deletions of expired blobs and abandoned uploads."""
    idle_timeout: float = 30.0
    """Seconds an upload body may stall; then what arrived is confirmed and the request ends."""


class _Bucket:
    __slots__ = ("_rate", "_capacity", "_tokens", "_stamp")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self._rate, self._capacity, self._tokens, self._stamp = rate, capacity, capacity, now

    def try_take(self, now: float) -> float:
        """Take one token if there is one (0.0), else the seconds until there will be."""
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class _Refusal(Exception):
    def __init__(self, code: tuple[str, int], message: str, **headers: str) -> None:
        super().__init__(message)
        self.code, self.message, self.headers = code, message, headers


def _refusal_response(refusal: _Refusal) -> web.Response:
    name, status = refusal.code
    return web.json_response(
        {"error": {"code": name, "message": refusal.message}}, status=status, headers=refusal.headers
    )


def _new_id(rng: Callable[[int], bytes]) -> str:
    return base64.urlsafe_b64encode(rng(32)).rstrip(b"=").decode("ascii")


class BlobService:
    """The HTTP blob service on ``store``: ``await start(host, port)``, serve, ``await close()``.

    ``tokens`` checks upload tokens (the relay issues them with the same key).  ``clock`` is
    seconds since the epoch and ``rng`` makes ids; both are parameters so tests can move time.
    """

    def __init__(
        self,
        store: BlobStore,
        tokens: BlobTokens,
        limits: BlobLimits | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.limits = limits or BlobLimits()
        self.clock = clock
        self.rng = rng
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._device_buckets: dict[tuple[str, int], _Bucket] = {}
        self._address_buckets: dict[str, _Bucket] = {}
        self._admission = asyncio.Lock()
        self.host = ""
        self.port = 0

    def __repr__(self) -> str:
        return f"BlobService(url={self.url!r}, store={self.store!r})"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * KIB)
        app.router.add_post("/v1/uploads", self._create_upload)
        app.router.add_route("HEAD", "/v1/uploads/{upload_id}", self._upload_status)
        app.router.add_patch("/v1/uploads/{upload_id}", self._append)
        app.router.add_get("/v1/blobs/{blob_id}", self._download)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Open the store and listen; ``port`` 0 picks a free port (see :attr:`url`)."""
        await self.store.open()
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        sockname = server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.host, self.port = sockname[0], sockname[1]
        if not self.tokens.url:
            self.tokens.url = self.url
        self._sweeper = asyncio.create_task(self._sweep())
        _log.info("blobs listening url=%s store=%r", self.url, self.store)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.store.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_interval)
            await self.sweep()

    async def sweep(self) -> int:
        """Delete expired blobs and abandoned uploads now; returns how many."""
        removed = await self.store.expire(self._now_ms(), int(self.limits.upload_ttl * 1000))
        if removed:
            _log.info("blobs expired count=%d", removed)
        return removed

    # -- request plumbing ---------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], object]
    ) -> web.StreamResponse:
        address = request.remote or "-"
        try:
            self._rate_limit(
                self._address_buckets, address, self.limits.request_rate, self.limits.request_burst
            )
            response = await handler(request)  # type: ignore[misc]
        except _Refusal as refusal:
            _log.info("blobs refused %s %s code=%s", request.method, request.path, refusal.code[0])
            return _refusal_response(refusal)
        except web.HTTPException as exc:
            if exc.status == 404:
                return _refusal_response(_Refusal(BlobErrorCode.NOT_FOUND, "no such resource"))
            if exc.status == 405:
                return _refusal_response(_Refusal(BlobErrorCode.BAD_REQUEST, "method not allowed"))
            raise
        assert isinstance(response, web.StreamResponse)
        return response

    def _rate_limit(self, buckets: dict[_K, _Bucket], key: _K, rate: float, burst: int) -> None:
        now = time.monotonic()
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) > 100_000:
                buckets.clear()
            bucket = buckets[key] = _Bucket(rate, burst, now)
        wait = bucket.try_take(now)
        if wait:
            raise _Refusal(
                BlobErrorCode.RATE_LIMITED, "too many requests", **{"Retry-After": str(int(wait) + 1)}
            )

    def _holder(self, request: web.Request) -> TokenHolder:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Refusal(BlobErrorCode.UNAUTHENTICATED, "an upload token is required")
        try:
            return self.tokens.check(token.strip())
        except TokenError as error:
            raise _Refusal(BlobErrorCode.UNAUTHENTICATED, str(error)) from None

    async def _own_upload(self, request: web.Request) -> tuple[TokenHolder, Upload]:
        holder = self._holder(request)
        upload_id = request.match_info["upload_id"]
        if not valid_id(upload_id):
            raise _Refusal(BlobErrorCode.BAD_ID, "not an upload id")
        try:
            upload = await self.store.get_upload(upload_id)
        except UnknownUploadError:
            raise _Refusal(BlobErrorCode.NOT_FOUND, "no such upload") from None
        if (upload.account, upload.device_id) != (holder.account, holder.device_id):
            raise _Refusal(BlobErrorCode.FORBIDDEN, "the upload belongs to another device")
        return holder, upload

    @staticmethod
    def _integer_header(request: web.Request, name: str) -> int:
        value = request.headers.get(name)
        if value is None or not value.isdigit() or len(value) > 19:
            raise _Refusal(BlobErrorCode.BAD_REQUEST, f"{name} must be a non-negative integer")
        return int(value)

    # -- uploads ------------------------------------------------------------------------------

    async def _create_upload(self, request: web.Request) -> web.StreamResponse:
        holder = self._holder(request)
        length = self._integer_header(request, "Upload-Length")
        if length == 0 or length > self.limits.max_blob_bytes:
            raise _Refusal(BlobErrorCode.TOO_LARGE, f"a blob is 1 to {self.limits.max_blob_bytes} bytes")
        device = (holder.account, holder.device_id)
        self._rate_limit(self._device_buckets, device, self.limits.upload_rate, self.limits.upload_burst)
        # Admission is one critical section, so two concurrent uploads cannot both fit the quota.
        async with self._admission:
            used = await self.store.usage(holder.account, holder.device_id, self._now_ms())
            if used + length > self.limits.device_quota_bytes:
                raise _Refusal(
                    BlobErrorCode.OVER_QUOTA,
                    f"the device has {used} of {self.limits.device_quota_bytes} bytes in use",
                )
            upload = Upload(_new_id(self.rng), holder.account, holder.device_id, length, self._now_ms())
            try:
                await self.store.create_upload(upload)
            except StorageFullError as error:
                raise _Refusal(BlobErrorCode.STORAGE_FULL, str(error)) from None
        _log.info("blobs upload_created device=%s/%d length=%d", *device, length)
        return web.json_response(
            {"upload_id": upload.upload_id, "offset": 0, "length": length},
            status=201,
            headers={"Location": f"/v1/uploads/{upload.upload_id}", "Upload-Offset": "0"},
        )

    async def _upload_status(self, request: web.Request) -> web.StreamResponse:
        _, upload = await self._own_upload(request)
        return web.Response(
            status=200,
            headers={
                "Upload-Offset": str(upload.offset),
                "Upload-Length": str(upload.length),
                "Cache-Control": "no-store",
            },
        )

    async def _append(self, request: web.Request) -> web.StreamResponse:
        _, upload = await self._own_upload(request)
        offset = self._integer_header(request, "Upload-Offset")
        declared = request.content_length
        if declared is not None and offset + declared > upload.length:
            raise _Refusal(BlobErrorCode.TOO_LARGE, "the body goes past the upload's length")
        try:
            confirmed = await self.store.append(
                upload.upload_id, offset, _body_chunks(request, self.limits.idle_timeout)
            )
        except OffsetMismatchError as error:
            raise _Refusal(
                BlobErrorCode.OFFSET_MISMATCH, str(error), **{"Upload-Offset": str(error.offset)}
            ) from None
        except UploadBusyError as error:
            raise _Refusal(BlobErrorCode.BUSY, str(error)) from None
        except UploadOverflowError as error:
            raise _Refusal(BlobErrorCode.TOO_LARGE, str(error)) from None
        except StorageFullError as error:
            _log.warning("blobs storage_full upload discarded length=%d", upload.length)
            raise _Refusal(BlobErrorCode.STORAGE_FULL, str(error)) from None
        except UnknownUploadError:
            raise _Refusal(BlobErrorCode.NOT_FOUND, "no such upload") from None
        if confirmed < upload.length:
            return web.Response(status=204, headers={"Upload-Offset": str(confirmed)})
        now = self._now_ms()
        try:
            info = await self.store.complete(
                upload.upload_id, _new_id(self.rng), now, now + int(self.limits.blob_ttl * 1000)
            )
        except UploadBusyError as error:
            raise _Refusal(BlobErrorCode.BUSY, str(error)) from None
        except StorageFullError as error:
            raise _Refusal(BlobErrorCode.STORAGE_FULL, str(error)) from None
        except (UnknownUploadError, OffsetMismatchError):
            raise _Refusal(BlobErrorCode.INCOMPLETE, "the upload is not complete") from None
        _log.info("blobs blob_stored size=%d", info.size)
        return web.json_response(
            {"blob_id": info.blob_id, "size": info.size, "uploaded": info.uploaded, "expires": info.expires},
            status=201,
            headers={"Upload-Offset": str(confirmed)},
        )

    # -- downloads ----------------------------------------------------------------------------

    async def _download(self, request: web.Request) -> web.StreamResponse:
        blob_id = request.match_info["blob_id"]
        if not valid_id(blob_id):
            raise _Refusal(BlobErrorCode.BAD_ID, "not a blob id")
        now = self._now_ms()
        try:
            info = await self.store.blob(blob_id, now)
        except UnknownBlobError:
            raise _Refusal(BlobErrorCode.NOT_FOUND, "no such blob") from None
        etag = f'"{blob_id}"'
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Cache-Control": f"public, max-age={max(0, (info.expires - now) // 1000)}, immutable",
            "Content-Type": "application/octet-stream",
        }
        if request.headers.get("If-None-Match") in (etag, "*"):
            return web.Response(status=304, headers=headers)
        start, end, status = 0, info.size, 200
        range_header = request.headers.get("Range")
        if range_header is not None and request.headers.get("If-Range", etag) == etag:
            start, end = _parse_range(range_header, info.size)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        async for chunk in self.store.read(blob_id, start, end):
            await response.write(chunk)
        await response.write_eof()
        return response


_K = tuple[str, int] | str


async def _body_chunks(request: web.Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The request body in chunks; a body cut short or stalled ends the iteration instead of raising.

    Either way the store confirms what arrived, and the device continues from there.
    """
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.read(_READ_CHUNK), idle_timeout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception as error:  # aiohttp reports a broken body with its own payload errors
            if type(error).__module__.startswith("aiohttp"):
                return
            raise
        if not chunk:
            return
        yield chunk


def _parse_range(header: str, size: int) -> tuple[int, int]:
    """One ``bytes=`` range as ``[start, end)``; anything else is a 416 refusal."""
    match = _RANGE.fullmatch(header.strip())
    unsatisfiable = _Refusal(
        BlobErrorCode.RANGE_NOT_SATISFIABLE,
        "one satisfiable bytes range",
        **{"Content-Range": f"bytes */{size}"},
    )
    if match is None or (not match.group(1) and not match.group(2)):
        raise unsatisfiable
    first, last = match.group(1), match.group(2)
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise unsatisfiable
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise unsatisfiable
    return start, end
