"""Upload tokens: the relay vouches for a device, the blob service checks the voucher.

Theory
------
Only an authenticated device may upload.  Authentication happens on the relay connection (the
device proves possession of its identity key); the blob service speaks plain HTTP and knows no
identity keys.  The bridge is a short-lived bearer token that the relay issues over the
authenticated connection (op ``blob_upload_token``, docs/relay-protocol.md) and the blob service
checks on every upload request::

    payload = version (1 byte, 0x01) ‖ expires (8 bytes, big-endian ms) ‖ nonce (16)
              ‖ device id (4) ‖ account (UTF-8, the rest)
    token   = base64url(payload ‖ HMAC-SHA256(key, "e2e-blobs token v1" ‖ 0x00 ‖ payload))

The token names its device, so the blob service charges uploads to that device's quota and lets
only that device continue its own uploads; a token of another device is refused on someone
else's upload.  The key is shared by the relay nodes and the blob service (``--blob-token-key``
file, or the same process); nothing else is shared, and the blob service needs no database
lookup to check a token.

What this module does not know
------------------------------
HTTP, storage, or who is allowed to register: the relay authenticates, this only seals and checks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["TOKEN_KEY_LENGTH", "BlobTokens", "TokenError", "TokenHolder", "load_or_create_key"]

TOKEN_KEY_LENGTH: Final = 32
_VERSION: Final = 1
_LABEL: Final = b"e2e-blobs token v1\x00"
_NONCE: Final = 16
_TAG: Final = 32
_MAX_TOKEN_CHARS: Final = 256


class TokenError(Exception):
    """A token that is malformed, forged, of an unknown version, or expired."""


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """The device a valid token speaks for, and when the token stops being valid (ms)."""

    account: str
    device_id: int
    expires: int


class BlobTokens:
    """Issue and check upload tokens under one key; ``clock`` is seconds since the epoch."""

    def __init__(
        self,
        key: bytes,
        *,
        url: str = "",
        lifetime: float = 3600.0,
        clock: Callable[[], float] = time.time,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(key) != TOKEN_KEY_LENGTH:
            raise ValueError(f"a blob token key is {TOKEN_KEY_LENGTH} bytes")
        self._key = key
        self.url = url
        """The blob service's base URL, told to the device with its token."""
        self.lifetime = lifetime
        self._clock = clock
        self._rng = rng

    def __repr__(self) -> str:
        return f"BlobTokens(url={self.url!r}, key=<redacted>)"

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _LABEL + payload, hashlib.sha256).digest()

    def issue(self, account: str, device_id: int) -> tuple[str, int]:
        """A token for this device and its expiry in milliseconds since the epoch."""
        expires = int((self._clock() + self.lifetime) * 1000)
        payload = (
            bytes((_VERSION,))
            + expires.to_bytes(8, "big")
            + self._rng(_NONCE)
            + device_id.to_bytes(4, "big")
            + account.encode("utf-8")
        )
        token = base64.urlsafe_b64encode(payload + self._tag(payload)).rstrip(b"=").decode("ascii")
        return token, expires

    def check(self, token: str) -> TokenHolder:
        """The device ``token`` speaks for; raises :class:`TokenError`."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise TokenError("the token is missing or too long")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise TokenError("the token is not base64url") from None
        if len(raw) < 1 + 8 + _NONCE + 4 + 1 + _TAG:
            raise TokenError("the token is too short")
        payload, tag = raw[:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise TokenError("the token does not verify")
        if payload[0] != _VERSION:
            raise TokenError(f"unknown token version {payload[0]}")
        expires = int.from_bytes(payload[1:9], "big")
        if self._clock() * 1000 >= expires:
            raise TokenError("the token has expired")
        device_id = int.from_bytes(payload[9 + _NONCE : 13 + _NONCE], "big")
        try:
            account = payload[13 + _NONCE :].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenError("the token's account is not UTF-8") from None
        return TokenHolder(account, device_id, expires)


def load_or_create_key(path: str | Path) -> bytes:
    """The token key in ``path``, created (32 random bytes, mode 0600) if the file does not exist."""
    path = Path(path)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = os.urandom(TOKEN_KEY_LENGTH)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        return key
    if len(key) != TOKEN_KEY_LENGTH:
        raise ValueError(f"{path} does not hold a {TOKEN_KEY_LENGTH}-byte blob token key")
    return key
