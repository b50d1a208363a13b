"""Linking a companion through an untrusted relay: the link code and the sealed linking payload.

What this module owns
---------------------
The companion draws a fresh 32-byte **linking secret** and shows a :class:`LinkOffer` (its identity
key and that secret) as a QR code and as the same bytes in a text code (:meth:`LinkOffer.to_code`).
The offer travels from the companion's screen to the primary's camera or keyboard, never through
the relay.  The primary answers with a :class:`LinkingPayload` (the companion's linking metadata,
the account signature, the primary's identity key and the new signed device list) that it
**seals** under a key derived from the secret; the relay carries the sealed bytes to the companion
at a *mailbox* id, also derived from the secret, where the companion waits.

Keys (HKDF-SHA256, no salt)::

    mailbox ‖ seal_key = HKDF(linking secret, info = "e2e-relay linking v1", 16 + 32 bytes)
    sealed             = 0x01 ‖ nonce (12) ‖ ChaCha20-Poly1305(seal_key, nonce, payload,
                                                             aad = 0x01 ‖ mailbox ‖ companion identity key)
    code               = "E2ELINK1-" ‖ base32(0x01 ‖ companion identity key (33) ‖ secret (32)
                                              ‖ first 4 bytes of SHA-256 of the preceding bytes)

The relay sees the mailbox id and the sealed bytes, never the secret, so it cannot open, alter or
forge a payload: a relay that swaps the primary's key, the signatures or the device list is caught
by :func:`open_linking_payload` (:class:`LinkingTamperedError`) before any of it is used.  It cannot
swap the companion's identity key either: the primary took it from the code, signs over it, and
lists it in the signed device list that every contact checks bundles against.  After the payload
opens, the companion checks the account signature and the device list (:mod:`e2e.devices`) as well,
so a primary that was itself handed a wrong code cannot make the companion accept a link to
someone else's key.

The encodings are this project's; the scheme follows the companion-linking steps of WhatsApp's
Encryption Overview (a linking secret shown in a QR code, an authenticated linking payload from the
primary), with an AEAD in place of an HMAC so that the relay does not learn the metadata either.

What this module does not know
------------------------------
The relay's operations (``docs/devices.md``), QR rendering, the clock and randomness (``rng``).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from e2e.devices import (
    DeviceIdentity,
    DeviceList,
    DeviceListError,
    LinkingMetadata,
    SignedDeviceList,
    sign_device,
    verify_account_signature,
    verify_device_list,
)
from e2e.errors import DecodeError, E2EError, InvalidSignatureError
from e2e.kdf import hkdf
from e2e.keys import PrivateKey, PublicKey, Rng

__all__ = [
    "LINK_CODE_PREFIX",
    "LINKING_INFO",
    "SECRET_LENGTH",
    "MAILBOX_LENGTH",
    "LinkCodeError",
    "LinkingTamperedError",
    "LinkOffer",
    "LinkingPayload",
    "OpenedLink",
    "seal_linking_payload",
    "open_linking_payload",
]

LINK_CODE_PREFIX = "E2ELINK1-"
"""How every text code starts; the ``1`` is the code's format version."""
LINKING_INFO = b"e2e-relay linking v1"
"""The HKDF info string of the mailbox id and the sealing key."""
SECRET_LENGTH = 32
MAILBOX_LENGTH = 16

_FORMAT = 1
_KEY_LENGTH = 33
_SIGNATURE_LENGTH = 64
_NONCE_LENGTH = 12
_CHECK_LENGTH = 4
_OFFER_LENGTH = 1 + _KEY_LENGTH + SECRET_LENGTH
_MAX_PAYLOAD = 8192


class LinkCodeError(DecodeError):
    """A link code that is malformed, mistyped (its check bytes disagree) or of an unknown version."""


class LinkingTamperedError(E2EError):
    """A sealed linking payload that does not open under this offer's secret: altered or not ours."""


