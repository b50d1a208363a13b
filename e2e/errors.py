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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e2e.address import ProtocolAddress
    from e2e.keys import PublicKey

__all__ = [
    "E2EError",
    "DecodeError",
    "StateFormatError",
    "InvalidKeyError",
    "InvalidSignatureError",
    "InvalidMessageError",
    "DuplicateMessageError",
    "VersionMismatchError",
    "TooManySkippedMessagesError",
    "NoSessionError",
    "UnknownPreKeyError",
    "UntrustedIdentityError",
    "FingerprintMismatchError",
    "FingerprintVersionMismatchError",
    "DowngradeError",
    "NoSenderKeyError",
    "DistributionMismatchError",
]


class E2EError(Exception):
    """The base of every error raised by the protocol core."""


class DecodeError(E2EError):
    """Bytes that do not parse: malformed, truncated, oversized or of an unknown version."""


class StateFormatError(DecodeError):
    """A serialized key, prekey or session whose format or version is not understood."""


class InvalidKeyError(E2EError):
    """A key of the wrong type or length, or a Diffie-Hellman result that is all zeros."""


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


class UnknownPreKeyError(InvalidMessageError):
    """A PreKeySignalMessage (or a bundle to build) naming a prekey the store does not hold:
    never made, already used, or retired (libsignal's ``InvalidPreKeyId`` and its kin).

    ``kind`` says which: ``"signed prekey"``, ``"one-time prekey"``, ``"KEM prekey"`` or ``"Kyber prekey"``.
    """

    def __init__(self, kind: str, pre_key_id: int) -> None:
        super().__init__(f"no {kind} with id {pre_key_id}")
        self.kind = kind
        self.pre_key_id = pre_key_id


class UntrustedIdentityError(E2EError):
    """A peer whose identity key differs from the one previously recorded for it.

    Raised by an identity store (:mod:`e2e.stores`) with the ``address`` and the refused
    ``identity_key``; both are ``None`` when the raiser did not know them.
    """

    def __init__(
        self,
        message: str = "untrusted identity key",
        *,
        address: ProtocolAddress | None = None,
        identity_key: PublicKey | None = None,
    ) -> None:
        super().__init__(message)
        self.address = address
        self.identity_key = identity_key


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


class NoSenderKeyError(NoSessionError):
    """No sender-key state to use: an unknown sender, distribution or chain, or a key not our own."""


class DistributionMismatchError(InvalidMessageError):
    """A group message or distribution message whose distribution id is not the one it was given for."""
