"""Attachment crypto (e2e.attachment): the vectors against an independent computation, any size and
any chunking round-trips, every single bit flip is refused, refused input changes nothing, and
memory stays bounded by the chunk size."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.attachment import (
    MIN_PADDED_SIZE,
    AttachmentChangedError,
    AttachmentDecryptor,
    AttachmentDigestError,
    AttachmentEncryptor,
    AttachmentKey,
    AttachmentLengthError,
    AttachmentMacError,
    AttachmentVerifier,
    InvalidAttachmentError,
    VerifiedAttachment,
    blob_size,
    decrypt_attachment,
    encrypt_attachment,
    padded_size,
)
from e2e.errors import InvalidKeyError, InvalidMessageError

VECTORS = Path(__file__).parent / "vectors" / "attachment.json"
KEY = AttachmentKey(bytes(range(64)))
IV = bytes(range(100, 116))


def _independent_blob(key: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """The blob as cryptography's own PKCS#7 padder and one-shot HMAC compute it, with the bucket
    rule written out again from its description."""
    n = len(plaintext)
    if n <= 1024:
        target = 1024
    else:
        step = 2 ** (len(bin(n)) - 2 - 5)
        target = ((n + step - 1) // step) * step
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext + b"\0" * (target - n)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    mac = hmac.new(key[32:], iv + ciphertext, "sha256").digest()
    blob = iv + ciphertext + mac
    return blob, hashlib.sha256(blob).digest()


def _cases() -> list[dict]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize("case", [c for c in _cases() if "iv" in c["inputs"]], ids=lambda c: c["name"])
def test_vectors_match_an_independent_computation(case: dict) -> None:
    inputs, expected = case["inputs"], case["expected"]
    blob, digest = _independent_blob(
        bytes.fromhex(inputs["key"]), bytes.fromhex(inputs["iv"]), bytes.fromhex(inputs["plaintext"])
    )
    assert blob.hex() == expected["blob"]
    assert digest.hex() == expected["digest"]
    assert len(blob) == expected["blob_size"]


def test_vectors_cover_every_refusal() -> None:
    errors = {c["expected"].get("error") for c in _cases()}
    assert {
        "AttachmentDigestError",
        "AttachmentMacError",
        "AttachmentLengthError",
        "AttachmentPaddingError",
    } <= errors


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _encrypt_chunked(key: AttachmentKey, iv: bytes, plaintext: bytes, cuts: list[int], tail: int) -> bytes:
    encryptor = AttachmentEncryptor(key, iv, len(plaintext))
    parts = [encryptor.update(chunk) for chunk in _chunks(plaintext, cuts)]
    tail_parts = list(encryptor.finalize(tail))
    assert all(len(part) <= tail + 16 + 32 for part in tail_parts)
    blob = b"".join(parts + tail_parts)
    assert encryptor.digest == hashlib.sha256(blob).digest()
    return blob


def _decrypt_chunked(key: AttachmentKey, digest: bytes, size: int, blob: bytes, cuts: list[int]) -> bytes:
    verifier = AttachmentVerifier(key, digest, size)
    for chunk in _chunks(blob, cuts):
        verifier.update(chunk)
    decryptor = verifier.verify().decryptor()
    out = b"".join(decryptor.update(chunk) for chunk in _chunks(blob, cuts))
    decryptor.finalize()
    return out


sizes = st.one_of(st.integers(0, 2100), st.integers(2100, 40_000))


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=64, max_size=64),
    iv=st.binary(min_size=16, max_size=16),
    size=sizes,
    cuts=st.lists(st.integers(0, 50_000), max_size=12),
    blob_cuts=st.lists(st.integers(0, 50_000), max_size=12),
    tail=st.integers(16, 5000),
    seed=st.binary(min_size=8, max_size=8),
)
def test_any_size_any_chunking_round_trips(key, iv, size, cuts, blob_cuts, tail, seed) -> None:
    plaintext = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    attachment_key = AttachmentKey(key)
    blob = _encrypt_chunked(attachment_key, iv, plaintext, cuts, tail)
    expected_blob, digest = _independent_blob(key, iv, plaintext)
    assert blob == expected_blob
    assert len(blob) == blob_size(size)
    assert _decrypt_chunked(attachment_key, digest, size, blob, blob_cuts) == plaintext


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 1 << 40))
def test_the_bucket_rule(size: int) -> None:
    padded = padded_size(size)
    assert padded >= size
    assert padded_size(padded) == padded
    if size > MIN_PADDED_SIZE:
        assert (padded - size) * 16 <= size
    else:
        assert padded == MIN_PADDED_SIZE
    assert padded_size(size + 1) >= padded
    # The padded size keeps five leading bits at most.
    assert padded >> max(0, padded.bit_length() - 5) << max(0, padded.bit_length() - 5) == padded


def test_every_bit_flip_is_refused() -> None:
    plaintext = os.urandom(1100)
    encrypted = encrypt_attachment(KEY, IV, plaintext)
    blob = encrypted.blob
    for bit in range(len(blob) * 8):
        tampered = bytearray(blob)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(AttachmentDigestError):
            decrypt_attachment(KEY, encrypted.digest, len(plaintext), bytes(tampered))
        # Even under a digest that matches the tampered blob, the MAC refuses it.
        if bit % 97 == 0:
            with pytest.raises(AttachmentMacError):
                decrypt_attachment(KEY, hashlib.sha256(tampered).digest(), len(plaintext), bytes(tampered))
    assert decrypt_attachment(KEY, encrypted.digest, len(plaintext), blob) == plaintext


def test_truncated_extended_and_swapped_blobs_are_refused() -> None:
    first = encrypt_attachment(KEY, IV, b"a" * 2000)
    second = encrypt_attachment(AttachmentKey(bytes(64)), IV, b"b" * 2000)
    for blob, error in (
        (first.blob[:-1], AttachmentLengthError),
        (first.blob + b"x", AttachmentLengthError),
        (b"", AttachmentLengthError),
        (second.blob, AttachmentDigestError),
    ):
        with pytest.raises(error):
            decrypt_attachment(KEY, first.digest, 2000, blob)
    with pytest.raises(AttachmentMacError):
        decrypt_attachment(KEY, second.digest, 2000, second.blob)
    assert issubclass(AttachmentMacError, InvalidAttachmentError)
    assert issubclass(InvalidAttachmentError, InvalidMessageError)


def test_a_refused_chunk_changes_nothing() -> None:
    encrypted = encrypt_attachment(KEY, IV, b"z" * 1500)
    verifier = AttachmentVerifier(KEY, encrypted.digest, 1500)
    verifier.update(encrypted.blob[:1000])
    with pytest.raises(AttachmentLengthError):
        verifier.update(encrypted.blob[1000:] + b"extra")
    verifier.update(encrypted.blob[1000:])
    decryptor = verifier.verify().decryptor()
    first = decryptor.update(encrypted.blob[:1000])
    with pytest.raises(AttachmentLengthError):
        decryptor.update(encrypted.blob[1000:] + b"extra")
    rest = decryptor.update(encrypted.blob[1000:])
    decryptor.finalize()
    assert first + rest == b"z" * 1500

    encryptor = AttachmentEncryptor(KEY, IV, 10)
    parts = [encryptor.update(b"12345")]
    with pytest.raises(AttachmentLengthError):
        encryptor.update(b"123456")
    with pytest.raises(AttachmentLengthError):
        encryptor.finalize()
    parts.append(encryptor.update(b"12345"))
    parts.extend(encryptor.finalize())
    assert b"".join(parts) == encrypt_attachment(KEY, IV, b"1234512345").blob


def test_the_second_pass_must_read_the_verified_bytes() -> None:
    good = encrypt_attachment(KEY, IV, b"q" * 3000)
    verified = decrypt_attachment(KEY, good.digest, 3000, good.blob)
    assert verified == b"q" * 3000
    verifier = AttachmentVerifier(KEY, good.digest, 3000)
    verifier.update(good.blob)
    decryptor = verifier.verify().decryptor()
    other = encrypt_attachment(KEY, IV, b"r" * 3000).blob
    decryptor.update(other)
    with pytest.raises(AttachmentChangedError):
        decryptor.finalize()


def test_no_decryptor_without_verification() -> None:
    with pytest.raises(TypeError):
        VerifiedAttachment(KEY, bytes(32), 0)
    with pytest.raises(TypeError):
        AttachmentDecryptor(object())  # type: ignore[arg-type]


def test_keys_and_arguments_are_checked() -> None:
    with pytest.raises(InvalidKeyError):
        AttachmentKey(bytes(63))
    with pytest.raises(InvalidKeyError):
        AttachmentKey(bytes(65))
    with pytest.raises(ValueError):
        AttachmentEncryptor(KEY, bytes(15), 1)
    with pytest.raises(ValueError):
        AttachmentVerifier(KEY, bytes(31), 1)
    with pytest.raises(ValueError):
        padded_size(-1)
    key = AttachmentKey.generate(lambda n: b"\x07" * n)
    assert key.aes_key == b"\x07" * 32 and key.mac_key == b"\x07" * 32


def test_repr_redacts_the_key() -> None:
    secret = bytes(range(64))
    key = AttachmentKey(secret)
    assert secret.hex() not in repr(key) and "redacted" in repr(key)
    encrypted = encrypt_attachment(key, IV, b"secret")
    assert encrypted.blob.hex() not in repr(encrypted)


def _stream(size: int, chunk: bytes):
    encryptor = AttachmentEncryptor(KEY, IV, size)
    for _ in range(size // len(chunk)):
        yield encryptor.update(chunk)
    yield from encryptor.finalize()


def test_memory_is_bounded_by_the_chunk_size() -> None:
    # 16 MiB through encryption and both receiving passes in 64 KiB chunks: the peak of Python
    # allocations stays near the chunk size, not the file size.
    chunk = bytes(64 * 1024)
    size = 16 * 1024 * 1024
    tracemalloc.start()
    try:
        sha = hashlib.sha256()
        for out in _stream(size, chunk):
            sha.update(out)
        verifier = AttachmentVerifier(KEY, sha.digest(), size)
        for out in _stream(size, chunk):
            verifier.update(out)
        decryptor = verifier.verify().decryptor()
        released = 0
        for out in _stream(size, chunk):
            released += len(decryptor.update(out))
        decryptor.finalize()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert released == size
    assert peak < 1024 * 1024


def test_finished_objects_refuse_more_input() -> None:
    encryptor = AttachmentEncryptor(KEY, IV, 3)
    head = encryptor.update(b"abc")
    with pytest.raises(ValueError):
        _ = encryptor.digest
    with pytest.raises(ValueError):
        encryptor.finalize(8)
    blob = head + b"".join(encryptor.finalize())
    for call in (lambda: encryptor.update(b""), lambda: encryptor.finalize()):
        with pytest.raises(ValueError):
            call()
    verifier = AttachmentVerifier(KEY, encryptor.digest, 3)
    verifier.update(blob)
    verified = verifier.verify()
    for call in (lambda: verifier.update(b""), verifier.verify):
        with pytest.raises(ValueError):
            call()
    assert "size=3" in repr(verified) and KEY.key.hex() not in repr(verified)
    decryptor = verified.decryptor()
    assert decryptor.update(blob[:5]) == b""
    assert decryptor.update(blob[5:]) == b"abc"
    decryptor.finalize()
    for call in (lambda: decryptor.update(b""), decryptor.finalize):
        with pytest.raises(ValueError):
            call()
