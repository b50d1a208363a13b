"""Attachment encryption: a file encrypted once with a fresh key, verified whole before it is read.

What this module owns
---------------------
The cryptography of a photo or file sent through the blob store, streaming and sans-I/O.  Each
attachment has a fresh 64-byte :class:`AttachmentKey` (an AES-256 key ‖ an HMAC-SHA256 key, the
split Signal's attachments use) and a random 16-byte IV, both drawn from the caller's ``rng``.
The encrypted blob is::

    blob   = IV (16) ‖ AES-256-CBC(aes_key, IV, PKCS#7(padded plaintext)) ‖ MAC (32)
    MAC    = HMAC-SHA256(mac_key, IV ‖ ciphertext)
    digest = SHA-256(blob)

The sender puts the key, the digest and the plaintext size in the pointer it sends inside an
end-to-end encrypted message; the blob store sees only the blob.

The bucket rule (what the blob's size tells)
--------------------------------------------
Before encryption the plaintext is extended with zero bytes to :func:`padded_size`:

* at most :data:`MIN_PADDED_SIZE` (1 KiB) bytes: to exactly 1 KiB;
* otherwise, a plaintext of ``n`` bytes with ``k = n.bit_length()`` is rounded up to the next
  multiple of ``2 ** (k - 5)``: the padded size keeps only the five leading bits of ``n``.

So between two powers of two there are 16 buckets, each at most 1/16 (6.25 %) larger than the
plaintext in it, and the blob size (:func:`blob_size`) is a function of the bucket alone.  What an
observer of blob sizes (the blob store, the network, a cache) learns is the bucket: the size to
within about 6 %, and every file under 1 KiB looks the same.  It still learns the order of
magnitude, which the padding does not try to hide (hiding it would cost a factor of two or more
in space and bandwidth), and it learns when and how often a blob is fetched.  Signal pads its
attachments the same way in spirit (exponential buckets with a 5 % step); this rule is integer
arithmetic throughout, so every implementation computes the same size.

The receiver knows the plaintext size from the pointer and refuses a blob whose length is not
:func:`blob_size` of it, and a plaintext whose padding is anything but zeros and PKCS#7.

Verification before any plaintext: two passes
---------------------------------------------
The receiver reads the blob twice.  :class:`AttachmentVerifier` takes the blob in chunks of any
size and checks its length, its SHA-256 digest (against the pointer's) and its MAC; it computes no
plaintext at all.  Only :meth:`AttachmentVerifier.verify` makes a :class:`VerifiedAttachment`, and
only that makes an :class:`AttachmentDecryptor`, which takes the same blob again and returns
plaintext chunks; its :meth:`~AttachmentDecryptor.finalize` checks that the second pass saw the
very bytes the first pass verified (the same digest), so a file changed between the passes is
refused too.

Why two passes rather than one pass that decrypts into a temporary file and renames it on success:
the client keeps the downloaded ciphertext on disk anyway (an interrupted download resumes from it
with an HTTP Range request), so the second pass costs a local read, not a download; and in
exchange a tampered, truncated or swapped blob never yields a single plaintext byte, not even in
a temporary file that a crash could leave behind and not in a padding check that could become an
oracle.  The I/O layer still writes the plaintext of the second pass to a temporary file and
renames it into place only after :meth:`~AttachmentDecryptor.finalize` returned; the client does
exactly that (``client/attachments.py``).

Invariants
----------
Memory is bounded by the chunk sizes the caller feeds, never by the file size: the encryptor's
zero padding (up to 1/16 of a file) comes out of :meth:`AttachmentEncryptor.finalize` in chunks of
a size the caller chooses.  A refused chunk changes nothing: the length checks come before any
state is updated.  Verification raises a subclass of :class:`InvalidAttachmentError`; it never
returns ``False``.  ``repr`` of a key shows no key bytes.  Nothing here reads a file, a clock or
randomness of its own.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from e2e.errors import InvalidKeyError, InvalidMessageError
from e2e.keys import Rng

__all__ = [
    "KEY_LENGTH",
    "IV_LENGTH",
    "MAC_LENGTH",
    "DIGEST_LENGTH",
    "MIN_PADDED_SIZE",
    "MAX_SIZE",
    "AttachmentKey",
    "padded_size",
    "blob_size",
    "AttachmentEncryptor",
    "AttachmentVerifier",
    "VerifiedAttachment",
    "AttachmentDecryptor",
    "EncryptedAttachment",
    "encrypt_attachment",
    "decrypt_attachment",
    "InvalidAttachmentError",
    "AttachmentLengthError",
    "AttachmentDigestError",
    "AttachmentMacError",
    "AttachmentPaddingError",
    "AttachmentChangedError",
]

KEY_LENGTH: Final = 64
IV_LENGTH: Final = 16
MAC_LENGTH: Final = 32
DIGEST_LENGTH: Final = 32
MIN_PADDED_SIZE: Final = 1024
# The largest plaintext the format describes (the pointer carries sizes as 64-bit numbers; servers
# cap far lower).
MAX_SIZE: Final = (1 << 62) - 1
_BLOCK: Final = 16
_BUCKET_BITS: Final = 5
_DEFAULT_CHUNK: Final = 64 * 1024


class InvalidAttachmentError(InvalidMessageError):
    """A blob that does not verify or decrypt as the attachment its pointer describes."""


class AttachmentLengthError(InvalidAttachmentError):
    """A blob (or a plaintext fed to the encryptor) longer or shorter than its size says."""


class AttachmentDigestError(InvalidAttachmentError):
    """A blob whose SHA-256 digest is not the pointer's: altered, or another blob."""


