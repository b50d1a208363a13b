"""Safety numbers: the fingerprints two people compare to detect a man in the middle.

What this module owns
---------------------
libsignal's ``NumericFingerprintGenerator``, byte for byte, so that a safety number computed here
matches the one a libsignal client shows for the same two identities.

* :func:`logical_fingerprint`: one side's 64-byte fingerprint.  With ``0x0000`` as the two-byte
  hash version, ``K`` the serialized identity key (``0x05 ‖ u``) and ``ID`` the stable identifier
  (a phone number or account id, as bytes)::

      h = SHA-512(0x0000 ‖ K ‖ ID ‖ K)
      repeat ITERATIONS - 1 times:  h = SHA-512(h ‖ K)

  (equivalently: start from ``0x0000 ‖ K ‖ ID`` and apply ``h = SHA-512(h ‖ K)`` ``ITERATIONS`` times).
* :class:`DisplayableFingerprint`: the 60 digits people read aloud.  Each side contributes 30 digits:
  the first 30 bytes of its logical fingerprint, read as six 5-byte big-endian integers, each
  reduced modulo 100000 and written as five digits.  The two 30-digit halves are joined in
  ascending order, so both parties see the same 60 digits.
* :class:`ScannableFingerprint`: what a QR code carries, the protobuf
  ``CombinedFingerprints{version = 1, local_fingerprint{content}, remote_fingerprint{content}}``
  with the first 32 bytes of each side's logical fingerprint.  The scanner compares *their* local
  half with *our* remote half and the other way round, and refuses a different version.
* :class:`Fingerprint`: both forms for one pair of identities, from one side's point of view.

Invariants
----------
Comparison never returns a bool: :meth:`DisplayableFingerprint.compare` and
:meth:`ScannableFingerprint.compare` return ``None`` when the numbers match and raise
:class:`~e2e.errors.FingerprintMismatchError` when they do not (its subclass
:class:`~e2e.errors.FingerprintVersionMismatchError` when a scanned code has another version).
Bytes that are not a well-formed ``CombinedFingerprints`` raise :class:`~e2e.errors.DecodeError`.
Comparisons run in constant time.

What it does not know
---------------------
Who the identifiers belong to or where identity keys are stored; it is a pure function of two
(identifier, identity key) pairs.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from e2e import protobuf
from e2e.errors import DecodeError, FingerprintMismatchError, FingerprintVersionMismatchError
from e2e.keys import PublicKey

__all__ = [
    "FINGERPRINT_HASH_VERSION",
    "SCANNABLE_VERSION",
    "ITERATIONS",
    "logical_fingerprint",
    "DisplayableFingerprint",
    "ScannableFingerprint",
    "Fingerprint",
]

FINGERPRINT_HASH_VERSION: Final = 0
"""The two-byte version that opens the hashed input (libsignal's ``fingerprint_version = 0x0000``)."""

SCANNABLE_VERSION: Final = 1
"""The version libsignal's clients put in a scannable fingerprint (``CombinedFingerprints.version``)."""

ITERATIONS: Final = 5200
"""The number of SHA-512 iterations libsignal's clients use for safety numbers."""

_MAX_ITERATIONS: Final = 1_000_000
_DIGIT_CHUNKS: Final = 6
_CHUNK_BYTES: Final = 5
_SCANNABLE_BYTES: Final = 32

# CombinedFingerprints{1: version, 2: local_fingerprint, 3: remote_fingerprint} and
# LogicalFingerprint{1: content}, libsignal's fingerprint.proto.
_VERSION_FIELD: Final = 1
_LOCAL_FIELD: Final = 2
_REMOTE_FIELD: Final = 3
_CONTENT_FIELD: Final = 1
_COMBINED_SCHEMA: Final = {
    _VERSION_FIELD: protobuf.Field(protobuf.VARINT),
    _LOCAL_FIELD: protobuf.Field(protobuf.LEN),
    _REMOTE_FIELD: protobuf.Field(protobuf.LEN),
}
_LOGICAL_SCHEMA: Final = {_CONTENT_FIELD: protobuf.Field(protobuf.LEN)}
_UINT32_MAX: Final = 2**32 - 1


def logical_fingerprint(
    identity_key: PublicKey, stable_identifier: bytes, iterations: int = ITERATIONS
) -> bytes:
    """One side's 64-byte fingerprint: ``iterations`` rounds of SHA-512 (see the module docstring)."""
    if not 1 < iterations <= _MAX_ITERATIONS:
        raise ValueError(f"the iteration count must be between 2 and {_MAX_ITERATIONS}")
    if not isinstance(stable_identifier, bytes):
        raise TypeError("a stable identifier is bytes (encode text as UTF-8)")
    key = identity_key.serialize()
    digest = FINGERPRINT_HASH_VERSION.to_bytes(2, "big") + key + stable_identifier
    for _ in range(iterations):
        digest = hashlib.sha512(digest + key).digest()
    return digest


def _digits(fingerprint: bytes) -> str:
    """Thirty digits from the first 30 bytes: six big-endian 5-byte chunks, each modulo 100000."""
    chunks = (
        int.from_bytes(fingerprint[i * _CHUNK_BYTES : (i + 1) * _CHUNK_BYTES], "big") % 100_000
        for i in range(_DIGIT_CHUNKS)
    )
    return "".join(f"{chunk:05d}" for chunk in chunks)


class DisplayableFingerprint:
    """The 60-digit safety number: both sides' 30 digits, the smaller half first."""

    __slots__ = ("our_digits", "their_digits")

    def __init__(self, our_fingerprint: bytes, their_fingerprint: bytes) -> None:
        for fingerprint in (our_fingerprint, their_fingerprint):
            if len(fingerprint) < _DIGIT_CHUNKS * _CHUNK_BYTES:
                raise ValueError("a logical fingerprint for display is at least 30 bytes")
        self.our_digits = _digits(our_fingerprint)
        self.their_digits = _digits(their_fingerprint)

    def __str__(self) -> str:
        low, high = sorted((self.our_digits, self.their_digits))
        return low + high

    def __repr__(self) -> str:
        return f"DisplayableFingerprint({self})"

    def compare(self, their_safety_number: str) -> None:
        """Check the 60 digits the other party shows; raise :class:`FingerprintMismatchError` if not equal.

        Spaces, which clients put between groups of five digits, are ignored.
        """
        typed = "".join(their_safety_number.split())
        if not hmac.compare_digest(typed.encode(), str(self).encode()):
            raise FingerprintMismatchError("the safety numbers do not match")


def _content(combined: protobuf.Record, number: int, name: str) -> bytes:
    logical = protobuf.get_bytes(combined, number, f"{name} fingerprint")
    return protobuf.get_bytes(protobuf.parse(logical, _LOGICAL_SCHEMA), _CONTENT_FIELD, f"{name} content")


class ScannableFingerprint:
    """The QR-code form: a version and the first 32 bytes of both logical fingerprints."""

    __slots__ = ("version", "our_fingerprint", "their_fingerprint")

    def __init__(self, version: int, our_fingerprint: bytes, their_fingerprint: bytes) -> None:
        if not 0 <= version <= _UINT32_MAX:
            raise ValueError("a fingerprint version is an unsigned 32-bit integer")
        if len(our_fingerprint) < _SCANNABLE_BYTES or len(their_fingerprint) < _SCANNABLE_BYTES:
            raise ValueError("a logical fingerprint for scanning is at least 32 bytes")
        self.version = version
        self.our_fingerprint = our_fingerprint[:_SCANNABLE_BYTES]
        self.their_fingerprint = their_fingerprint[:_SCANNABLE_BYTES]

    def serialize(self) -> bytes:
        """``CombinedFingerprints`` in protobuf encoding, our half as ``local_fingerprint``."""
        return (
            protobuf.encode_uint_field(_VERSION_FIELD, self.version)
            + protobuf.encode_bytes_field(
                _LOCAL_FIELD, protobuf.encode_bytes_field(_CONTENT_FIELD, self.our_fingerprint)
            )
            + protobuf.encode_bytes_field(
                _REMOTE_FIELD, protobuf.encode_bytes_field(_CONTENT_FIELD, self.their_fingerprint)
            )
        )

    @classmethod
    def deserialize(cls, data: bytes) -> ScannableFingerprint:
        """Parse a ``CombinedFingerprints``, as the one who produced it sees it."""
        combined = protobuf.parse(data, _COMBINED_SCHEMA)
        version = protobuf.get_uint(combined, _VERSION_FIELD, "fingerprint version", _UINT32_MAX)
        local = _content(combined, _LOCAL_FIELD, "local")
        remote = _content(combined, _REMOTE_FIELD, "remote")
        if len(local) != _SCANNABLE_BYTES or len(remote) != _SCANNABLE_BYTES:
            raise DecodeError(f"a scanned fingerprint half is {_SCANNABLE_BYTES} bytes")
        try:
            return cls(version, local, remote)
        except ValueError as error:
            raise DecodeError(str(error)) from None

    def compare(self, scanned: bytes) -> None:
        """Check the code scanned from the other party's screen.

        Their ``local_fingerprint`` must be our remote half and their ``remote_fingerprint`` our
        local half.  Raises :class:`FingerprintVersionMismatchError` for another version (a missing
        version counts as 0, as in libsignal), :class:`FingerprintMismatchError` for other halves and
        :class:`DecodeError` for malformed bytes.
        """
        combined = protobuf.parse(scanned, _COMBINED_SCHEMA)
        their_version = (
            protobuf.get_uint(combined, _VERSION_FIELD, "fingerprint version", _UINT32_MAX)
            if _VERSION_FIELD in combined
            else 0
        )
        if their_version != self.version:
            raise FingerprintVersionMismatchError(their_version, self.version)
        their_local = _content(combined, _LOCAL_FIELD, "local")
        their_remote = _content(combined, _REMOTE_FIELD, "remote")
        same_remote = hmac.compare_digest(their_local, self.their_fingerprint)
        same_local = hmac.compare_digest(their_remote, self.our_fingerprint)
        if not (same_remote and same_local):
            raise FingerprintMismatchError("the scanned fingerprint does not match")

    def __repr__(self) -> str:
        return f"ScannableFingerprint(version={self.version}, {self.serialize().hex()})"


class Fingerprint:
    """Both forms of the safety number for our identity and theirs, from our point of view."""

    __slots__ = ("displayable", "scannable")

    def __init__(self, displayable: DisplayableFingerprint, scannable: ScannableFingerprint) -> None:
        self.displayable = displayable
        self.scannable = scannable

    @classmethod
    def create(
        cls,
        our_identifier: bytes,
        our_identity_key: PublicKey,
        their_identifier: bytes,
        their_identity_key: PublicKey,
        version: int = SCANNABLE_VERSION,
        iterations: int = ITERATIONS,
    ) -> Fingerprint:
        """libsignal's ``NumericFingerprintGenerator.createFor``: both logical fingerprints, both forms."""
        ours = logical_fingerprint(our_identity_key, our_identifier, iterations)
        theirs = logical_fingerprint(their_identity_key, their_identifier, iterations)
        return cls(DisplayableFingerprint(ours, theirs), ScannableFingerprint(version, ours, theirs))

    def __repr__(self) -> str:
        return f"Fingerprint({self.displayable})"
