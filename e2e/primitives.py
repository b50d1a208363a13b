"""HMAC-SHA256, the per-message KDF steps and AES-256-CBC, shaped for the ratchet's hot path.

What this module owns
---------------------
The symmetric work the Double Ratchet does for every message, written for speed on small inputs:

* :func:`hmac_sha256`, :func:`mac_parts` and :class:`HmacKey`: HMAC-SHA256 (RFC 2104), built on
  :mod:`hashlib`; a key longer than SHA-256's 64-byte block is first hashed, as RFC 2104 §2
  says (the protocol's own keys are all 32 bytes).  :func:`verify_hmac_sha256` checks a tag,
  possibly truncated, in constant time and raises :class:`~e2e.errors.InvalidMessageError`.
  With the OpenSSL 3 builds Python ships with,
  :func:`hmac.digest` spends most of its time looking the algorithm up on every call.  Here the
  padded key is absorbed into a SHA-256 object copied from a ready one (a copy skips that
  lookup), and each HMAC is a copy, an update and a digest: about twice as fast for the 1–100
  byte inputs the ratchet feeds it.
* :func:`root_step`: ``KDF_RK`` (§2.2, §5.2): ``HKDF(salt = RK, DH output, "WhisperRatchet", 64)``.
* :func:`chain_step`: ``KDF_CK`` (Double Ratchet §2.2, §5.2 with libsignal's constants) in one
  go: the message-key seed ``HMAC(CK, 0x01)`` and the next chain key ``HMAC(CK, 0x02)``.
* :func:`derive_message_keys`: libsignal v3's expansion of the seed,
  ``HKDF(salt = 32 zero bytes, seed, "WhisperMessageKeys", 80)`` → AES key ‖ MAC key ‖ IV;
  :func:`derive_group_message_keys`, the Sender Keys one, ``HKDF(salt = 32 zero bytes, seed,
  "WhisperGroup", 48)`` → IV ‖ AES key (:mod:`e2e.sender_key_state`).
* :func:`cbc_encrypt` / :func:`cbc_decrypt`: AES-256-CBC with PKCS#7 padding done here (one
  ``bytes`` operation instead of a padding context), using ``cryptography``.  The cipher
  contexts are made by the function ``Cipher.encryptor()`` itself ends in, skipping its generic
  type checks (a third of a small message's AES time); if a ``cryptography`` release moves that
  function, the public API is used instead.

These compute exactly what :mod:`e2e.kdf` defines; the tests check them against it byte for byte.
:mod:`e2e.kdf` stays the readable reference, this module is the one the message path runs.

Invariants
----------
Nothing here keeps state or draws randomness.  :func:`cbc_decrypt` raises
:class:`~e2e.errors.InvalidMessageError` for a ciphertext whose length or padding is wrong; it is
only ever called after the message's MAC has verified.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from e2e.errors import InvalidMessageError
from e2e.kdf import MESSAGE_KEYS_INFO, ROOT_KEY_INFO

__all__ = [
    "HmacKey",
    "hmac_sha256",
    "verify_hmac_sha256",
    "mac_parts",
    "chain_step",
    "root_step",
    "derive_message_keys",
    "derive_group_message_keys",
    "cbc_encrypt",
    "cbc_decrypt",
    "AES_BLOCK_SIZE",
]

AES_BLOCK_SIZE: Final = 16
_BLOCK: Final = 64  # SHA-256's block size, to which HMAC pads its key (RFC 2104 §2).
# Translation tables that XOR every byte with HMAC's ipad and opad, and the padding of a 32-byte
# key's remaining 32 bytes (zeros, XORed).
_IPAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OPAD: Final = bytes(byte ^ 0x5C for byte in range(256))
_IPAD_TAIL: Final = b"\x36" * 32
_OPAD_TAIL: Final = b"\x5c" * 32
# Up to this many bytes a message is joined to the padded key; beyond it, fed by update() instead.
_SHORT: Final = 4096
_sha256 = hashlib.sha256

_MESSAGE_KEY_SEED: Final = b"\x01"
_CHAIN_KEY_SEED: Final = b"\x02"
# HKDF-Expand's inputs for the three 32-byte blocks of the 80-byte message-key output (RFC 5869
# §2.3): T(1) = HMAC(PRK, info ‖ 0x01), T(n) = HMAC(PRK, T(n-1) ‖ info ‖ n).
_EXPAND_1: Final = MESSAGE_KEYS_INFO + b"\x01"
_EXPAND_2: Final = MESSAGE_KEYS_INFO + b"\x02"
_EXPAND_3: Final = MESSAGE_KEYS_INFO + b"\x03"
# The same for the 48 bytes of a sender message key (Sender Keys' "WhisperGroup").
_GROUP_1: Final = b"WhisperGroup\x01"
_GROUP_2: Final = b"WhisperGroup\x02"
_ROOT_1: Final = ROOT_KEY_INFO + b"\x01"
_ROOT_2: Final = ROOT_KEY_INFO + b"\x02"


def _pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC (RFC 2104 §2)."""
    if len(key) == 32:
        # Every key of the protocol is 32 bytes: one translate and one join each.
        return key.translate(_IPAD) + _IPAD_TAIL, key.translate(_OPAD) + _OPAD_TAIL
    if len(key) > _BLOCK:
        # RFC 2104 §2: a key longer than the block is replaced by its hash.
        key = _sha256(key).digest()
    padded = key + bytes(_BLOCK - len(key))
    return padded.translate(_IPAD), padded.translate(_OPAD)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key``."""
    inner, outer = _pads(key)
    return _sha256(outer + _sha256(inner + message).digest()).digest()


def verify_hmac_sha256(key: bytes, message: bytes, tag: bytes) -> None:
    """Check that ``tag`` is HMAC-SHA256 of ``message`` under ``key``, truncated to ``len(tag)``.

    The comparison takes constant time.  A tag shorter than 8 bytes (the truncation libsignal's
    messages use, and the shortest RFC 2104 §5 allows for this hash) or longer than 32 bytes is
    refused like a wrong one: raises :class:`~e2e.errors.InvalidMessageError`.
    """
    if not 8 <= len(tag) <= 32:
        raise InvalidMessageError("an HMAC-SHA256 tag is 8 to 32 bytes")
    if not hmac.compare_digest(hmac_sha256(key, message)[: len(tag)], tag):
        raise InvalidMessageError("the HMAC-SHA256 tag does not verify")


def mac_parts(key: bytes, first: bytes, second: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of ``first ‖ second`` without copying a long ``second``."""
    inner, outer = _pads(key)
    if len(second) <= _SHORT:
        digest = _sha256(inner + first + second).digest()
    else:
        hashing = _sha256(inner + first)
        hashing.update(second)
        digest = hashing.digest()
    return _sha256(outer + digest).digest()


