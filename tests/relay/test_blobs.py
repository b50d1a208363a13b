"""The blob service through real HTTP on loopback, real files, and a real relay issuing tokens.

Uploads need a token the relay issued to an authenticated device; only that device continues its
upload; caps, quotas and rates refuse with typed codes; an interrupted upload resumes from the
confirmed offset; Range requests, caching headers, expiry; ids that try to leave the blob folder;
a disk that fills mid-upload (a file-size limit on the ``e2e-blobs`` process)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from client.transport import RelayError
from server import Relay
from server.blob_store import FilesystemBlobStore
from server.blob_tokens import BlobTokens
from server.blobs import BlobLimits, BlobService
from server.sqlite_store import SQLiteStore

from .conftest import REPO, TEST_LIMITS, Device

KEY = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Service:
    """A running blob service and an HTTP session to talk to it."""

    def __init__(self, service: BlobService, tokens: BlobTokens, http: aiohttp.ClientSession, clock: Clock):
        self.service = service
        self.tokens = tokens
        self.http = http
        self.clock = clock
        self.url = service.url

    def token(self, account: str = "alice", device_id: int = 1) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.issue(account, device_id)[0]}"}

    async def create(self, length: int, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        headers = {**(headers if headers is not None else self.token()), "Upload-Length": str(length)}
        async with self.http.post(f"{self.url}/v1/uploads", headers=headers) as response:
            await response.read()
            return response

    async def new_upload(self, length: int, headers: dict[str, str] | None = None) -> str:
        async with self.http.post(
            f"{self.url}/v1/uploads",
            headers={**(headers or self.token()), "Upload-Length": str(length)},
        ) as response:
            assert response.status == 201, await response.text()
            return str((await response.json())["upload_id"])

    async def patch(
        self, upload_id: str, offset: int, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict, dict[str, str]]:
        async with self.http.patch(
            f"{self.url}/v1/uploads/{upload_id}",
            data=body,
            headers={**(headers or self.token()), "Upload-Offset": str(offset)},
        ) as response:
            payload = await response.json() if response.content_type == "application/json" else {}
            return response.status, payload, response.headers.copy()

    async def offset(self, upload_id: str, headers: dict[str, str] | None = None) -> int:
        async with self.http.head(f"{self.url}/v1/uploads/{upload_id}", headers=headers or self.token()) as r:
            assert r.status == 200, r.status
            return int(r.headers["Upload-Offset"])

    async def upload(self, data: bytes, headers: dict[str, str] | None = None) -> str:
        upload_id = await self.new_upload(len(data), headers)
        status, payload, _ = await self.patch(upload_id, 0, data, headers)
        assert status == 201, payload
        return str(payload["blob_id"])

    async def get(self, blob_id: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
        async with self.http.get(f"{self.url}/v1/blobs/{blob_id}", headers=headers or {}) as response:
            return response.status, await response.read(), response.headers.copy()


def _code(payload: dict) -> str:
    return str(payload["error"]["code"])


@pytest.fixture
async def blobs_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    services: list[BlobService] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(root: Path | None = None, clock: Clock | None = None, **limits: object) -> Service:
        clock = clock or Clock()
        tokens = BlobTokens(KEY, clock=clock)
        service = BlobService(
            FilesystemBlobStore(root or tmp_path / "blobs"),
            tokens,
            dataclasses.replace(BlobLimits(), **limits),  # type: ignore[arg-type]
            clock=clock,
        )
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


@pytest.fixture
async def blobs(blobs_factory: Callable[..., Awaitable[Service]]) -> Service:
    return await blobs_factory()


# -- tokens from the relay ------------------------------------------------------------------------


async def test_a_device_gets_its_token_from_the_relay_and_uploads(tmp_path: Path, blobs: Service) -> None:
    relay = Relay(SQLiteStore(tmp_path / "relay.sqlite3"), TEST_LIMITS)
    relay.blob_tokens = blobs.tokens
    await relay.start("127.0.0.1", 0)
    try:
        device = Device("alice", 1, os.urandom)
        connection = await device.register(relay.url)
        answer = await connection.request("blob_upload_token")
        await connection.close()
    finally:
        await relay.close()
    assert answer["url"] == blobs.url
    assert answer["expires"] > time.time() * 1000
    data = os.urandom(5000)
    blob_id = await blobs.upload(data, {"Authorization": f"Bearer {answer['token']}"})
    status, body, _ = await blobs.get(blob_id)
    assert (status, body) == (200, data)
    holder = blobs.tokens.check(answer["token"])
    assert (holder.account, holder.device_id) == ("alice", 1)


async def test_the_token_op_needs_authentication_and_a_blob_service(tmp_path: Path) -> None:
    from client import transport

    relay = Relay(SQLiteStore(tmp_path / "relay.sqlite3"), TEST_LIMITS)
    await relay.start("127.0.0.1", 0)
    try:
        device = Device("bob", 1, os.urandom)
        connection = await device.register(relay.url)
        with pytest.raises(RelayError) as refused:
            await connection.request("blob_upload_token")
        assert refused.value.code == "not_found"
        await connection.close()
        raw = await transport.Connection.open(relay.url)
        with pytest.raises(RelayError) as unauthenticated:
            await raw.request("blob_upload_token")
        assert unauthenticated.value.code == "unauthenticated"
        await raw.close()
    finally:
        await relay.close()


# -- who may upload ---------------------------------------------------------------------------------


async def test_uploads_without_a_valid_token_are_refused(blobs: Service) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer " + "A" * 300},
        {"Authorization": "Bearer " + BlobTokens(bytes(32)).issue("alice", 1)[0]},
    ):
        response = await blobs.create(100, headers)
        assert response.status == 401
    expired = BlobTokens(KEY, clock=lambda: time.time() - 7200).issue("alice", 1)[0]
    async with blobs.http.post(
        f"{blobs.url}/v1/uploads", headers={"Authorization": f"Bearer {expired}", "Upload-Length": "10"}
    ) as response:
        assert response.status == 401
        assert _code(await response.json()) == "unauthenticated"
    assert not list((blobs.service.store.root / "uploads").iterdir())  # type: ignore[attr-defined]


async def test_another_devices_token_cannot_see_or_continue_an_upload(blobs: Service) -> None:
    upload_id = await blobs.new_upload(1000)
    status, _, _ = await blobs.patch(upload_id, 0, b"x" * 400)
    assert status == 204
    for other in (blobs.token("mallory", 1), blobs.token("alice", 2)):
        status, payload, _ = await blobs.patch(upload_id, 400, b"y" * 600, other)
        assert (status, _code(payload)) == (403, "forbidden")
        async with blobs.http.head(f"{blobs.url}/v1/uploads/{upload_id}", headers=other) as response:
            assert response.status == 403
    assert await blobs.offset(upload_id) == 400
    status, payload, _ = await blobs.patch(upload_id, 400, b"z" * 600)
    assert status == 201
    _, body, _ = await blobs.get(payload["blob_id"])
    assert body == b"x" * 400 + b"z" * 600


# -- caps, quotas, rates --------------------------------------------------------------------------


async def test_the_size_cap(blobs_factory: Callable[..., Awaitable[Service]]) -> None:
    blobs = await blobs_factory(max_blob_bytes=10_000)
    for length, status in ((10_001, 413), (0, 413), (10_000, 201)):
        response = await blobs.create(length)
        assert response.status == status
    async with blobs.http.post(
        f"{blobs.url}/v1/uploads", headers={**blobs.token(), "Upload-Length": "-5"}
    ) as response:
        assert response.status == 400
    assert BlobLimits().max_blob_bytes == 2 * 1024**3


async def test_a_body_past_the_declared_length_is_refused(blobs: Service) -> None:
    upload_id = await blobs.new_upload(100)
    status, payload, _ = await blobs.patch(upload_id, 0, b"a" * 101)
    assert (status, _code(payload)) == (413, "too_large")
    assert await blobs.offset(upload_id) == 0

    async def chunked() -> AsyncIterator[bytes]:
        yield b"b" * 60
        yield b"b" * 60

    async with blobs.http.patch(
        f"{blobs.url}/v1/uploads/{upload_id}", data=chunked(), headers={**blobs.token(), "Upload-Offset": "0"}
    ) as response:
        assert response.status == 413
    assert await blobs.offset(upload_id) == 0


async def test_the_device_quota(blobs_factory: Callable[..., Awaitable[Service]]) -> None:
    blobs = await blobs_factory(device_quota_bytes=5000)
    await blobs.upload(b"a" * 3000)
    response = await blobs.create(2001)
    assert response.status == 403
    # Unfinished uploads count too, and another device has a quota of its own.
    pending = await blobs.new_upload(2000)
    assert (await blobs.create(1)).status == 403
    assert (await blobs.create(5000, blobs.token("bob", 1))).status == 201
    status, _, _ = await blobs.patch(pending, 0, b"b" * 2000)
    assert status == 201


async def test_concurrent_admissions_cannot_overrun_the_quota(
    blobs_factory: Callable[..., Awaitable[Service]],
) -> None:
    blobs = await blobs_factory(device_quota_bytes=10_000)
    responses = await asyncio.gather(*(blobs.create(3000) for _ in range(6)))
    assert sorted(r.status for r in responses) == [201, 201, 201, 403, 403, 403]


async def test_upload_creation_is_rate_limited(blobs_factory: Callable[..., Awaitable[Service]]) -> None:
    blobs = await blobs_factory(upload_rate=0.001, upload_burst=2)
    statuses = [(await blobs.create(10)).status for _ in range(3)]
    assert statuses == [201, 201, 429]
    async with blobs.http.post(
        f"{blobs.url}/v1/uploads", headers={**blobs.token(), "Upload-Length": "10"}
    ) as response:
        assert response.status == 429 and int(response.headers["Retry-After"]) > 0
    assert (await blobs.create(10, blobs.token("bob", 1))).status == 201


async def test_requests_per_address_are_rate_limited(
    blobs_factory: Callable[..., Awaitable[Service]],
) -> None:
    blobs = await blobs_factory(request_rate=0.001, request_burst=3)
    statuses = [(await blobs.get("A" * 43))[0] for _ in range(4)]
    assert statuses == [404, 404, 404, 429]


# -- resumable uploads ----------------------------------------------------------------------------


async def test_an_upload_in_pieces_and_an_offset_mismatch(blobs: Service) -> None:
    data = os.urandom(3000)
    upload_id = await blobs.new_upload(len(data))
    status, _, headers = await blobs.patch(upload_id, 0, data[:1000])
    assert (status, headers["Upload-Offset"]) == (204, "1000")
    status, payload, headers = await blobs.patch(upload_id, 500, data[500:])
    assert (status, _code(payload), headers["Upload-Offset"]) == (409, "offset_mismatch", "1000")
    status, payload, _ = await blobs.patch(upload_id, 1000, data[1000:])
    assert status == 201 and payload["size"] == 3000
    assert (await blobs.get(payload["blob_id"]))[1] == data
    # A finished upload is gone: it cannot be continued or completed twice.
    status, payload, _ = await blobs.patch(upload_id, 3000, b"")
    assert (status, _code(payload)) == (404, "not_found")


async def _send_partial_patch(service: Service, upload_id: str, offset: int, total: int, part: bytes) -> None:
    """A PATCH announcing ``total`` bytes that sends only ``part`` and then drops the connection."""
    token = service.token()["Authorization"]
    _reader, writer = await asyncio.open_connection(service.service.host, service.service.port)
    head = (
        f"PATCH /v1/uploads/{upload_id} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {total}\r\n\r\n"
    ).encode()
    writer.write(head + part)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()


async def test_a_dropped_upload_resumes_from_the_confirmed_byte(blobs: Service) -> None:
    data = os.urandom(200_000)
    upload_id = await blobs.new_upload(len(data))
    await _send_partial_patch(blobs, upload_id, 0, len(data), data[:70_000])
    for _ in range(50):
        confirmed = await blobs.offset(upload_id)
        if confirmed == 70_000:
            break
        await asyncio.sleep(0.05)
    assert confirmed == 70_000
    status, payload, _ = await blobs.patch(upload_id, confirmed, data[confirmed:])
    assert status == 201, payload
    assert (await blobs.get(payload["blob_id"]))[1] == data


async def test_a_stalled_upload_is_confirmed_and_released(
    blobs_factory: Callable[..., Awaitable[Service]],
) -> None:
    blobs = await blobs_factory(idle_timeout=0.3)
    data = os.urandom(100_000)
    upload_id = await blobs.new_upload(len(data))
    token = blobs.token()["Authorization"]
    _reader, writer = await asyncio.open_connection(blobs.service.host, blobs.service.port)
    writer.write(
        f"PATCH /v1/uploads/{upload_id} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data[:30_000]
    )
    await writer.drain()
    # The sender stalls with its connection open; after the idle timeout the upload is free again.
    await asyncio.sleep(0.8)
    assert await blobs.offset(upload_id) == 30_000
    status, payload, _ = await blobs.patch(upload_id, 30_000, data[30_000:])
    assert status == 201, payload
    writer.transport.abort()
    assert (await blobs.get(payload["blob_id"]))[1] == data


async def test_an_unfinished_upload_survives_a_restart(
    tmp_path: Path, blobs_factory: Callable[..., Awaitable[Service]]
) -> None:
    root = tmp_path / "restart"
    first = await blobs_factory(root)
    data = os.urandom(5000)
    upload_id = await first.new_upload(len(data))
    await first.patch(upload_id, 0, data[:2000])
    done = await first.upload(b"kept")
    await first.service.close()
    second = await blobs_factory(root)
    assert await second.offset(upload_id) == 2000
    status, payload, _ = await second.patch(upload_id, 2000, data[2000:])
    assert status == 201
    assert (await second.get(payload["blob_id"]))[1] == data
    assert (await second.get(done))[1] == b"kept"


async def test_concurrent_appends_to_one_upload_and_concurrent_uploads_of_one_blob(blobs: Service) -> None:
    data = os.urandom(300_000)
    upload_id = await blobs.new_upload(len(data))

    async def slow() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 50_000):
            yield data[start : start + 50_000]
            await asyncio.sleep(0.05)

    async def slow_patch() -> int:
        async with blobs.http.patch(
            f"{blobs.url}/v1/uploads/{upload_id}",
            data=slow(),
            headers={**blobs.token(), "Upload-Offset": "0"},
        ) as response:
            return response.status

    first = asyncio.create_task(slow_patch())
    await asyncio.sleep(0.05)
    status, payload, _ = await blobs.patch(upload_id, 0, data)
    assert (status, _code(payload)) == (409, "busy")
    assert await first == 201
    # The same bytes uploaded twice at once are two blobs, each whole.
    ids = await asyncio.gather(blobs.upload(data), blobs.upload(data))
    assert ids[0] != ids[1]
    for blob_id in ids:
        assert (await blobs.get(blob_id))[1] == data


# -- downloads ------------------------------------------------------------------------------------


async def test_range_requests_and_caching_headers(blobs: Service) -> None:
    data = bytes(range(256)) * 40
    blob_id = await blobs.upload(data)
    status, body, headers = await blobs.get(blob_id)
    assert status == 200 and body == data
    assert headers["Cache-Control"].startswith("public, max-age=") and "immutable" in headers["Cache-Control"]
    assert headers["ETag"] == f'"{blob_id}"' and headers["Accept-Ranges"] == "bytes"
    for range_header, expected in (
        ("bytes=10-19", data[10:20]),
        ("bytes=10000-", data[10000:]),
        ("bytes=-5", data[-5:]),
        ("bytes=0-999999", data),
    ):
        status, body, headers = await blobs.get(blob_id, {"Range": range_header})
        assert status == 206 and body == expected, range_header
        assert headers["Content-Range"].endswith(f"/{len(data)}")
    for bad in ("bytes=10240-", "bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=-0", "bytes=-"):
        status, _, headers = await blobs.get(blob_id, {"Range": bad})
        assert status == 416, bad
        assert headers["Content-Range"] == f"bytes */{len(data)}"
    status, body, _ = await blobs.get(blob_id, {"If-None-Match": f'"{blob_id}"'})
    assert (status, body) == (304, b"")
    async with blobs.http.head(f"{blobs.url}/v1/blobs/{blob_id}") as response:
        assert response.status == 200 and int(response.headers["Content-Length"]) == len(data)


async def test_an_interrupted_download_continues_with_a_range(blobs: Service) -> None:
    data = os.urandom(1_000_000)
    blob_id = await blobs.upload(data)
    received = bytearray()
    async with blobs.http.get(f"{blobs.url}/v1/blobs/{blob_id}") as response:
        async for chunk in response.content.iter_chunked(65536):
            received += chunk
            if len(received) > 300_000:
                break
    status, rest, _ = await blobs.get(blob_id, {"Range": f"bytes={len(received)}-"})
    assert status == 206
    assert bytes(received) + rest == data


async def test_ids_that_try_to_leave_the_blob_folder(tmp_path: Path, blobs: Service) -> None:
    (tmp_path / "secret").write_bytes(b"SECRET-OUTSIDE")
    (tmp_path / "blobs" / "secret").write_bytes(b"SECRET-INSIDE")
    for blob_id in ("..%2F..%2Fsecret", "..%2Fsecret", "%2e%2e", "secret", "A" * 42, "A" * 44, "~" * 43):
        status, body, _ = await blobs.get(blob_id)
        assert status in (400, 404), blob_id
        assert b"SECRET" not in body
    # Raw request lines, which a client library would normalize first.
    for target in ("/v1/blobs/../../secret", "/v1/blobs/..%2f..%2fsecret", "/v1/blobs/%2e%2e/%2e%2e/secret"):
        reader, writer = await asyncio.open_connection(blobs.service.host, blobs.service.port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        response = await reader.read()
        writer.close()
        assert response.split(b" ", 2)[1] in (b"400", b"404"), target
        assert b"SECRET" not in response
    upload_status, _, _ = await blobs.patch("..%2F..%2Fsecret", 0, b"x")
    assert upload_status in (400, 404)
    assert (tmp_path / "secret").read_bytes() == b"SECRET-OUTSIDE"


async def test_blobs_expire(blobs_factory: Callable[..., Awaitable[Service]]) -> None:
    clock = Clock()
    blobs = await blobs_factory(clock=clock, device_quota_bytes=6000, blob_ttl=3600.0, upload_ttl=600.0)
    blob_id = await blobs.upload(b"e" * 5000)
    abandoned = await blobs.new_upload(500)
    assert (await blobs.create(1000)).status == 403
    clock.now += 3601
    assert (await blobs.get(blob_id))[0] == 404
    assert await blobs.service.sweep() == 2
    root: Path = blobs.service.store.root  # type: ignore[attr-defined]
    assert not list((root / "blobs").iterdir()) and not list((root / "uploads").iterdir())
    async with blobs.http.head(f"{blobs.url}/v1/uploads/{abandoned}", headers=blobs.token()) as response:
        assert response.status == 404
    assert (await blobs.create(6000)).status == 201
    assert BlobLimits().blob_ttl == 30 * 86400


async def test_crash_leftovers_are_never_visible(
    tmp_path: Path, blobs_factory: Callable[..., Awaitable[Service]]
) -> None:
    root = tmp_path / "crashed"
    (root / "blobs").mkdir(parents=True)
    (root / "uploads").mkdir()
    half = "B" * 43
    # Metadata written, data never renamed into place: the blob does not exist.
    (root / "blobs" / f"{half}.json").write_text(
        '{"v": 1, "size": 10, "account": "a", "device_id": 1, "uploaded": 0, "expires": 99999999999999}'
    )
    (root / "blobs" / f"{half}.json.tmp").write_text("{")
    # Unreadable metadata beside data is ignored (and left for an operator), never served.
    broken = "C" * 43
    (root / "blobs" / broken).write_bytes(b"data")
    (root / "blobs" / f"{broken}.json").write_text('{"v": 1, "size": "ten"}')
    blobs = await blobs_factory(root)
    assert (await blobs.get(half))[0] == 404
    assert (await blobs.get(broken))[0] == 404
    assert sorted(p.name for p in (root / "blobs").iterdir()) == [broken, f"{broken}.json"]


# -- a disk that fills ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_disk_that_fills_during_an_upload(tmp_path: Path) -> None:
    key_file = tmp_path / "token.key"
    key_file.write_bytes(KEY)
    port = _free_port()
    limit = 256 * 1024

    def small_files() -> None:
        # Files of this process may grow to 256 KiB; a larger write fails with EFBIG, as on a full disk.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    log = (tmp_path / "blobs.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.blob_cli",
            "--dir",
            str(tmp_path / "store"),
            "--port",
            str(port),
            "--token-key",
            str(key_file),
            "--device-quota-bytes",
            "1000000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=REPO,
        preexec_fn=small_files,  # The limit applies to the child only.
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{url}/v1/blobs/{'A' * 43}") as response:
                        await response.read()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            tokens = BlobTokens(KEY)
            headers = {"Authorization": f"Bearer {tokens.issue('alice', 1)[0]}"}
            data = os.urandom(600_000)
            async with http.post(
                f"{url}/v1/uploads", headers={**headers, "Upload-Length": str(len(data))}
            ) as r:
                upload_id = (await r.json())["upload_id"]
            async with http.patch(
                f"{url}/v1/uploads/{upload_id}", data=data, headers={**headers, "Upload-Offset": "0"}
            ) as response:
                assert response.status == 507
                assert _code(await response.json()) == "storage_full"
            # The upload is gone whole, nothing is visible, and the quota is not charged.
            async with http.head(f"{url}/v1/uploads/{upload_id}", headers=headers) as response:
                assert response.status == 404
            assert not list((tmp_path / "store" / "blobs").iterdir())
            assert not list((tmp_path / "store" / "uploads").iterdir())
            small = os.urandom(900_000 // 8)
            async with http.post(
                f"{url}/v1/uploads", headers={**headers, "Upload-Length": str(len(small))}
            ) as r:
                assert r.status == 201, await r.text()
                upload_id = (await r.json())["upload_id"]
            async with http.patch(
                f"{url}/v1/uploads/{upload_id}", data=small, headers={**headers, "Upload-Offset": "0"}
            ) as response:
                assert response.status == 201
                blob_id = (await response.json())["blob_id"]
            async with http.get(f"{url}/v1/blobs/{blob_id}") as response:
                assert hashlib.sha256(await response.read()).digest() == hashlib.sha256(small).digest()
        assert process.poll() is None, "the service survived"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
