"""The seam between the Double Ratchet and a post-quantum ratchet (SPQR): what a v4 session expects.

What this module owns
---------------------
Two protocols and an enum, no implementation:

* :class:`PostQuantumRatchet` — one session's post-quantum ratchet state, sans-I/O, shaped after
  the Rust crate ``spqr`` that libsignal uses (``spqr::send`` / ``spqr::recv``):
  :meth:`~PostQuantumRatchet.send` gives the bytes for field 5 (``pq_ratchet``) of the next
  SignalMessage and the 32-byte key for that message, or ``None`` when it has none yet;
  :meth:`~PostQuantumRatchet.recv` takes a received field 5 and gives the key for that message
  (or ``None``).  :meth:`~PostQuantumRatchet.copy` and :meth:`~PostQuantumRatchet.serialize`
  let the session commit only on success and store the state.
* :class:`PostQuantumRatchetFactory` — how sessions make one: :meth:`~PostQuantumRatchetFactory.
  initial` from PQXDH's third key (``pq_ratchet_key``, SPQR's ``auth_key``) and the
  :class:`Direction`, and :meth:`~PostQuantumRatchetFactory.load` from stored bytes.
* :class:`Direction` — ``A2B`` for the session's initiator (Alice), ``B2A`` for the responder.

How a v4 state uses it (:mod:`e2e.ratchet`; libsignal ``triple_ratchet.rs``)
----------------------------------------------------------------------------
Sending: ``(pq_message, pq_key) = pq.send(rng)``; the message keys are
``HKDF(salt = pq_key, HMAC(CKs, 0x01), "WhisperMessageKeys", 80)``
(:func:`e2e.kdf.derive_message_keys`); ``pq_message`` goes into field 5 under the MAC.
Receiving: on a copy, ``pq_key = copy.recv(field 5)``; the message keys are derived the same way
from the receiving chain's seed; the MAC is checked; only then does the copy replace the state.
A ratchet that raises from :meth:`~PostQuantumRatchet.recv` makes the message
:class:`~e2e.errors.InvalidMessageError` and changes nothing.

A v4 state without a post-quantum ratchet (no factory given) sends an empty field 5 and derives
its keys without salt, which is version 4 as libsignal spoke it before SPQR; libsignal 0.103
requires SPQR and refuses such messages, so interoperating with it needs an implementation of
these protocols (the sub-package ``e2e.spqr``).

What it does not know
---------------------
Anything of SPQR's internals (epochs, chunks, the ML-KEM braid): those are the implementation's.
An implementation that also implements :class:`ExplainedPostQuantumRatchet` lets explain mode show
them: the ``ratchet.pq_key`` events then carry what :meth:`~ExplainedPostQuantumRatchet.describe`
says of the field 5 bytes and what :meth:`~ExplainedPostQuantumRatchet.explain` says of the state,
and a ``ratchet.pq_epoch`` event marks each change of the state's epoch.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from e2e.keys import Rng

__all__ = ["Direction", "PostQuantumRatchet", "PostQuantumRatchetFactory", "ExplainedPostQuantumRatchet"]


class Direction(enum.Enum):
    """Which side of the session a post-quantum ratchet state is (``spqr::Direction``)."""

    A2B = "A2B"
    """The initiator's state (Alice, who processed the bundle)."""
    B2A = "B2A"
    """The responder's state (Bob, who received the first PreKeySignalMessage)."""


class PostQuantumRatchet(Protocol):
    """One session's post-quantum ratchet state (see the module docstring)."""

    def send(self, rng: Rng) -> tuple[bytes, bytes | None]:
        """Advance for one outgoing message: its field 5 bytes and its 32-byte key (or ``None``)."""
        ...

    def recv(self, message: bytes) -> bytes | None:
        """Advance for one incoming message's field 5: its 32-byte key (or ``None``).

        Raises an :class:`~e2e.errors.E2EError` for a field that is malformed, replayed or
        inconsistent; the caller runs it on a :meth:`copy`.
        """
        ...

    def copy(self) -> PostQuantumRatchet:
        """An independent copy, for trying a message without committing."""
        ...

    def serialize(self) -> bytes:
        """The state as versioned bytes, for :meth:`PostQuantumRatchetFactory.load`."""
        ...


class PostQuantumRatchetFactory(Protocol):
    """Makes :class:`PostQuantumRatchet` states for new and stored sessions."""

    def initial(self, auth_key: bytes, direction: Direction) -> PostQuantumRatchet:
        """The state of a new session from PQXDH's ``pq_ratchet_key`` (SPQR's ``auth_key``)."""
        ...

    def load(self, data: bytes) -> PostQuantumRatchet:
        """A stored state; bytes it does not understand raise :class:`~e2e.errors.StateFormatError`."""
        ...


@runtime_checkable
class ExplainedPostQuantumRatchet(Protocol):
    """A :class:`PostQuantumRatchet` that can say, in public facts, what it does (explain mode).

    Both methods return only values an eavesdropper could see (epochs, indices, message types,
    chunk numbers, state names), never key material, and never raise.
    """

    def explain(self) -> dict[str, str | int]:
        """Public facts about the state; ``"spqr_epoch"`` (an int) is its current epoch."""
        ...

    def describe(self, message: bytes) -> dict[str, str | int]:
        """Public facts about one field 5 (``pq_ratchet``), sent or received."""
        ...
