"""The PostgreSQL blob store: blobs shared by every node of a cluster through its database.

Theory
------
Several relay nodes already share one PostgreSQL database (docs/cluster.md); with this backend
their blob services share blobs the same way, so a blob uploaded through one node downloads
through any other, and an upload dropped on one node continues on another.  The semantics are
those of :mod:`server.blob_store`; the layout is three tables of its own, created on first open
and versioned in ``blob_schema`` (separate from the relay's migrations)::

    blob_uploads (upload_id, account, device_id, length, created, confirmed)
    blob_data    (upload_id, start, data)       the bytes, in chunks of at most 1 MiB
    blobs        (blob_id, upload_id, account, device_id, size, uploaded, expires)

An append commits each chunk together with the upload's new ``confirmed`` offset, guarded by the
old one (``UPDATE … WHERE confirmed = old``): the confirmed offset is always exactly the bytes
stored, and two nodes appending to the same upload cannot interleave (the loser gets
:class:`~server.blob_store.UploadBusyError`).  Completing inserts the ``blobs`` row and deletes
the upload row in one transaction: a blob is visible whole or not at all, and its data is never
copied.  A database out of space (SQLSTATE class 53) discards the upload, which then charges
nothing.

What this module does not know
------------------------------
HTTP, tokens, or what the bytes mean.  Quota admission is serialized per node only: two nodes
admitting uploads of one device at the same instant may together pass its quota by one upload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]

from server.blob_store import (
    BlobInfo,
    BlobStoreError,
    OffsetMismatchError,
    StorageFullError,
    UnknownBlobError,
    UnknownUploadError,
    Upload,
    UploadBusyError,
    UploadOverflowError,
)

__all__ = ["PostgresBlobStore"]

_SCHEMA_VERSION: Final = 1
_CHUNK: Final = 1024 * 1024
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS blob_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS blob_uploads (
    upload_id text PRIMARY KEY,
    account text NOT NULL,
    device_id integer NOT NULL,
    length bigint NOT NULL,
    created bigint NOT NULL,
    confirmed bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS blob_data (
    upload_id text NOT NULL,
    start bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (upload_id, start)
);
CREATE TABLE IF NOT EXISTS blobs (
    blob_id text PRIMARY KEY,
    upload_id text NOT NULL UNIQUE,
    account text NOT NULL,
    device_id integer NOT NULL,
    size bigint NOT NULL,
    uploaded bigint NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_by_device ON blobs (account, device_id);
CREATE INDEX IF NOT EXISTS blob_uploads_by_device ON blob_uploads (account, device_id);
"""


def _is_full(error: BaseException) -> bool:
    state = getattr(error, "sqlstate", "") or ""
    return isinstance(state, str) and state.startswith("53")


