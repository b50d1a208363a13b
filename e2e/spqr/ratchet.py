"""SPQR behind the session's post-quantum ratchet seam (:mod:`e2e.pq_ratchet`).

What this module owns
---------------------
:class:`SpqrRatchet`, the mutable handle a v4 :class:`~e2e.ratchet.RatchetState` holds, and
:class:`SpqrRatchetFactory`, which :class:`~e2e.session.SessionRecord` is given to start and load
them.  They implement the protocols :class:`~e2e.pq_ratchet.PostQuantumRatchet` and
:class:`~e2e.pq_ratchet.PostQuantumRatchetFactory` on top of the immutable
:class:`~e2e.spqr.SpqrState`: the handle holds one state and replaces it on each
:meth:`~SpqrRatchet.send` and successful :meth:`~SpqrRatchet.recv`; :meth:`~SpqrRatchet.copy`
is free, because the states are immutable.

The factory starts each state as libsignal does: ``auth_key`` is PQXDH's third key, the
direction ``A2B`` for the initiator and ``B2A`` for the responder, ``min_version = V1`` (no
session without SPQR) and the chain limits libsignal passes (``MAX_FORWARD_JUMPS`` 25,000,
``MAX_MESSAGE_KEYS`` 2,000).

What it does not know
---------------------
Double Ratchet keys, MACs and the order of checks: :mod:`e2e.ratchet` runs :meth:`recv` on a
copy and keeps the copy only when the message authenticates.
"""

from __future__ import annotations

from e2e.keys import Rng
from e2e.pq_ratchet import Direction as SeamDirection
from e2e.spqr.chain import ChainParams, Direction
from e2e.spqr.message import describe
from e2e.spqr.state import SpqrState, Version, initial_state

__all__ = ["SpqrRatchet", "SpqrRatchetFactory"]


class SpqrRatchet:
    """One session's SPQR state as a :class:`~e2e.pq_ratchet.PostQuantumRatchet`."""

    __slots__ = ("state",)

    def __init__(self, state: SpqrState) -> None:
        self.state = state

    def send(self, rng: Rng) -> tuple[bytes, bytes | None]:
        """Field 5 of the next message and its SPQR key; the state moves on."""
        self.state, message, key = self.state.send(rng)
        return message, key

    def recv(self, message: bytes) -> bytes | None:
        """The SPQR key of a received field 5; the state moves on only if this returns."""
        self.state, key = self.state.recv(message)
        return key

    def copy(self) -> SpqrRatchet:
        return SpqrRatchet(self.state)

    def serialize(self) -> bytes:
        return self.state.serialize()

    def explain(self) -> dict[str, str | int]:
        """Public facts about the state for explain mode: its epoch and braid state."""
        return {"spqr_epoch": self.state.epoch, "spqr_state": self.state.braid_state_name}

    def describe(self, message: bytes) -> dict[str, str | int]:
        """Public facts about one ``pq_ratchet`` field, for explain mode (see ``message.describe``)."""
        return describe(message)

    def __repr__(self) -> str:
        return f"SpqrRatchet({self.state!r})"


class SpqrRatchetFactory:
    """Starts and loads :class:`SpqrRatchet` states (a :class:`~e2e.pq_ratchet.PostQuantumRatchetFactory`)."""

    __slots__ = ("min_version", "params")

    def __init__(self, min_version: Version = Version.V1, params: ChainParams | None = None) -> None:
        self.min_version = min_version
        self.params = params or ChainParams()

    def initial(self, auth_key: bytes, direction: SeamDirection) -> SpqrRatchet:
        """A new session's state from PQXDH's ``pq_ratchet_key`` and the side."""
        return SpqrRatchet(initial_state(auth_key, Direction[direction.name], self.min_version, self.params))

    def load(self, data: bytes) -> SpqrRatchet:
        """A stored state; raises :class:`~e2e.spqr.errors.SpqrStateFormatError` (a
        :class:`~e2e.errors.StateFormatError`) for bytes it does not understand."""
        return SpqrRatchet(SpqrState.deserialize(data))

    def __repr__(self) -> str:
        return f"SpqrRatchetFactory(min_version=V{int(self.min_version)})"
