"""Files end to end: real clients, a real relay issuing upload tokens, a real blob service on HTTP.

Alice sends Bob a file; Bob's download verifies before anything appears in his folder; a forward
to Carol reuses the blob; a tampered, swapped or truncated blob never yields a plaintext file;
an interrupted upload resumes; saved names are made safe and never overwrite."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from client import Message
from client.attachments import PARTIAL_FOLDER, safe_file_name
from client.blobs import BlobServiceError
from client.pointer import InvalidPointerError, check_file_name
from e2e.attachment import (
    AttachmentDigestError,
    AttachmentMacError,
    blob_size,
    padded_size,
)
from server import Relay, SQLiteStore
from server.blob_store import FilesystemBlobStore
from server.blob_tokens import BlobTokens
from server.blobs import BlobLimits, BlobService
from tests.relay.conftest import TEST_LIMITS

pytest_plugins = ["client_fixtures"]


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[tuple[Relay, BlobService]]:
    tokens = BlobTokens(os.urandom(32))
    service = BlobService(
        FilesystemBlobStore(tmp_path / "blobs"), tokens, BlobLimits(device_quota_bytes=50_000_000)
    )
    await service.start("127.0.0.1", 0)
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), TEST_LIMITS)
    relay.blob_tokens = tokens
    await relay.start("127.0.0.1", 0)
    yield relay, service
    await relay.close()
    await service.close()


async def _attachment(client) -> Message:
    message = await client.receive(timeout=10)
    assert isinstance(message, Message) and message.is_attachment
    return message


def _blob_path(service: BlobService, blob_id: str) -> Path:
    return service.store.root / "blobs" / blob_id  # type: ignore[attr-defined]


async def test_a_file_travels_and_a_forward_reuses_the_blob(tmp_path: Path, network, make_client) -> None:
    relay, service = network
    picture = tmp_path / "holiday photo.png"
    picture.write_bytes(os.urandom(300_000))
    alice, bob, carol = (make_client(relay.url, name) for name in ("alice", "bob", "carol"))
    async with alice, bob, carol:
        await bob.wait_connected(timeout=10)
        await carol.wait_connected(timeout=10)
        progress: list[tuple[int, int]] = []
        sent = await alice.send_file(
            "bob", picture, progress=lambda done, total: progress.append((done, total))
        )
        assert progress[-1] == (blob_size(300_000), blob_size(300_000))
        assert sent.pointer.content_type == "image/png" and sent.pointer.size == 300_000

        message = await _attachment(bob)
        pointer = bob.attachment(message)
        assert pointer == sent.pointer
        # The blob service holds random-looking bytes of the bucket's size, not the picture.
        stored = _blob_path(service, pointer.blob_id).read_bytes()
        assert len(stored) == blob_size(300_000) and padded_size(300_000) >= 300_000
        assert picture.read_bytes()[:64] not in stored

        folder = tmp_path / "bob-files"
        downloaded: list[int] = []
        saved = await bob.download(pointer, folder, progress=lambda done, total: downloaded.append(done))
        assert saved == folder / "holiday photo.png"
        assert saved.read_bytes() == picture.read_bytes()
        assert downloaded[-1] == blob_size(300_000)
        assert not list((folder / PARTIAL_FOLDER).iterdir())

        # Bob forwards it to Carol: the same blob, no new upload.
        blobs_before = sorted((service.store.root / "blobs").iterdir())  # type: ignore[attr-defined]
        await bob.forward_file("carol", pointer)
        forwarded = carol.attachment(await _attachment(carol))
        assert forwarded.blob_id == pointer.blob_id
        assert sorted((service.store.root / "blobs").iterdir()) == blobs_before  # type: ignore[attr-defined]
        carol_file = await carol.download(forwarded, tmp_path / "carol-files")
        assert carol_file.read_bytes() == picture.read_bytes()

        # The same file again never overwrites the first.
        again = await bob.download(pointer, folder)
        assert again == folder / "holiday photo (2).png"
        assert saved.read_bytes() == again.read_bytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "swap"])
async def test_a_tampered_blob_never_yields_a_plaintext_file(
    tmp_path: Path, network, make_client, damage: str
) -> None:
    relay, service = network
    document = tmp_path / "report.pdf"
    document.write_bytes(os.urandom(50_000))
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(50_000))
    alice, bob = make_client(relay.url, "alice"), make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        await alice.send_file("bob", document)
        pointer = bob.attachment(await _attachment(bob))
        path = _blob_path(service, pointer.blob_id)
        data = path.read_bytes()
        expected: type[Exception] = AttachmentDigestError
        if damage == "flip":
            data = data[:1000] + bytes((data[1000] ^ 0x04,)) + data[1001:]
        elif damage == "truncate":
            data, expected = data[:-100], BlobServiceError
        elif damage == "extend":
            data, expected = data + bytes(16), BlobServiceError
        else:
            swapped = await alice.send_file("bob", other)
            await _attachment(bob)
            data = _blob_path(service, swapped.pointer.blob_id).read_bytes()
        # The blob service's disk is altered (bytes and size) behind its back.
        path.write_bytes(data)
        meta = path.with_suffix(".json")
        document_meta = json.loads(meta.read_text())
        document_meta["size"] = len(data)
        meta.write_text(json.dumps(document_meta))
        await service.store.open()
        folder = tmp_path / "bob-files"
        with pytest.raises(expected):
            await bob.download(pointer, folder)
        visible = [p for p in folder.iterdir() if p.name != PARTIAL_FOLDER] if folder.exists() else []
        assert visible == []


async def test_a_blob_whose_mac_fails_is_refused_and_deleted(tmp_path: Path, network, make_client) -> None:
    relay, service = network
    source = tmp_path / "notes.txt"
    source.write_bytes(b"meeting at noon\n" * 1000)
    alice, bob = make_client(relay.url, "alice"), make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        await alice.send_file("bob", source)
        pointer = bob.attachment(await _attachment(bob))
        path = _blob_path(service, pointer.blob_id)
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        # A pointer whose digest matches the altered blob: only the MAC can refuse it now.
        import dataclasses
        import hashlib

        forged = dataclasses.replace(pointer, digest=hashlib.sha256(bytes(data)).digest())
        folder = tmp_path / "bob-files"
        with pytest.raises(AttachmentMacError):
            await bob.download(forged, folder)
        assert [p.name for p in folder.iterdir()] == [PARTIAL_FOLDER]
        assert not list((folder / PARTIAL_FOLDER).iterdir())


async def test_an_interrupted_upload_resumes(tmp_path: Path, network, make_client, monkeypatch) -> None:
    relay, service = network
    big = tmp_path / "video.mp4"
    big.write_bytes(os.urandom(1_500_000))
    alice, bob = make_client(relay.url, "alice"), make_client(relay.url, "bob")
    store = service.store
    original = store.append
    calls = {"n": 0}

    async def flaky_append(upload_id: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        # The first request's body is cut off after about 600 KB, as a dropped connection would.
        calls["n"] += 1
        if calls["n"] > 1:
            return await original(upload_id, offset, chunks)

        async def cut() -> AsyncIterator[bytes]:
            taken = 0
            async for chunk in chunks:
                if taken > 600_000:
                    return
                taken += len(chunk)
                yield chunk

        return await original(upload_id, offset, cut())

    monkeypatch.setattr(store, "append", flaky_append)
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        sent = await alice.send_file("bob", big)
        assert calls["n"] >= 2
        pointer = bob.attachment(await _attachment(bob))
        saved = await bob.download(pointer, tmp_path / "bob-files")
        assert saved.read_bytes() == big.read_bytes()
        assert sent.pointer == pointer


async def test_an_interrupted_download_resumes_from_its_partial_file(
    tmp_path: Path, network, make_client
) -> None:
    relay, service = network
    source = tmp_path / "archive.tar"
    source.write_bytes(os.urandom(400_000))
    alice, bob = make_client(relay.url, "alice"), make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        await alice.send_file("bob", source)
        pointer = bob.attachment(await _attachment(bob))
        folder = tmp_path / "bob-files"
        partial = folder / PARTIAL_FOLDER
        partial.mkdir(parents=True)
        # Half the ciphertext already arrived before the connection dropped.
        half = _blob_path(service, pointer.blob_id).read_bytes()[: blob_size(400_000) // 2]
        (partial / f"{pointer.blob_id}.blob").write_bytes(half)
        seen: list[int] = []
        saved = await bob.download(pointer, folder, progress=lambda done, total: seen.append(done))
        assert saved.read_bytes() == source.read_bytes()
        assert seen[0] > len(half)


async def test_over_quota_and_missing_blobs_are_typed_errors(tmp_path: Path, make_client) -> None:
    tokens = BlobTokens(os.urandom(32))
    service = BlobService(
        FilesystemBlobStore(tmp_path / "blobs"), tokens, BlobLimits(device_quota_bytes=100_000)
    )
    await service.start("127.0.0.1", 0)
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), TEST_LIMITS)
    relay.blob_tokens = tokens
    await relay.start("127.0.0.1", 0)
    try:
        source = tmp_path / "large.bin"
        source.write_bytes(os.urandom(200_000))
        alice, bob = make_client(relay.url, "alice"), make_client(relay.url, "bob")
        async with alice, bob:
            await bob.wait_connected(timeout=10)
            with pytest.raises(BlobServiceError) as refused:
                await alice.send_file("bob", source)
            assert refused.value.code == "over_quota"
            small = tmp_path / "small.txt"
            small.write_bytes(b"hi")
            await alice.send_file("bob", small)
            pointer = bob.attachment(await _attachment(bob))
            for path in (
                _blob_path(service, pointer.blob_id),
                _blob_path(service, pointer.blob_id).with_suffix(".json"),
            ):
                path.unlink()
            await service.store.open()
            with pytest.raises(BlobServiceError) as missing:
                await bob.download(pointer, tmp_path / "bob-files")
            assert missing.value.code == "not_found"
            text = await alice.send("bob", "plain text")
            message = await bob.receive(timeout=10)
            assert message.message_id == text
            with pytest.raises(InvalidPointerError):
                bob.attachment(message)
    finally:
        await relay.close()
        await service.close()


async def test_a_hostile_pointer_is_refused_and_changes_nothing(tmp_path: Path, network, make_client) -> None:
    relay, _ = network
    alice, bob = make_client(relay.url, "alice"), make_client(relay.url, "bob")
    async with alice, bob:
        await bob.wait_connected(timeout=10)
        from client import envelope

        source = tmp_path / "fine.txt"
        source.write_bytes(b"fine")
        sent = await alice.send_file("bob", source)
        good = await _attachment(bob)
        # A raw pointer whose file name is a path: Alice's library would never send one.
        from client.pointer import encode_pointer

        raw = bytearray(encode_pointer(sent.pointer))
        name = b"../../.bashrc"
        raw = raw[: -len(b"fine.txt") - 2] + len(name).to_bytes(2, "big") + name
        await alice.send("bob", bytes(raw), content_type=envelope.CONTENT_ATTACHMENT)
        hostile = await _attachment(bob)
        with pytest.raises(InvalidPointerError):
            bob.attachment(hostile)
        assert bob.attachment(good) == sent.pointer
        assert not (tmp_path / ".bashrc").exists()


@pytest.mark.parametrize(
    ("given", "saved"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("red\x1b[31m.txt", "red[31m.txt"),
        ("gnp\u202e.exe", "gnp.exe"),
        ("...", "attachment"),
        ("", "attachment"),
        ("a:b*c?.txt", "a_b_c_.txt"),
        (" spaced. ", "spaced"),
        ("photo.jpg", "photo.jpg"),
    ],
)
def test_safe_file_names(given: str, saved: str) -> None:
    result = safe_file_name(given)
    assert result == saved
    check_file_name(result)


def test_long_names_keep_their_extension() -> None:
    result = safe_file_name("x" * 400 + ".jpeg")
    assert result.endswith(".jpeg") and len(result.encode()) <= 200
    check_file_name(safe_file_name("é" * 300))


async def test_upload_file_alone_names_and_types_the_file(tmp_path: Path) -> None:
    from client.attachments import upload_file
    from client.blobs import BlobClient

    tokens = BlobTokens(os.urandom(32))
    service = BlobService(FilesystemBlobStore(tmp_path / "blobs"), tokens)
    await service.start("127.0.0.1", 0)
    blobs = BlobClient()
    try:
        source = tmp_path / "tiny"
        source.write_bytes(b"tiny")
        pointer = await upload_file(blobs, service.url, tokens.issue("alice", 1)[0], source, os.urandom)
        assert pointer.file_name == "tiny" and pointer.content_type == "application/octet-stream"
        assert len(pointer.digest) == 32
    finally:
        await blobs.close()
        await service.close()


async def test_a_companion_e2e_blobs_beside_a_relay_process(tmp_path: Path, make_client) -> None:
    """The deployment with two programs: e2e-relay issuing tokens under a key file, and e2e-blobs
    checking them with the same file."""
    import subprocess
    import sys

    from client_fixtures import free_port

    root = Path(__file__).resolve().parents[2]
    key_file = tmp_path / "blobs.key"
    relay_port, blobs_port = free_port(), free_port()
    blob_url = f"http://127.0.0.1:{blobs_port}"
    logs = [(tmp_path / "relay.log").open("wb"), (tmp_path / "blobs.log").open("wb")]
    relay = subprocess.Popen(
        [sys.executable, "-m", "server", "--port", str(relay_port), "--db", str(tmp_path / "relay.db"),
         "--blob-token-key", str(key_file), "--blob-url", blob_url],
        cwd=root, stdout=subprocess.DEVNULL, stderr=logs[0],
    )  # fmt: skip
    try:
        for _ in range(200):
            if key_file.exists() and "listening" in (tmp_path / "relay.log").read_text():
                break
            await asyncio.sleep(0.05)
        blobs = subprocess.Popen(
            [sys.executable, "-m", "server.blob_cli", "--port", str(blobs_port), "--dir", str(tmp_path / "b"),
             "--token-key", str(key_file)],
            cwd=root, stdout=subprocess.DEVNULL, stderr=logs[1],
        )  # fmt: skip
        try:
            for _ in range(200):
                if "blobs listening" in (tmp_path / "blobs.log").read_text():
                    break
                await asyncio.sleep(0.05)
            assert key_file.stat().st_mode & 0o777 == 0o600
            source = tmp_path / "letter.txt"
            source.write_text("Dear Bob,\n" * 500)
            url = f"ws://127.0.0.1:{relay_port}"
            alice, bob = make_client(url, "alice"), make_client(url, "bob")
            async with alice, bob:
                await bob.wait_connected(timeout=10)
                await alice.send_file("bob", source)
                pointer = bob.attachment(await _attachment(bob))
                saved = await bob.download(pointer, tmp_path / "bob-files")
                assert saved.read_text() == source.read_text()
                assert pointer.content_type == "text/plain"
        finally:
            blobs.terminate()
            assert blobs.wait(timeout=10) == 0
    finally:
        relay.terminate()
        assert relay.wait(timeout=10) == 0
        for log in logs:
            log.close()


async def _group_event(client, kind: type, timeout: float = 10.0):
    """The next event of ``kind`` (membership changes and the like before it are skipped)."""

    async def wait():
        while True:
            event = await client.receive()
            if isinstance(event, kind):
                return event

    return await asyncio.wait_for(wait(), timeout)


async def test_a_file_goes_to_a_group_once_and_every_member_verifies_it(
    tmp_path: Path, network, make_client
) -> None:
    from client.events import GroupMessage, MembershipChanged
    from client.groups import GroupError

    relay, service = network
    picture = tmp_path / "team photo.jpg"
    data = os.urandom(120_000)
    picture.write_bytes(data)
    alice, bob, carol = (make_client(relay.url, name) for name in ("alice", "bob", "carol"))
    async with alice, bob, carol:
        for client in (alice, bob, carol):
            await client.wait_connected(timeout=10)
        group = await alice.create_group("team", ["bob", "carol"])
        for member in (bob, carol):
            await _group_event(member, MembershipChanged)

        sent = await alice.send_file_to_group(group, picture)
        blobs = service.store.root / "blobs"  # type: ignore[attr-defined]
        # One blob (and its metadata file) for the whole group.
        stored = sorted(path.name for path in blobs.iterdir())
        assert stored == [sent.pointer.blob_id, f"{sent.pointer.blob_id}.json"]
        for member in (bob, carol):
            message = await _group_event(member, GroupMessage)
            assert message.is_attachment and message.sender == "alice"
            pointer = member.attachment(message)
            assert pointer == sent.pointer
            saved = await member.download(pointer, tmp_path / f"{member.name}-files")
            assert saved.name == "team photo.jpg" and saved.read_bytes() == data

        # Bob forwards it to the group: the same pointer, no second upload.
        await bob.forward_file_to_group(group, sent.pointer)
        for member in (alice, carol):
            message = await _group_event(member, GroupMessage)
            assert message.sender == "bob" and member.attachment(message) == sent.pointer
        assert sorted(path.name for path in blobs.iterdir()) == stored

        # Only text and pointers go to a group; the group-management types travel pairwise.
        with pytest.raises(GroupError):
            await alice.send_group(group, b"\x01", content_type=2)
        # A text group message is not an attachment, and asking for its pointer is a typed error.
        await alice.send_group(group, "that was the photo")
        text = await _group_event(bob, GroupMessage)
        assert not text.is_attachment
        with pytest.raises(InvalidPointerError):
            bob.attachment(text)
