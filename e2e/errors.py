"""The exceptions of the protocol core.

Every failure in ``e2e`` is reported by raising one of these types; nothing in
the core signals failure by returning ``False`` or ``None``.  They form one
tree rooted at :class:`E2EError`, so a caller can catch everything the core
can raise with a single ``except`` clause, or catch a narrow type when it wants
to react differently (for example, to drop a duplicate message silently).

A raised error never leaves a half-updated object behind: functions that
change state (a session decrypting, a record accepting a new state) commit
their changes only after every check has passed.
"""

from __future__ import annotations

__all__ = [
    "E2EError",
    "DecodeError",
    "StateFormatError",
    "InvalidKeyError",
    "PreKeyNotFoundError",
    "InvalidSignatureError",
    "InvalidMessageError",
    "DuplicateMessageError",
    "VersionMismatchError",
    "TooManySkippedMessagesError",
    "NoSessionError",
    "UntrustedIdentityError",
    "FingerprintMismatchError",
    "FingerprintVersionMismatchError",
    "DowngradeError",
]


class E2EError(Exception):
    """The base of every error raised by the protocol core."""


class DecodeError(E2EError):
    """Bytes that do not parse: malformed, truncated, oversized or of an unknown version."""


class StateFormatError(DecodeError):
    """A serialized key, prekey or session whose format or version is not understood."""


class InvalidKeyError(E2EError):
    """A key of the wrong type or length, or a Diffie-Hellman result that is all zeros."""


class PreKeyNotFoundError(InvalidKeyError):
    """A message names a prekey (one-time, signed or Kyber) that does not exist or was already used."""


class InvalidSignatureError(E2EError):
    """A signature that does not verify under the given public key."""


class InvalidMessageError(E2EError):
    """A message that fails authentication or cannot be decrypted by any session state."""


class DuplicateMessageError(InvalidMessageError):
    """A message whose key was already used: a replay or a duplicate delivery."""


class VersionMismatchError(InvalidMessageError):
    """A message of another protocol version (3 or 4) than the session state it was tried with."""


class TooManySkippedMessagesError(InvalidMessageError):
    """A message that would require skipping more message keys than the configured limit."""


class NoSessionError(E2EError):
    """An operation that needs an established session where there is none."""


class UntrustedIdentityError(E2EError):
    """A peer whose identity key differs from the one previously recorded for it."""


class FingerprintMismatchError(E2EError):
    """Two safety numbers (or scanned fingerprints) that do not match."""


class FingerprintVersionMismatchError(FingerprintMismatchError):
    """A scanned fingerprint of another version than ours: the two clients cannot compare."""

    def __init__(self, theirs: int, ours: int) -> None:
        super().__init__(f"the scanned fingerprint has version {theirs}, ours is {ours}")
        self.theirs = theirs
        self.ours = ours


class DowngradeError(E2EError):
    """An attempt to start a session with a weaker key agreement than the peer advertised."""