class AttachmentMacError(InvalidAttachmentError):
    """A blob whose HMAC-SHA256 does not verify under the attachment's key."""


class AttachmentPaddingError(InvalidAttachmentError):
    """A verified blob whose padding is not zeros then PKCS#7: an honest sender never makes one."""


class AttachmentChangedError(InvalidAttachmentError):
    """The second (decrypting) pass read other bytes than the first (verifying) pass verified."""


@dataclass(frozen=True, slots=True)
class AttachmentKey:
    """The 64-byte key of one attachment: AES-256 key ‖ HMAC-SHA256 key."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_LENGTH:
            raise InvalidKeyError(f"an attachment key is {KEY_LENGTH} bytes")

    @classmethod
    def generate(cls, rng: Rng) -> AttachmentKey:
        """A fresh key from ``rng``."""
        return cls(rng(KEY_LENGTH))

    @property
    def aes_key(self) -> bytes:
        return self.key[:32]

    @property
    def mac_key(self) -> bytes:
        return self.key[32:]

    def __repr__(self) -> str:
        return "AttachmentKey(<redacted>)"


def _check_size(size: int) -> None:
    if type(size) is not int or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"an attachment size is an integer from 0 to {MAX_SIZE}")


def padded_size(size: int) -> int:
    """The plaintext size after bucket padding (the module docstring gives the rule)."""
    _check_size(size)
    if size <= MIN_PADDED_SIZE:
        return MIN_PADDED_SIZE
    step = 1 << max(0, size.bit_length() - _BUCKET_BITS)
    return -(-size // step) * step


def blob_size(size: int) -> int:
    """The length of the encrypted blob of a ``size``-byte plaintext."""
    padded = padded_size(size)
    return IV_LENGTH + padded + (_BLOCK - padded % _BLOCK) + MAC_LENGTH


def _check_iv(iv: bytes) -> None:
    if not isinstance(iv, bytes) or len(iv) != IV_LENGTH:
        raise ValueError(f"an attachment IV is {IV_LENGTH} bytes")


def _aes(key: AttachmentKey, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key.aes_key), modes.CBC(iv))


class AttachmentEncryptor:
    """Encrypt a ``size``-byte plaintext fed in chunks of any size; the blob comes out in chunks.

    Call :meth:`update` with the plaintext's chunks (each returns the blob bytes ready so far, the
    IV first), then iterate over :meth:`finalize` (the encrypted padding in chunks of at most
    ``chunk_size`` bytes, then the MAC), then read :attr:`digest`.  Feeding more or fewer than
    ``size`` bytes is an :class:`AttachmentLengthError`: a file that changed while it was read.
    """

    def __init__(self, key: AttachmentKey, iv: bytes, size: int) -> None:
        _check_iv(iv)
        self._padded = padded_size(size)
        self._size = size
        self._fed = 0
        self._pending_iv: bytes | None = iv
        self._cipher = _aes(key, iv).encryptor()
        self._mac = hmac.new(key.mac_key, iv, hashlib.sha256)
        self._sha = hashlib.sha256(iv)
        self._finalized = False
        self._digest: bytes | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def blob_size(self) -> int:
        return blob_size(self._size)

    def _emit(self, ciphertext: bytes) -> bytes:
        self._mac.update(ciphertext)
        self._sha.update(ciphertext)
        if self._pending_iv is not None:
            ciphertext, self._pending_iv = self._pending_iv + ciphertext, None
        return ciphertext

    def update(self, chunk: bytes) -> bytes:
        """Encrypt the next plaintext chunk; returns the blob bytes it completes (maybe none)."""
        if self._finalized:
            raise ValueError("the encryptor is finalized")
        if self._fed + len(chunk) > self._size:
            raise AttachmentLengthError(f"more than the announced {self._size} bytes of plaintext")
        self._fed += len(chunk)
        return self._emit(self._cipher.update(chunk))

    def finalize(self, chunk_size: int = _DEFAULT_CHUNK) -> Iterator[bytes]:
        """Check the plaintext was all fed; return an iterator over the rest of the blob.

        The iterator yields the encrypted zero padding in chunks of at most ``chunk_size`` bytes,
        then the last block and the MAC; :attr:`digest` is set once it is exhausted.
        """
        if self._finalized:
            raise ValueError("the encryptor is finalized")
        if self._fed != self._size:
            raise AttachmentLengthError(f"{self._fed} bytes of plaintext, not the announced {self._size}")
        if chunk_size < _BLOCK:
            raise ValueError("chunk_size is at least one AES block")
        self._finalized = True
        return self._tail(chunk_size)

    def _tail(self, chunk_size: int) -> Iterator[bytes]:
        remaining = self._padded - self._size
        zeros = bytes(min(remaining, chunk_size))
        while remaining:
            piece = min(remaining, chunk_size)
            remaining -= piece
            out = self._emit(self._cipher.update(zeros[:piece]))
            if out:
                yield out
        pad = _BLOCK - self._padded % _BLOCK
        last = self._emit(self._cipher.update(bytes((pad,)) * pad) + self._cipher.finalize())
        mac = self._mac.digest()
        self._sha.update(mac)
        self._digest = self._sha.digest()
        yield last + mac

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole blob; available once :meth:`finalize`'s iterator is exhausted."""
        if self._digest is None:
            raise ValueError("the blob is not complete yet")
        return self._digest