class PostgresBlobStore:
    """Blobs in PostgreSQL at ``dsn`` (see the module docstring)."""

    def __init__(self, dsn: str, *, pool_size: int = 4) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"PostgresBlobStore({self._dsn.rsplit('@', 1)[-1]!r})"

    @property
    def pool(self) -> Any:
        if self._pool is None:
            raise BlobStoreError("the blob store is not open")
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._pool_size, server_settings={"application_name": "e2e-blobs"}
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                # One node creates the tables; the others wait on the lock and find them.
                await conn.execute("SELECT pg_advisory_xact_lock(7271001)")
                await conn.execute(_SCHEMA)
                version = await conn.fetchval("SELECT max(version) FROM blob_schema")
                if version is None:
                    await conn.execute("INSERT INTO blob_schema VALUES ($1)", _SCHEMA_VERSION)
                elif version > _SCHEMA_VERSION:
                    raise BlobStoreError(f"blob schema version {version} is newer than this code")
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def create_upload(self, upload: Upload) -> None:
        try:
            await self.pool.execute(
                "INSERT INTO blob_uploads (upload_id, account, device_id, length, created) "
                "VALUES ($1, $2, $3, $4, $5)",
                upload.upload_id,
                upload.account,
                upload.device_id,
                upload.length,
                upload.created,
            )
        except asyncpg.PostgresError as error:
            if _is_full(error):
                raise StorageFullError("the blob storage is full") from None
            raise

    async def get_upload(self, upload_id: str) -> Upload:
        row = await self.pool.fetchrow(
            "SELECT account, device_id, length, created, confirmed FROM blob_uploads WHERE upload_id = $1",
            upload_id,
        )
        if row is None:
            raise UnknownUploadError("no such upload")
        return Upload(upload_id, row[0], row[1], row[2], row[3], row[4])

    async def _discard(self, upload_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM blob_uploads WHERE upload_id = $1", upload_id)
            await conn.execute("DELETE FROM blob_data WHERE upload_id = $1", upload_id)

    async def _commit_chunk(self, upload_id: str, position: int, data: bytes) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            updated = await conn.execute(
                "UPDATE blob_uploads SET confirmed = $3 WHERE upload_id = $1 AND confirmed = $2",
                upload_id,
                position,
                position + len(data),
            )
            if updated != "UPDATE 1":
                raise UploadBusyError("another append to this upload is in progress")
            await conn.execute(
                "INSERT INTO blob_data (upload_id, start, data) VALUES ($1, $2, $3)",
                upload_id,
                position,
                data,
            )

    async def append(self, upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        upload = await self.get_upload(upload_id)
        if offset != upload.offset:
            raise OffsetMismatchError(upload.offset)
        position = offset
        pending = bytearray()
        try:
            try:
                async for chunk in chunks:
                    if position + len(pending) + len(chunk) > upload.length:
                        raise UploadOverflowError("more bytes than the upload's declared length")
                    pending += chunk
                    while len(pending) >= _CHUNK:
                        piece = bytes(pending[:_CHUNK])
                        await self._commit_chunk(upload_id, position, piece)
                        del pending[:_CHUNK]
                        position += len(piece)
            except UploadOverflowError:
                pending.clear()
                raise
            finally:
                if pending:
                    await self._commit_chunk(upload_id, position, bytes(pending))
                    position += len(pending)
        except asyncpg.PostgresError as error:
            if not _is_full(error):
                raise
            await self._discard(upload_id)
            raise StorageFullError("the blob storage is full") from None
        return position

    async def complete(self, upload_id: str, blob_id: str, uploaded: int, expires: int) -> BlobInfo:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM blob_uploads WHERE upload_id = $1 AND confirmed = length "
                "RETURNING account, device_id, length",
                upload_id,
            )
            if row is None:
                raise UnknownUploadError("no complete upload of that id")
            await conn.execute(
                "INSERT INTO blobs (blob_id, upload_id, account, device_id, size, uploaded, expires) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                blob_id,
                upload_id,
                row[0],
                row[1],
                row[2],
                uploaded,
                expires,
            )
        return BlobInfo(blob_id, row[2], row[0], row[1], uploaded, expires)

    async def blob(self, blob_id: str, now: int) -> BlobInfo:
        row = await self.pool.fetchrow(
            "SELECT size, account, device_id, uploaded, expires FROM blobs "
            "WHERE blob_id = $1 AND expires > $2",
            blob_id,
            now,
        )
        if row is None:
            raise UnknownBlobError("no such blob")
        return BlobInfo(blob_id, row[0], row[1], row[2], row[3], row[4])

    async def read(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        upload_id = await self.pool.fetchval("SELECT upload_id FROM blobs WHERE blob_id = $1", blob_id)
        if upload_id is None:
            raise UnknownBlobError("no such blob")
        position = start
        while position < end:
            # One chunk per query: no transaction stays open while a slow reader drains the response.
            row = await self.pool.fetchrow(
                "SELECT start, data FROM blob_data WHERE upload_id = $1 AND start <= $2 "
                "ORDER BY start DESC LIMIT 1",
                upload_id,
                position,
            )
            if row is None or row[0] + len(row[1]) <= position:
                raise UnknownBlobError("the blob's data is missing")
            piece = row[1][position - row[0] : end - row[0]]
            position += len(piece)
            yield piece

    async def usage(self, account: str, device_id: int, now: int) -> int:
        value = await self.pool.fetchval(
            "SELECT coalesce((SELECT sum(size) FROM blobs WHERE account = $1 AND device_id = $2 "
            "AND expires > $3), 0) + coalesce((SELECT sum(length) FROM blob_uploads WHERE account = $1 "
            "AND device_id = $2), 0)",
            account,
            device_id,
            now,
        )
        return int(value)

    async def expire(self, now: int, upload_ttl: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            blobs = await conn.fetch("DELETE FROM blobs WHERE expires <= $1 RETURNING upload_id", now)
            uploads = await conn.fetch(
                "DELETE FROM blob_uploads WHERE created + $2 <= $1 RETURNING upload_id", now, upload_ttl
            )
            ids = [r[0] for r in blobs] + [r[0] for r in uploads]
            if ids:
                await conn.execute("DELETE FROM blob_data WHERE upload_id = ANY($1::text[])", ids)
        return len(ids)
