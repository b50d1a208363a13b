"""A network that reorders: the demo's way to make messages really arrive out of order.

What this module owns
---------------------
:class:`Reorder`, a switch the demo flips to say "hold back the next message pushed to this
device until two later ones have been delivered", and :class:`ReorderingClient`, a
:class:`client.client.Client` whose connection delivers the relay's pushes through that switch,
one message at a time.

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

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from client import transport
from client.client import Client, Hooks

__all__ = ["Reorder", "ReorderingClient"]


class Reorder:
    """The demo's control over delivery to one client.

    ``hold_next(count, release_after)`` holds the next ``count`` messages until ``release_after``
    later ones were delivered.  Deliveries are also paced, one message at a time: the next push is
    handed over only once the client has committed the previous one, so each message is decrypted
    on its own and the demo can tell which protocol steps belong to which message.
    """

    def __init__(self) -> None:
        self.hold = 0
        self.release_after = 0
        self.held_back: list[str] = []
        """Client message ids that were delivered late, in the order they were held."""
        self._committed: dict[str, asyncio.Event] = {}

    def hold_next(self, count: int = 1, release_after: int = 2) -> None:
        """Hold the next ``count`` messages until ``release_after`` later ones were delivered."""
        self.hold = count
        self.release_after = release_after

    def committed(self, client_id: str) -> None:
        """The client committed message ``client_id``: the next one may be delivered."""
        self._committed.setdefault(client_id, asyncio.Event()).set()

    async def wait_committed(self, client_id: str) -> None:
        await self._committed.setdefault(client_id, asyncio.Event()).wait()
        del self._committed[client_id]


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
            if not isinstance(push, transport.IncomingMessage):
                yield push
                continue
            if reorder.hold > 0:
                reorder.hold -= 1
                reorder.held_back.append(push.client_id)
                held.append(push)
                continue
            yield push
            await reorder.wait_committed(push.client_id)
            if held:
                overtaken += 1
                if overtaken >= reorder.release_after:
                    for late in held:
                        yield late
                        await reorder.wait_committed(late.client_id)
                    held.clear()
                    overtaken = 0


class ReorderingClient(Client):
    """A client whose incoming messages pass through :attr:`reorder`."""

    def __init__(self, *args: Any, hooks: Hooks | None = None, **kwargs: Any) -> None:
        self.reorder = Reorder()
        hooks = hooks if hooks is not None else Hooks()
        application_hook = hooks.after_receive_commit

        def after_receive_commit(sender: str, client_id: str) -> None:
            if application_hook is not None:
                application_hook(sender, client_id)
            self.reorder.committed(client_id)

        super().__init__(
            *args,
            hooks=Hooks(after_receive_commit=after_receive_commit, after_send_commit=hooks.after_send_commit),
            **kwargs,
        )

    async def _connect(self) -> transport.Connection:
        connection = await super()._connect()
        return _ReorderingConnection(connection, self.reorder)  # type: ignore[return-value]