class HmacKey:
    """An HMAC-SHA256 key with its padding absorbed once, for several MACs under the same key."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        inner, outer = _pads(key)
        self._inner = _sha256(inner)
        self._outer = _sha256(outer)

    def digest(self, *parts: bytes | memoryview) -> bytes:
        """HMAC-SHA256 of the concatenation of ``parts`` (fed in order, never concatenated)."""
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __repr__(self) -> str:
        return "HmacKey(<redacted>)"


# A fresh SHA-256 to copy from: copying a hash object skips the algorithm lookup that creating
# one costs with OpenSSL 3, which is most of the time of hashing a short input.
_EMPTY: Final = _sha256()


def _keyed(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 objects that have absorbed HMAC's inner and outer padded ``key``."""
    inner_pad, outer_pad = _pads(key)
    inner = _EMPTY.copy()
    inner.update(inner_pad)
    outer = _EMPTY.copy()
    outer.update(outer_pad)
    return inner, outer


# HKDF-Extract's salt for message keys is 32 zero bytes: its padded keys are absorbed once.
_ZERO_INNER, _ZERO_OUTER = _keyed(bytes(32))


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """``KDF_CK(CK)``: the message-key seed ``HMAC(CK, 0x01)`` and the next ``CK`` ``HMAC(CK, 0x02)``."""
    inner, outer = _keyed(chain_key)
    seed_inner = inner.copy()
    seed_inner.update(_MESSAGE_KEY_SEED)
    inner.update(_CHAIN_KEY_SEED)
    seed_outer = outer.copy()
    seed_outer.update(seed_inner.digest())
    outer.update(inner.digest())
    return seed_outer.digest(), outer.digest()


