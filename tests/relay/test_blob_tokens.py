"""Upload tokens: they name their device, expire, and every forged or malformed one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from server.blob_tokens import BlobTokens, TokenError, load_or_create_key

KEY = bytes(range(32))


def _seal(payload: bytes, key: bytes = KEY) -> str:
    tag = hmac.new(key, b"e2e-blobs token v1\x00" + payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode()


def test_a_token_names_its_device_until_it_expires() -> None:
    now = [1_800_000_000.0]
    tokens = BlobTokens(KEY, url="http://blobs", lifetime=60, clock=lambda: now[0])
    token, expires = tokens.issue("alice@example", 7)
    assert expires == int((now[0] + 60) * 1000)
    holder = tokens.check(token)
    assert (holder.account, holder.device_id, holder.expires) == ("alice@example", 7, expires)
    now[0] += 61
    with pytest.raises(TokenError, match="expired"):
        tokens.check(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "A" * 257,
        "!!!not base64!!!",
        "AAAA",
        _seal(b"\x02" + bytes(8) + bytes(16) + bytes(4) + b"a"),
        _seal(b"\x01" + (2**63).to_bytes(8, "big") + bytes(16) + bytes(4) + b"\xff\xfe"),
        _seal(b"\x01" + (2**63).to_bytes(8, "big") + bytes(16) + bytes(4) + b"a", key=bytes(32)),
    ],
)
def test_malformed_and_forged_tokens_are_refused(token: str) -> None:
    with pytest.raises(TokenError):
        BlobTokens(KEY).check(token)


def test_a_flipped_character_is_refused() -> None:
    tokens = BlobTokens(KEY)
    token, _ = tokens.issue("bob", 1)
    for position in range(0, len(token), 7):
        swapped = "B" if token[position] != "B" else "C"
        with pytest.raises(TokenError):
            tokens.check(token[:position] + swapped + token[position + 1 :])


def test_keys_and_repr(tmp_path) -> None:
    with pytest.raises(ValueError):
        BlobTokens(bytes(31))
    assert KEY.hex() not in repr(BlobTokens(KEY)) and "redacted" in repr(BlobTokens(KEY))
    path = tmp_path / "key"
    created = load_or_create_key(path)
    assert len(created) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path) == created
    path.write_bytes(b"short")
    with pytest.raises(ValueError):
        load_or_create_key(path)
