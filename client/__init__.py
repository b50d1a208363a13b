"""The asyncio client library: a device's local state, its relay connection, and its conversations.

What this package owns
----------------------
* :mod:`client.client`: :class:`~client.client.Client`, the one object an application uses.
* :mod:`client.store`: the device's own SQLite file (keys, sessions, contacts, history, outbox).
* :mod:`client.transport`: the relay protocol's client half (framing, authentication, requests).
* :mod:`client.prekeys` and :mod:`client.settings`: the device's prekeys (published, topped up,
  rotated) and the client's tunable numbers.
* :mod:`client.envelope`, :mod:`client.events`, :mod:`client.errors`, :mod:`client.backoff`: the
  plaintext format inside each message, what the client reports, how it fails, how it reconnects.
* :mod:`client.inert` and :mod:`client.names`: text from the network made safe to print, and the
  relay's rules for names and URLs applied before anything is created.
* :mod:`client.pointer`, :mod:`client.attachments`, :mod:`client.blobs`: files — the attachment
  pointer, encrypt-while-uploading and verify-before-saving, and the blob service's HTTP client.
* :mod:`client.groups`, :mod:`client.group_store`: group conversations — signed membership,
  Sender Keys over the pairwise sessions, rotation, retry receipts — and their local tables.
* :mod:`client.structured`, :mod:`client.business`, :mod:`client.bot`, :mod:`client.directory`:
  businesses — quick replies, a customer's view of verified names, the bot library (``e2e-bot``,
  example services in :mod:`client.examples`) and the directory's command (``e2e-directory``).

The protocol itself lives in :mod:`e2e`; this package is where it meets files, sockets and clocks.
See ``docs/client.md``.
"""

from client.client import Client, Hooks
from client.errors import (
    ClientError,
    ClosedError,
    IdentityChanged,
    InvalidInputError,
    InvalidNameError,
    InvalidRelayURLError,
    MessageTooLargeError,
    NotRegisteredError,
    TextEncodingError,
)
from client.events import (
    Event,
    GroupMessage,
    GroupRefused,
    MembershipChanged,
    Message,
    SendFailed,
    Undecryptable,
)
from client.groups import GroupError
from client.settings import Settings

__all__ = [
    "Client",
    "Settings",
    "Hooks",
    "Event",
    "Message",
    "Undecryptable",
    "SendFailed",
    "IdentityChanged",
    "GroupMessage",
    "MembershipChanged",
    "GroupRefused",
    "GroupError",
    "ClientError",
    "ClosedError",
    "NotRegisteredError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRelayURLError",
    "TextEncodingError",
    "MessageTooLargeError",
]
