"""A network that reorders: the demo's way to make messages really arrive out of order.

What this module owns
---------------------
:class:`Reorder`, a switch the demo flips to say "hold back the next message pushed to this
device until two later ones have been delivered", and :class:`ReorderingClient`, a
:class:`client.client.Client` whose connection delivers the relay's pushes through that switch.

Why it exists
-------------
The relay pushes each queue strictly in order, so on one connection messages never overtake each
other.  Real networks (several devices, retries, a relay cluster) do reorder, and the Double
Ratchet is built for it: the receiver stores the message keys of skipped messages (MKSKIPPED) and
uses them when the late message turns up.  To show that for real, the demo holds a pushed
ciphertext in the receiving client's connection and hands it to the client after the later ones.
Nothing is decrypted, rewritten or acknowledged here: the client sees ordinary pushes, decrypts
and acknowledges each one itself, and the held message stays in the relay's database until its
own acknowledgement, as any unacknowledged message does.

Invariants
----------
* Every push is delivered at most once per connection and none is invented: held pushes are
  released right after the requested number of later messages.  If the connection ends first, the
  held ones were never acknowledged, so the relay pushes them again on the next connection.
* With the switch off, pushes pass through untouched and in order.

What it does not know
---------------------
The relay protocol's frames or the client's state: it wraps
:meth:`client.transport.Connection.pushes` and nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from client import transport
from client.client import Client

__all__ = ["Reorder", "ReorderingClient"]


class Reorder:
    """How many of the next pushed messages to hold back, and after how many later ones to release them."""

    def __init__(self) -> None:
        self.hold = 0
        self.release_after = 0
        self.held_back: list[str] = []
        """Client message ids that were delivered late, in the order they were held."""

    def hold_next(self, count: int = 1, release_after: int = 2) -> None:
        """Hold the next ``count`` messages until ``release_after`` later ones were delivered."""
        self.hold = count
        self.release_after = release_after


class _ReorderingConnection:
    """A :class:`client.transport.Connection` whose pushes pass through a :class:`Reorder`."""

    def __init__(self, connection: transport.Connection, reorder: Reorder) -> None:
        self._connection = connection
        self._reorder = reorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def pushes(self) -> AsyncIterator[transport.Push]:
        reorder = self._reorder
        held: list[transport.IncomingMessage] = []
        overtaken = 0
        async for push in self._connection.pushes():
            if isinstance(push, transport.IncomingMessage):
                if reorder.hold > 0:
                    reorder.hold -= 1
                    reorder.held_back.append(push.client_id)
                    held.append(push)
                    continue
                yield push
                if held:
                    overtaken += 1
                    if overtaken >= reorder.release_after:
                        for late in held:
                            yield late
                        held.clear()
                        overtaken = 0
                continue
            yield push


class ReorderingClient(Client):
    """A client whose incoming messages can be held back by :attr:`reorder`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reorder = Reorder()

    async def _connect(self) -> transport.Connection:
        connection = await super()._connect()
        return _ReorderingConnection(connection, self.reorder)  # type: ignore[return-value]
