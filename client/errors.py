"""The exceptions of the client library.

What this module owns
---------------------
:class:`ClientError`, the root of every failure the client library itself reports (the protocol
core's own failures keep their :mod:`e2e.errors` types, and the relay connection's keep the transport's
types), and :class:`IdentityChanged`, which is both an exception (raised when we are about to start a
session with a contact whose identity key is not the one we trusted) and an event (delivered by
:meth:`client.Client.events` when a message arrives from such a contact).

Invariants
----------
An error never carries a private key or a plaintext; identity keys are public and appear only as
short fingerprints in messages.
"""

from __future__ import annotations

from e2e.errors import UntrustedIdentityError
from e2e.keys import PublicKey

__all__ = [
    "ClientError",
    "NotRegisteredError",
    "AlreadyExistsError",
    "IdentityChanged",
    "ClosedError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRelayURLError",
    "TextEncodingError",
    "MessageTooLargeError",
]


class ClientError(Exception):
    """The base of every error raised by the client library itself."""


class NotRegisteredError(ClientError):
    """The store holds no account yet, or the relay has not accepted the account's registration."""


class AlreadyExistsError(ClientError):
    """``Client.create`` on a store file that already belongs to an account."""


class ClosedError(ClientError):
    """An operation on a client that was closed, or whose connection loop stopped on an error."""


class IdentityChanged(ClientError, UntrustedIdentityError):
    """A known contact's device now presents a different identity key.

    Nothing is sent to it and nothing received from it is shown until the user calls
    :meth:`client.Client.accept_identity` (after checking the new safety number).  Messages that
    arrive meanwhile are kept, undecrypted, in the local store and processed on acceptance.
    """

    def __init__(self, name: str, device_id: int, trusted_key: PublicKey, new_key: PublicKey) -> None:
        super().__init__(
            f"the identity key of {name}/{device_id} changed from {trusted_key.fingerprint()} "
            f"to {new_key.fingerprint()}; verify the new safety number, then accept it"
        )
        self.name = name
        self.device_id = device_id
        self.trusted_key = trusted_key
        self.new_key = new_key


class InvalidInputError(ClientError, ValueError):
    """Input the client refuses before it creates, encrypts or stores anything (nothing changed)."""


class InvalidNameError(InvalidInputError):
    """An account name the relay would refuse (docs/relay-protocol.md: 1 to 64 characters of
    ``a-z 0-9 . _ @ + -``, starting with a letter or a digit)."""


class InvalidRelayURLError(InvalidInputError):
    """A relay URL that is not ``ws://HOST[:PORT][/PATH]`` or ``wss://...``."""


class TextEncodingError(InvalidInputError):
    """Message text that is not Unicode text UTF-8 can carry (a lone surrogate, e.g. from pasted
    bytes that were not UTF-8); ``position`` is the index of the first such character."""

    def __init__(self, position: int) -> None:
        super().__init__(
            f"the text holds a character that is not valid Unicode text at position {position} "
            "(pasted bytes that were not UTF-8?)"
        )
        self.position = position


class MessageTooLargeError(InvalidInputError):
    """A message body larger than the largest one the relay accepts once encrypted."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the message is {size:,} bytes; the largest the relay accepts is {limit:,} bytes")
        self.size = size
        self.limit = limit