@dataclass(frozen=True)
class LinkOffer:
    """What the companion shows: its identity key and a fresh linking secret.  ``repr`` hides the secret."""

    identity_key: PublicKey
    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != SECRET_LENGTH:
            raise LinkCodeError(f"a linking secret is {SECRET_LENGTH} bytes")

    @classmethod
    def generate(cls, companion_identity_key: PublicKey, rng: Rng) -> LinkOffer:
        """A new offer with a secret drawn from ``rng``; use each offer for one link only."""
        return cls(companion_identity_key, rng(SECRET_LENGTH))

    def __repr__(self) -> str:
        return f"LinkOffer(identity_key={self.identity_key!r}, secret=<redacted>)"

    def _keys(self) -> tuple[bytes, bytes]:
        okm = hkdf(b"", self.secret, LINKING_INFO, MAILBOX_LENGTH + 32)
        return okm[:MAILBOX_LENGTH], okm[MAILBOX_LENGTH:]

    @property
    def mailbox(self) -> bytes:
        """The id the companion waits at on the relay; it reveals nothing of the secret."""
        return self._keys()[0]

    def to_bytes(self) -> bytes:
        """``0x01 ‖ identity key ‖ secret``: the QR code's content (before the check bytes)."""
        return bytes((_FORMAT,)) + self.identity_key.serialize() + self.secret

    def to_code(self) -> str:
        """The text code: :data:`LINK_CODE_PREFIX` and base32 of the bytes and their 4 check bytes."""
        raw = self.to_bytes()
        check = hashlib.sha256(raw).digest()[:_CHECK_LENGTH]
        return LINK_CODE_PREFIX + base64.b32encode(raw + check).decode("ascii").rstrip("=")

    @classmethod
    def from_code(cls, code: str) -> LinkOffer:
        """Parse a text code, forgiving case, spaces and dashes inside it; raises :class:`LinkCodeError`."""
        if not isinstance(code, str):
            raise LinkCodeError("a link code is text")
        text = code.strip()
        if not text.upper().startswith(LINK_CODE_PREFIX):
            raise LinkCodeError(f"a link code starts with {LINK_CODE_PREFIX}")
        body = "".join(text[len(LINK_CODE_PREFIX) :].split()).replace("-", "").upper()
        if len(body) > 200:
            raise LinkCodeError("the link code is too long")
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            raise LinkCodeError("the link code holds characters that are not base32") from None
        if len(raw) != _OFFER_LENGTH + _CHECK_LENGTH:
            raise LinkCodeError("the link code has the wrong length")
        offer_bytes, check = raw[:_OFFER_LENGTH], raw[_OFFER_LENGTH:]
        if hashlib.sha256(offer_bytes).digest()[:_CHECK_LENGTH] != check:
            raise LinkCodeError("the link code's check bytes disagree: a character was mistyped")
        if offer_bytes[0] != _FORMAT:
            raise LinkCodeError(f"unknown link code version {offer_bytes[0]}")
        try:
            identity_key = PublicKey.deserialize(offer_bytes[1 : 1 + _KEY_LENGTH])
        except DecodeError as exc:
            raise LinkCodeError(f"the link code's identity key: {exc}") from None
        return cls(identity_key, offer_bytes[1 + _KEY_LENGTH :])


