"""The relay: a WebSocket store-and-forward server for opaque ciphertext.

What this package owns
----------------------
* :mod:`server.protocol` — the wire vocabulary: frames, validation, error and close codes, the
  possession-proof transcript (specified in ``docs/relay-protocol.md``).
* :mod:`server.relay` — :class:`~server.relay.Relay`: connections, authentication, the prekey
  directory, message queues, delivery and limits.
* :mod:`server.store` — the storage and wake-up interface the relay is written against, and
  :mod:`server.sqlite_store` — its SQLite backend with group commits.
* :mod:`server.limits` — every bound the relay enforces.
* :mod:`server.cli` — the ``e2e-relay`` command (also ``python -m server``).

What it does not know
---------------------
Any secret of a client, and anything inside a message: it imports from the protocol core only
:class:`e2e.keys.PublicKey`, to check signatures.
"""

from server.limits import Limits
from server.relay import Relay
from server.sqlite_store import SQLiteStore
from server.store import Store

__all__ = ["Limits", "Relay", "SQLiteStore", "Store"]
