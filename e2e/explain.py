"""Structured events that describe each protocol step as it happens ("explain mode").

What this module owns
---------------------
The :class:`Event` type and the :data:`Trace` callback type.  Functions of the core that perform a
protocol step accept an optional ``trace`` argument; when one is given they call it with an
:class:`Event` after each step (the four X3DH Diffie-Hellman results, each KDF, each ratchet step,
skipped keys stored and used, the MAC check).  Front ends (the demo's ``--explain``, the chat
client's ``/explain``) turn events into text; tests assert on them.

Invariants
----------
* The core never prints.  Emitting an event is the only way it reports what it does.
* ``Event.public`` holds only values an eavesdropper could see or that are harmless (public keys as
  hex, counters, sizes, names).  Secret values (DH outputs, root, chain and message keys) go into
  ``Event.secret`` as raw bytes; a front end shows them only as :func:`fingerprint` digests unless
  its user explicitly asked to see private values.
* Tracing changes nothing: with or without a trace the same bytes come out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Event", "Trace", "fingerprint", "emit"]


@dataclass(frozen=True, slots=True)
class Event:
    """One protocol step: ``step`` names it (``"x3dh.dh"``, ``"ratchet.dh_step"``, …)."""

    step: str
    public: Mapping[str, str | int | bool] = field(default_factory=dict)
    secret: Mapping[str, bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        hidden = {name: fingerprint(value) for name, value in self.secret.items()}
        return f"Event(step={self.step!r}, public={dict(self.public)!r}, secret={hidden!r})"


Trace = Callable[[Event], None]
"""A callback that receives the events of one operation."""


def fingerprint(value: bytes, length: int = 8) -> str:
    """A short digest of a secret value: enough to compare two sides, useless to an attacker."""
    return "#" + hashlib.sha256(value).hexdigest()[:length]


def emit(
    trace: Trace | None,
    step: str,
    public: Mapping[str, str | int | bool] | None = None,
    secret: Mapping[str, bytes] | None = None,
) -> None:
    """Send one event to ``trace`` if there is one; a no-op otherwise."""
    if trace is not None:
        trace(Event(step, dict(public or {}), dict(secret or {})))
