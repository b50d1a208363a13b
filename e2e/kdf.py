"""The key derivation functions of libsignal's v3 protocol, and the keys they produce.

What this module owns
---------------------
* :func:`hkdf`: HKDF-SHA256 (RFC 5869), written directly on :func:`hmac.digest` because it runs
  several times per message and the one-shot HMAC is the fastest primitive Python offers.
* The three KDFs of the Double Ratchet specification (revision 1, §2.2–§2.4 and §5.2), with the
  constants libsignal's v3 message format fixes:

  ``KDF_RK(rk, dh_out)``
      ``HKDF(salt = rk, ikm = dh_out, info = "WhisperRatchet", L = 64)`` → new root key ‖ chain key.
  ``KDF_CK(ck)``
      ``HMAC-SHA256(ck, 0x01)`` is the message-key seed, ``HMAC-SHA256(ck, 0x02)`` the next chain key.
  message keys
      ``HKDF(salt = 32 zero bytes, ikm = seed, info = "WhisperMessageKeys", L = 80)`` →
      32-byte AES-256 key ‖ 32-byte HMAC-SHA256 key ‖ 16-byte CBC IV.

* The message keys of version 4, the Triple Ratchet's mixing of the post-quantum ratchet's key into
  the Double Ratchet's (libsignal ``MessageKeys::derive_keys``, :func:`derive_message_keys`):
  ``HKDF(salt = SPQR's key for this message, ikm = seed, info = "WhisperMessageKeys", L = 80)``;
  a message for which SPQR gives no key (and every version-3 message) uses the 32 zero bytes of
  HKDF's default salt, which is exactly version 3's derivation.
* The X3DH KDF of libsignal v3 (X3DH specification revision 1, §2.2 and §3.3):
  ``HKDF(salt = 32 zero bytes, ikm = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], info = "WhisperText", L = 64)``
  → root key ‖ chain key (:func:`kdf_x3dh`).
* :class:`RootKey`, :class:`ChainKey` and :class:`MessageKeys`: small immutable types, so that a
  function's signature says which kind of 32 bytes it takes.  Their ``repr`` hides the key bytes.

Invariants
----------
Every key is exactly 32 bytes (the IV 16); the constructors check it.  Nothing here keeps state:
each function maps bytes to new immutable objects, which is what lets the ratchet build its next
state on the side and commit it only when a message has authenticated.
"""

from __future__ import annotations

import hmac
from typing import Final

__all__ = [
    "hkdf",
    "kdf_x3dh",
    "derive_message_keys",
    "RootKey",
    "ChainKey",
    "MessageKeys",
    "ROOT_KEY_INFO",
    "MESSAGE_KEYS_INFO",
    "X3DH_INFO",
    "X3DH_DISCONTINUITY",
]

ROOT_KEY_INFO: Final = b"WhisperRatchet"
MESSAGE_KEYS_INFO: Final = b"WhisperMessageKeys"
X3DH_INFO: Final = b"WhisperText"
X3DH_DISCONTINUITY: Final = b"\xff" * 32
"""The 32 bytes of 0xFF that open the X3DH KDF input (X3DH §2.2, for Curve25519)."""

_ZERO_SALT: Final = b"\x00" * 32
_MESSAGE_KEY_SEED: Final = b"\x01"
_CHAIN_KEY_SEED: Final = b"\x02"


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869 §2.2 extract, §2.3 expand) of ``length`` bytes.

    RFC 5869 §2.3 allows at most ``255 × 32 = 8160`` bytes; a ``length`` outside 1 to 8160
    raises :class:`ValueError`.  An empty ``salt`` is 32 zero bytes (§2.2).
    """
    if not 0 < length <= 255 * 32:
        raise ValueError("HKDF-SHA256 output length must be between 1 and 8160 bytes")
    prk = hmac.digest(salt or _ZERO_SALT, ikm, "sha256")
    output = b""
    block = b""
    counter = 1
    while len(output) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        output += block
        counter += 1
    return output[:length]


def _check_key(name: str, key: bytes, length: int = 32) -> None:
    if not isinstance(key, bytes) or len(key) != length:
        raise ValueError(f"{name} must be {length} bytes")


class RootKey:
    """The Double Ratchet root key ``RK`` (specification §3.2)."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        _check_key("a root key", key)
        self.key = key

    def kdf_rk(self, dh_out: bytes) -> tuple[RootKey, ChainKey]:
        """``KDF_RK(rk, dh_out)`` (§3.1, §5.2): the next root key and a new chain key at index 0."""
        derived = hkdf(self.key, dh_out, ROOT_KEY_INFO, 64)
        return RootKey(derived[:32]), ChainKey(derived[32:], 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RootKey) and hmac.compare_digest(self.key, other.key)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "RootKey(<redacted>)"


