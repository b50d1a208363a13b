"""What a running client reports to its application.

What this module owns
---------------------
The event types yielded by :meth:`client.Client.events`:

* :class:`Message`: a decrypted message, already committed to the local history;
* :class:`Undecryptable`: a ciphertext that could not be decrypted (malformed, forged, no session),
  kept in the store's quarantine; the session with its sender is untouched;
* :class:`SendFailed`: the relay refused one of our messages for good (unknown recipient, too
  large);
* :class:`client.errors.IdentityChanged` (an exception type that is also an event): a contact's
  identity key changed; its messages wait until the user accepts the new key.

Invariants
----------
An event is emitted only after the change it reports is committed to the local store, so an
application that lost an event in a crash finds the same facts in ``Client.history`` and
``Client.quarantined``.  ``repr`` of a :class:`Message` does not show its body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from client.errors import IdentityChanged

__all__ = [
    "Message",
    "Undecryptable",
    "SendFailed",
    "GroupMessage",
    "MembershipChanged",
    "GroupRefused",
    "Event",
    "IdentityChanged",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One decrypted message.

    ``message_id`` is the sender's id for it (unique per sender device; the key duplicates are
    removed by), ``timestamp`` the sender's clock when it was written (milliseconds since the epoch,
    authenticated with the message), ``relay_timestamp`` when the relay accepted it.
    """

    sender: str
    sender_device: int
    message_id: str
    timestamp: int
    relay_timestamp: int
    body: bytes = field(repr=False)
    content_type: int = 0
    """The envelope's content type: 0 text, 1 an attachment pointer (``Client.attachment`` reads it)."""
    to: str | None = None
    """Set on a message one of our own other devices sent (``sender`` is then our own account):
    the contact it went to (client/fanout.py)."""

    @property
    def is_attachment(self) -> bool:
        return self.content_type == 1

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (replacing what does not decode)."""
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Undecryptable:
    """A message from ``sender`` that was refused; ``error`` names the typed error that refused it."""

    sender: str
    sender_device: int
    message_id: str
    error: str


@dataclass(frozen=True, slots=True)
class SendFailed:
    """The relay refused a message for good (``error`` is its error code, e.g. ``"too_large"``).

    The message stays in the history; it left the outbox because sending it again cannot succeed.
    """

    recipient: str
    recipient_device: int
    message_id: str
    error: str


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """One decrypted group message (committed to the group's history); ``group_id`` is 16 bytes."""

    group_id: bytes
    sender: str
    sender_device: int
    message_id: str
    timestamp: int
    relay_timestamp: int
    body: bytes = field(repr=False)
    content_type: int = 0
    """0 for text, 1 for an attachment pointer (:meth:`client.Client.attachment` decodes it)."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def is_attachment(self) -> bool:
        return self.content_type == 1


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """A verified membership change was adopted: the group's new ``epoch`` and member names.

    ``by`` is the member whose identity key signed it; ``we_left`` is set when we are no longer in it.
    """

    group_id: bytes
    epoch: int
    members: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    by: str | None
    we_left: bool = False


@dataclass(frozen=True, slots=True)
class GroupRefused:
    """Something a group's traffic carried was refused and recorded (``Client.group_refusals``).

    ``what`` says what it was (``"membership change"``, ``"group message"``, ``"sender key"``,
    ``"retry request"``), ``error`` the typed error that refused it; nothing was changed.
    """

    group_id: bytes
    sender: str
    sender_device: int
    what: str
    error: str


Event = (
    Message | Undecryptable | SendFailed | IdentityChanged | GroupMessage | MembershipChanged | GroupRefused
)
"""Everything :meth:`client.Client.events` yields."""