class _Reader:
    """Length accounting shared by both passes: where the IV, ciphertext and MAC lie."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.expected = blob_size(size)
        self.mac_start = self.expected - MAC_LENGTH
        self.received = 0

    def take(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self.expected:
            raise AttachmentLengthError(f"the blob is longer than {self.expected} bytes")
        self.received += len(chunk)

    def complete(self) -> None:
        if self.received != self.expected:
            raise AttachmentLengthError(f"the blob is {self.received} bytes, not {self.expected}")


class AttachmentVerifier:
    """The first pass: length, digest and MAC of a blob fed in chunks; no plaintext is made.

    ``digest`` and ``size`` are the pointer's.  :meth:`verify` raises
    :class:`AttachmentLengthError`, :class:`AttachmentDigestError` or :class:`AttachmentMacError`,
    or returns the :class:`VerifiedAttachment` that the decrypting pass needs.
    """

    def __init__(self, key: AttachmentKey, digest: bytes, size: int) -> None:
        if not isinstance(digest, bytes) or len(digest) != DIGEST_LENGTH:
            raise ValueError(f"an attachment digest is {DIGEST_LENGTH} bytes")
        _check_size(size)
        self._key = key
        self._digest = digest
        self._reader = _Reader(size)
        self._sha = hashlib.sha256()
        self._mac = hmac.new(key.mac_key, digestmod=hashlib.sha256)
        self._their_mac = bytearray()
        self._done = False

    def update(self, chunk: bytes) -> None:
        """Take the next chunk of the blob; too many bytes raise and change nothing."""
        if self._done:
            raise ValueError("the verifier is finished")
        start = self._reader.received
        self._reader.take(chunk)
        self._sha.update(chunk)
        split = max(0, min(len(chunk), self._reader.mac_start - start))
        self._mac.update(chunk[:split])
        self._their_mac += chunk[split:]

    def verify(self) -> VerifiedAttachment:
        """Check length, digest and MAC, in that order; see the class docstring."""
        if self._done:
            raise ValueError("the verifier is finished")
        self._reader.complete()
        self._done = True
        if not hmac.compare_digest(self._sha.digest(), self._digest):
            raise AttachmentDigestError("the blob's SHA-256 digest is not the pointer's")
        if not hmac.compare_digest(self._mac.digest(), bytes(self._their_mac)):
            raise AttachmentMacError("the blob's MAC does not verify")
        return VerifiedAttachment(self._key, self._digest, self._reader.size, _token=_VERIFIED)


_VERIFIED: Final = object()


class VerifiedAttachment:
    """Proof that a blob of this digest verified under this key.

    Only :meth:`AttachmentVerifier.verify` makes one; the decrypting pass cannot start without it.
    """

    __slots__ = ("key", "digest", "size")

    def __init__(self, key: AttachmentKey, digest: bytes, size: int, *, _token: object = None) -> None:
        if _token is not _VERIFIED:
            raise TypeError("a VerifiedAttachment comes only from AttachmentVerifier.verify")
        self.key = key
        self.digest = digest
        self.size = size

    def decryptor(self) -> AttachmentDecryptor:
        """The second pass over the same blob."""
        return AttachmentDecryptor(self)

    def __repr__(self) -> str:
        return f"VerifiedAttachment(digest={self.digest.hex()}, size={self.size})"


class AttachmentDecryptor:
    """The second pass: decrypt the verified blob fed again in chunks; plaintext comes out of :meth:`update`.

    The plaintext stops at the pointer's size; the padding after it is checked, not returned.
    :meth:`finalize` raises :class:`AttachmentChangedError` if these bytes are not the verified
    ones, so the caller keeps what :meth:`update` returned in a temporary file until then.
    """

    def __init__(self, verified: VerifiedAttachment) -> None:
        if not isinstance(verified, VerifiedAttachment):
            raise TypeError("an AttachmentDecryptor needs a VerifiedAttachment")
        self._verified = verified
        self._reader = _Reader(verified.size)
        self._padded = padded_size(verified.size)
        self._pad = _BLOCK - self._padded % _BLOCK
        self._sha = hashlib.sha256()
        self._iv = b""
        self._decryptor: CipherContext | None = None
        # Position in the decrypted stream: plaintext, then zeros, then PKCS#7.
        self._position = 0
        self._done = False

    def update(self, chunk: bytes) -> bytes:
        """Take the next chunk of the blob; returns the plaintext bytes it decrypts."""
        if self._done:
            raise ValueError("the decryptor is finished")
        start = self._reader.received
        self._reader.take(chunk)
        self._sha.update(chunk)
        view = memoryview(chunk)
        # The IV: the first 16 bytes of the blob.
        iv_part = max(0, min(len(chunk), IV_LENGTH - start))
        if iv_part:
            self._iv += bytes(view[:iv_part])
        if self._decryptor is None:
            if len(self._iv) < IV_LENGTH:
                return b""
            self._decryptor = _aes(self._verified.key, self._iv).decryptor()
        body_end = max(0, min(len(chunk), self._reader.mac_start - start))
        if body_end <= iv_part:
            return b""
        return self._release(self._decryptor.update(view[iv_part:body_end]))

    def _release(self, decrypted: bytes) -> bytes:
        begin, end = self._position, self._position + len(decrypted)
        self._position = end
        size = self._verified.size
        keep = max(0, min(end, size) - begin)
        zeros_from, zeros_to = max(begin, size), min(end, self._padded)
        if zeros_to > zeros_from:
            zeros = decrypted[zeros_from - begin : zeros_to - begin]
            if zeros.count(0) != len(zeros):
                raise AttachmentPaddingError("the padding after the plaintext is not zeros")
        pkcs_from = max(begin, self._padded)
        if end > pkcs_from:
            pkcs = decrypted[pkcs_from - begin :]
            if pkcs != bytes((self._pad,)) * len(pkcs):
                raise AttachmentPaddingError("bad PKCS#7 padding")
        return decrypted[:keep]

    def finalize(self) -> None:
        """Check the second pass read the verified blob, whole; only then is the plaintext good."""
        if self._done:
            raise ValueError("the decryptor is finished")
        self._reader.complete()
        self._done = True
        if not hmac.compare_digest(self._sha.digest(), self._verified.digest):
            raise AttachmentChangedError("the blob changed between verification and decryption")
        assert self._decryptor is not None
        if self._decryptor.finalize() or self._position != self._padded + self._pad:
            raise AttachmentPaddingError("the ciphertext does not end on the padding")


@dataclass(frozen=True, slots=True)
class EncryptedAttachment:
    """A whole blob and its digest, from :func:`encrypt_attachment`."""

    blob: bytes = field(repr=False)
    digest: bytes


def encrypt_attachment(key: AttachmentKey, iv: bytes, plaintext: bytes) -> EncryptedAttachment:
    """Encrypt a plaintext held in memory (small files, tests and vectors) in one call."""
    encryptor = AttachmentEncryptor(key, iv, len(plaintext))
    parts = [encryptor.update(plaintext), *encryptor.finalize()]
    return EncryptedAttachment(b"".join(parts), encryptor.digest)


def decrypt_attachment(key: AttachmentKey, digest: bytes, size: int, blob: bytes) -> bytes:
    """Verify, then decrypt, a blob held in memory; raises as the two passes do."""
    verifier = AttachmentVerifier(key, digest, size)
    verifier.update(blob)
    decryptor = verifier.verify().decryptor()
    plaintext = decryptor.update(blob)
    decryptor.finalize()
    return plaintext