@dataclass(frozen=True)
class LinkingPayload:
    """What the primary sends the companion: metadata, account signature, its key, the new list."""

    metadata: LinkingMetadata
    primary_identity_key: PublicKey
    account_signature: bytes
    signed_device_list: SignedDeviceList

    def encode(self) -> bytes:
        metadata = self.metadata.encode()
        signed_list = self.signed_device_list.encode()
        return (
            bytes((_FORMAT,))
            + struct.pack(">H", len(metadata))
            + metadata
            + self.primary_identity_key.serialize()
            + self.account_signature
            + struct.pack(">I", len(signed_list))
            + signed_list
        )

    @classmethod
    def decode(cls, data: bytes) -> LinkingPayload:
        def take(at: int, length: int) -> bytes:
            if at + length > len(data):
                raise DecodeError("the linking payload is truncated")
            return data[at : at + length]

        if not data or data[0] != _FORMAT:
            raise DecodeError("the linking payload has an unknown format version")
        at = 1
        (metadata_length,) = struct.unpack(">H", take(at, 2))
        at += 2
        metadata = LinkingMetadata.decode(take(at, metadata_length))
        at += metadata_length
        primary = PublicKey.deserialize(take(at, _KEY_LENGTH))
        at += _KEY_LENGTH
        signature = take(at, _SIGNATURE_LENGTH)
        at += _SIGNATURE_LENGTH
        (list_length,) = struct.unpack(">I", take(at, 4))
        at += 4
        signed_list = SignedDeviceList.decode(take(at, list_length))
        at += list_length
        if at != len(data):
            raise DecodeError("the linking payload has trailing bytes")
        return cls(metadata, primary, signature, signed_list)


@dataclass(frozen=True)
class OpenedLink:
    """A linking payload that opened and verified, with the checked device list."""

    payload: LinkingPayload
    device_list: DeviceList

    def device_identity(self, companion_identity_private: PrivateKey, rng: Rng) -> DeviceIdentity:
        """Sign the device signature and return the credentials the relay registers the companion with."""
        payload = self.payload
        device_signature = sign_device(
            companion_identity_private, payload.metadata, payload.primary_identity_key, rng
        )
        return DeviceIdentity(
            payload.metadata,
            companion_identity_private.public_key(),
            payload.account_signature,
            device_signature,
        )


def _aad(offer: LinkOffer) -> bytes:
    return bytes((_FORMAT,)) + offer.mailbox + offer.identity_key.serialize()


def seal_linking_payload(offer: LinkOffer, payload: LinkingPayload, rng: Rng) -> bytes:
    """The primary seals ``payload`` for the companion that showed ``offer``."""
    _, key = offer._keys()
    nonce = rng(_NONCE_LENGTH)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, payload.encode(), _aad(offer))
    return bytes((_FORMAT,)) + nonce + sealed


def open_linking_payload(offer: LinkOffer, sealed: bytes) -> OpenedLink:
    """The companion opens and checks a sealed payload; every failure raises and returns nothing.

    Raises :class:`LinkingTamperedError` (does not open under the secret),
    :class:`~e2e.errors.DecodeError`, :class:`~e2e.errors.InvalidSignatureError` (the account
    signature or the list's signature) or :class:`~e2e.devices.DeviceListError` (the list does not
    list this companion under the metadata's device id).
    """
    if not isinstance(sealed, bytes) or len(sealed) > _MAX_PAYLOAD:
        raise DecodeError("a sealed linking payload is bytes, at most 8 KiB")
    if len(sealed) < 1 + _NONCE_LENGTH + 16 or sealed[0] != _FORMAT:
        raise LinkingTamperedError("the sealed linking payload is malformed or of an unknown version")
    _, key = offer._keys()
    nonce, body = sealed[1 : 1 + _NONCE_LENGTH], sealed[1 + _NONCE_LENGTH :]
    try:
        plain = ChaCha20Poly1305(key).decrypt(nonce, body, _aad(offer))
    except InvalidTag:
        raise LinkingTamperedError("the linking payload does not open under this link's secret") from None
    payload = LinkingPayload.decode(plain)
    try:
        verify_account_signature(
            payload.primary_identity_key, payload.metadata, offer.identity_key, payload.account_signature
        )
    except InvalidSignatureError:
        raise InvalidSignatureError("the account signature does not cover this companion") from None
    device_list = verify_device_list(
        payload.signed_device_list, payload.primary_identity_key, payload.metadata.account
    )
    if device_list.identity_key(payload.metadata.device_id) != offer.identity_key:
        raise DeviceListError("the device list gives this companion's device id another identity key")
    return OpenedLink(payload, device_list)
