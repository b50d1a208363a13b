"""The PostgreSQL blob store behind real HTTP services: two nodes on one database share blobs and
uploads; resumption, ranges, quota, expiry and concurrent appends as on the filesystem."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from server.blob_pg import PostgresBlobStore
from server.blob_tokens import BlobTokens
from server.blobs import BlobLimits, BlobService

from .test_blobs import KEY, Clock, Service, _code, _send_partial_patch


@pytest.fixture
async def nodes(pg_database: Callable[[], str]) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    dsn = pg_database()
    services: list[BlobService] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(clock: Clock | None = None, **limits: object) -> Service:
        clock = clock or Clock()
        tokens = BlobTokens(KEY, clock=clock)
        limits_record = BlobLimits(**limits)  # type: ignore[arg-type]
        service = BlobService(PostgresBlobStore(dsn), tokens, limits_record, clock=clock)
        await service.start("127.0.0.1", 0)
        services.append(service)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Service(service, tokens, http, clock)

    yield start
    for http in sessions:
        await http.close()
    for service in services:
        await service.close()


async def test_a_blob_uploaded_to_one_node_downloads_from_another(nodes) -> None:
    first, second = await nodes(), await nodes()
    data = os.urandom(2_500_000)
    blob_id = await first.upload(data)
    status, body, headers = await second.get(blob_id)
    assert (status, body) == (200, data)
    assert "immutable" in headers["Cache-Control"]
    status, body, _ = await second.get(blob_id, {"Range": "bytes=1048570-1048589"})
    assert (status, body) == (206, data[1048570:1048590])
    status, body, _ = await second.get(blob_id, {"Range": "bytes=-3"})
    assert (status, body) == (206, data[-3:])


async def test_an_upload_dropped_on_one_node_continues_on_another(nodes) -> None:
    first, second = await nodes(), await nodes()
    data = os.urandom(3_000_000)
    upload_id = await first.new_upload(len(data))
    await _send_partial_patch(first, upload_id, 0, len(data), data[:1_500_000])
    for _ in range(100):
        confirmed = await second.offset(upload_id)
        if confirmed == 1_500_000:
            break
        await asyncio.sleep(0.05)
    assert confirmed == 1_500_000
    status, payload, _ = await second.patch(upload_id, confirmed, data[confirmed:])
    assert status == 201, payload
    assert (await first.get(payload["blob_id"]))[1] == data


async def test_offsets_tokens_and_ownership(nodes) -> None:
    node = await nodes()
    upload_id = await node.new_upload(1000)
    status, payload, headers = await node.patch(upload_id, 10, b"x")
    assert (status, _code(payload), headers["Upload-Offset"]) == (409, "offset_mismatch", "0")
    status, payload, _ = await node.patch(upload_id, 0, b"x" * 1000, node.token("mallory", 1))
    assert (status, _code(payload)) == (403, "forbidden")
    status, payload, _ = await node.patch(upload_id, 0, b"x" * 1001)
    assert (status, _code(payload)) == (413, "too_large")
    assert (await node.create(10, {})).status == 401
    status, payload, _ = await node.patch(upload_id, 0, b"x" * 1000)
    assert status == 201


async def test_quota_and_expiry(nodes) -> None:
    clock = Clock()
    node = await nodes(clock, device_quota_bytes=5000, blob_ttl=3600.0, upload_ttl=60.0)
    blob_id = await node.upload(b"q" * 4000)
    await node.new_upload(500)
    assert (await node.create(501)).status == 403
    clock.now += 3601
    assert (await node.get(blob_id))[0] == 404
    assert await node.service.sweep() == 2
    assert (await node.create(5000)).status == 201


async def test_concurrent_appends_from_two_nodes_leave_one_whole_blob(nodes) -> None:
    first, second = await nodes(), await nodes()
    data = os.urandom(4_000_000)
    upload_id = await first.new_upload(len(data))
    results = await asyncio.gather(first.patch(upload_id, 0, data), second.patch(upload_id, 0, data))
    statuses = sorted(status for status, _, _ in results)
    assert statuses[0] == 201 and statuses[1] == 409, statuses
    blob_id = next(payload["blob_id"] for status, payload, _ in results if status == 201)
    assert (await second.get(blob_id))[1] == data


async def test_blobs_survive_a_restart_of_every_node(nodes) -> None:
    node = await nodes()
    blob_id = await node.upload(b"durable")
    await node.service.close()
    again = await nodes()
    assert (await again.get(blob_id))[1] == b"durable"