class ChainKey:
    """A sending or receiving chain key ``CKs``/``CKr`` and its position ``index`` in the chain.

    ``index`` is the number of the message whose keys :meth:`message_keys` derives (``Ns``/``Nr``).
    """

    __slots__ = ("key", "index")

    def __init__(self, key: bytes, index: int) -> None:
        _check_key("a chain key", key)
        if index < 0:
            raise ValueError("a chain index is never negative")
        self.key = key
        self.index = index

    def message_keys(self, pq_ratchet_key: bytes | None = None) -> MessageKeys:
        """The keys of message ``index``: the seed ``HMAC(ck, 0x01)`` expanded by HKDF to 80 bytes,
        salted with SPQR's key for the message when there is one (:func:`derive_message_keys`).
        """
        seed = hmac.digest(self.key, _MESSAGE_KEY_SEED, "sha256")
        derived = derive_message_keys(seed, pq_ratchet_key)
        return MessageKeys(derived[:32], derived[32:64], derived[64:], self.index)

    def next(self) -> ChainKey:
        """``KDF_CK``'s chain half: ``HMAC(ck, 0x02)`` at ``index + 1``."""
        return ChainKey(hmac.digest(self.key, _CHAIN_KEY_SEED, "sha256"), self.index + 1)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChainKey)
            and self.index == other.index
            and hmac.compare_digest(self.key, other.key)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ChainKey(index={self.index}, key=<redacted>)"


class MessageKeys:
    """The keys of one message: AES-256-CBC key, HMAC-SHA256 key and IV, with the message number."""

    __slots__ = ("cipher_key", "mac_key", "iv", "counter")

    def __init__(self, cipher_key: bytes, mac_key: bytes, iv: bytes, counter: int) -> None:
        _check_key("a cipher key", cipher_key)
        _check_key("a MAC key", mac_key)
        _check_key("an IV", iv, 16)
        self.cipher_key = cipher_key
        self.mac_key = mac_key
        self.iv = iv
        self.counter = counter

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MessageKeys)
            and self.counter == other.counter
            and hmac.compare_digest(
                self.cipher_key + self.mac_key + self.iv, other.cipher_key + other.mac_key + other.iv
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MessageKeys(counter={self.counter}, keys=<redacted>)"


def derive_message_keys(seed: bytes, pq_ratchet_key: bytes | None = None) -> bytes:
    """Cipher key ‖ MAC key ‖ IV (80 bytes) of one message from its seed ``HMAC(CK, 0x01)``.

    ``HKDF(salt = pq_ratchet_key or 32 zero bytes, seed, "WhisperMessageKeys", 80)``: the Triple
    Ratchet's combination of the Double Ratchet's seed with the post-quantum ratchet's 32-byte key
    for the same message (libsignal ``MessageKeyGenerator::generate_keys``).  Without a key it is
    version 3's derivation.
    """
    if pq_ratchet_key is not None:
        _check_key("a post-quantum ratchet key", pq_ratchet_key)
    return hkdf(pq_ratchet_key or _ZERO_SALT, seed, MESSAGE_KEYS_INFO, 80)


def kdf_x3dh(dh_outputs: bytes) -> tuple[RootKey, ChainKey]:
    """The X3DH KDF of libsignal v3: ``HKDF(0, 0xFF×32 ‖ DH1..DH4, "WhisperText", 64)``.

    ``dh_outputs`` is the concatenation ``DH1 ‖ DH2 ‖ DH3`` (``‖ DH4`` when a one-time prekey
    was used).  Returns the first root key and the first chain key (index 0).
    """
    derived = hkdf(_ZERO_SALT, X3DH_DISCONTINUITY + dh_outputs, X3DH_INFO, 64)
    return RootKey(derived[:32]), ChainKey(derived[32:], 0)