def derive_message_keys(seed: bytes) -> bytes:
    """``HKDF(0×32, seed, "WhisperMessageKeys", 80)``: cipher key ‖ MAC key ‖ IV as one 80-byte value."""
    extract_inner = _ZERO_INNER.copy()
    extract_inner.update(seed)
    extract_outer = _ZERO_OUTER.copy()
    extract_outer.update(extract_inner.digest())
    inner, outer = _keyed(extract_outer.digest())
    # HKDF-Expand, unrolled: T(1) = HMAC(PRK, info ‖ 1), T(n) = HMAC(PRK, T(n-1) ‖ info ‖ n).
    step_inner = inner.copy()
    step_inner.update(_EXPAND_1)
    step_outer = outer.copy()
    step_outer.update(step_inner.digest())
    t1 = step_outer.digest()
    step_inner = inner.copy()
    step_inner.update(t1 + _EXPAND_2)
    step_outer = outer.copy()
    step_outer.update(step_inner.digest())
    t2 = step_outer.digest()
    inner.update(t2 + _EXPAND_3)
    outer.update(inner.digest())
    return t1 + t2 + outer.digest()[:16]


def derive_group_message_keys(seed: bytes) -> bytes:
    """``HKDF(0×32, seed, "WhisperGroup", 48)``: IV (16 bytes) ‖ AES key (32) as one 48-byte value."""
    extract_inner = _ZERO_INNER.copy()
    extract_inner.update(seed)
    extract_outer = _ZERO_OUTER.copy()
    extract_outer.update(extract_inner.digest())
    inner, outer = _keyed(extract_outer.digest())
    step_inner = inner.copy()
    step_inner.update(_GROUP_1)
    step_outer = outer.copy()
    step_outer.update(step_inner.digest())
    t1 = step_outer.digest()
    inner.update(t1 + _GROUP_2)
    outer.update(inner.digest())
    return t1 + outer.digest()[:16]


def _cipher_contexts(
    internal: bool = True,
) -> tuple[Callable[[bytes, bytes], CipherContext], Callable[[bytes, bytes], CipherContext]]:
    """Constructors of AES-256-CBC contexts: ``cryptography``'s own, minus its generic checks.

    ``Cipher(...).encryptor()`` spends a third of a small message's AES time on type checks that
    cannot fail here (the algorithm is AES, the mode CBC, both built on the line before): here a
    64-byte message's encryption takes about 10 µs that way against 15 µs through the public API.
    Where ``cryptography`` exposes the function those methods end in, we call it directly;
    otherwise (or with ``internal=False``) we use the public API.  The tests check that both give
    the same bytes.
    """
    aes, cbc = algorithms.AES, modes.CBC
    if internal:
        try:
            from cryptography.hazmat.bindings._rust import openssl as rust_openssl

            create_encryption = rust_openssl.ciphers.create_encryption_ctx
            create_decryption = rust_openssl.ciphers.create_decryption_ctx
        except (ImportError, AttributeError):  # pragma: no cover - older or repackaged cryptography
            internal = False
        else:
            return (
                lambda key, iv: create_encryption(aes(key), cbc(iv)),
                lambda key, iv: create_decryption(aes(key), cbc(iv)),
            )
    return (
        lambda key, iv: Cipher(aes(key), cbc(iv)).encryptor(),
        lambda key, iv: Cipher(aes(key), cbc(iv)).decryptor(),
    )


_new_encryptor, _new_decryptor = _cipher_contexts()


def cbc_encrypt(cipher_key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-256-CBC with PKCS#7 padding (always 1 to 16 bytes, RFC 5652 §6.3)."""
    pad = AES_BLOCK_SIZE - len(plaintext) % AES_BLOCK_SIZE
    encryptor = _new_encryptor(cipher_key, iv)
    return encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()


def cbc_decrypt(cipher_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    """Invert :func:`cbc_encrypt`; a bad length or padding raises :class:`InvalidMessageError`."""
    if not ciphertext or len(ciphertext) % AES_BLOCK_SIZE:
        raise InvalidMessageError("the ciphertext is not a whole number of AES blocks")
    decryptor = _new_decryptor(cipher_key, iv)
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1]
    # The MAC has already authenticated this ciphertext, so no padding oracle is exposed here;
    # the check still refuses what an honest sender never produces.
    if not 1 <= pad <= AES_BLOCK_SIZE or padded[-pad:] != bytes((pad,)) * pad:
        raise InvalidMessageError("bad PKCS#7 padding")
    return padded[:-pad]


def root_step(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    """``KDF_RK(RK, dh_out)`` = ``HKDF(salt = RK, dh_out, "WhisperRatchet", 64)``: new RK and new CK."""
    prk = hmac_sha256(root_key, dh_out)
    inner, outer = _pads(prk)
    t1 = _sha256(outer + _sha256(inner + _ROOT_1).digest()).digest()
    t2 = _sha256(outer + _sha256(inner + t1 + _ROOT_2).digest()).digest()
    return t1, t2
