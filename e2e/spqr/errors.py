"""The exceptions SPQR raises, each a subtype of the core's error tree.

Every failure of :mod:`e2e.spqr` raises a subclass of :class:`SpqrError`, which is itself an
:class:`~e2e.errors.E2EError`; each also derives from the core type that says what kind of
failure it is (a :class:`~e2e.errors.DecodeError` for bytes that do not parse, an
:class:`~e2e.errors.InvalidMessageError` for a message that parses but must be refused), so code
written against the core's types needs no SPQR-specific clauses.

The names map to the error variants of Signal's ``spqr`` crate (in brackets), so a failure seen on
one side can be matched with the other's log.  A raised error never leaves a changed state
behind: :meth:`e2e.spqr.SpqrState.recv` and :meth:`~e2e.spqr.SpqrState.send` return new
states and never modify the one they are called on.
"""

from __future__ import annotations

from e2e.errors import (
    DecodeError,
    DowngradeError,
    DuplicateMessageError,
    E2EError,
    InvalidMessageError,
    StateFormatError,
    TooManySkippedMessagesError,
)

__all__ = [
    "SpqrError",
    "MalformedSpqrMessageError",
    "SpqrVersionError",
    "EpochOutOfRangeError",
    "InconsistentChunkError",
    "SpqrAuthenticationError",
    "EncapsulationKeyMismatchError",
    "SpqrReplayError",
    "SpqrKeyTrimmedError",
    "SpqrKeyJumpError",
    "SpqrStateFormatError",
]


class SpqrError(E2EError):
    """The base of every SPQR failure."""


class MalformedSpqrMessageError(SpqrError, DecodeError):
    """An SPQR message that does not parse: truncated, unknown type, bad varint [``MsgDecode``]."""


class SpqrVersionError(SpqrError, DowngradeError):
    """A message of a protocol version this state may not speak [``MinimumVersion``,
    ``VersionMismatch``]: no SPQR where it is required, or a version above V1."""


class EpochOutOfRangeError(SpqrError, InvalidMessageError):
    """A message from an epoch this side has not reached, or one too old to hold keys for
    [``EpochOutOfRange``]."""

    def __init__(self, epoch: int | None, detail: str) -> None:
        super().__init__(f"SPQR epoch {epoch} is out of range: {detail}" if epoch is not None else detail)
        self.epoch = epoch


class InconsistentChunkError(SpqrError, InvalidMessageError):
    """A chunk that contradicts a chunk of the same index received earlier (a check of this
    implementation; the crate silently keeps the first)."""


class SpqrAuthenticationError(SpqrError, InvalidMessageError):
    """A reassembled header or ciphertext whose MAC does not verify [``MacVerifyFailed``]."""


class EncapsulationKeyMismatchError(SpqrError, InvalidMessageError):
    """A reassembled encapsulation-key vector that does not match the authenticated header
    [``ErroneousDataReceived``]."""


class SpqrReplayError(SpqrError, DuplicateMessageError):
    """A message whose SPQR key was already handed out [``KeyAlreadyRequested``]."""


class SpqrKeyTrimmedError(SpqrError, InvalidMessageError):
    """A message so far behind the receiving chain that its key was discarded [``KeyTrimmed``]."""


class SpqrKeyJumpError(SpqrError, TooManySkippedMessagesError):
    """A message so far ahead of the receiving chain that reaching it needs more than the jump
    limit of keys [``KeyJump``]."""


class SpqrStateFormatError(SpqrError, StateFormatError):
    """A serialized SPQR state whose format, version or content is not understood
    [``StateDecode``]."""
