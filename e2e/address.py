"""Protocol addresses: which remote device a session (or, with groups, a sender key) belongs to.

What this module owns
---------------------
:class:`ProtocolAddress`, libsignal's ``ProtocolAddress``: an account name and a device id.  It is
the key of every per-device store in :mod:`e2e.stores` (sessions, trusted identities); a
sender-key store names its entries by the sender's name and device id with a distribution id
(:class:`e2e.group_cipher.SenderKeyName`).  The address is frozen, hashable and ordered, so it
serves in a tuple key as well as alone.

Invariants
----------
* The name is a non-empty ``str`` (the relay's account name; its syntax is the relay's business,
  not the protocol's); the device id an unsigned 32-bit integer, as libsignal encodes it.
* ``str(address)`` is libsignal's ``name.device_id`` form, for logs and messages.

What it does not know
---------------------
How names are looked up or which devices an account has: that is the relay's and the client's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ProtocolAddress"]

_UINT32_MAX: Final = 0xFFFF_FFFF


@dataclass(frozen=True, slots=True, order=True)
class ProtocolAddress:
    """One remote device: its account ``name`` and its ``device_id`` (libsignal's ``ProtocolAddress``)."""

    name: str
    device_id: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("an address's name is a non-empty str")
        if (
            not isinstance(self.device_id, int)
            or isinstance(self.device_id, bool)
            or not 0 <= self.device_id <= _UINT32_MAX
        ):
            raise ValueError("a device id is an integer between 0 and 2**32 - 1")

    def __str__(self) -> str:
        return f"{self.name}.{self.device_id}"
