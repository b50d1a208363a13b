"""The braid's authenticator: a MAC key that every epoch's shared secret ratchets forward.

What this module owns
---------------------
:class:`Authenticator`, the pair (``root_key``, ``mac_key``) of the ML-KEM Braid
(specification §"Authentication"; Signal's ``spqr`` crate, ``authenticator.rs``), and the two
MACs it makes: one over each epoch's encapsulation-key **header**, one over each epoch's
**ciphertext** ``c1 ‖ c2``.  All sizes are 32 bytes.

* Start: both keys zero, then ``update(1, auth_key)`` where ``auth_key`` is the secret the session
  handshake produced for SPQR (PQXDH's third 32-byte output in libsignal).
* ``update(epoch, k)``: ``root_key ‖ mac_key = HKDF-SHA256(salt = 0³², ikm = root_key ‖ k,
  info = "Signal_PQCKA_V1_MLKEM768:Authenticator Update" ‖ BE64(epoch), 64 bytes)``.  Each side
  runs it with the epoch's KEM secret as soon as it knows it: the encapsulating side right after
  ``encaps1``, the decapsulating side after ``decaps``.
* ``mac_hdr(epoch, header)`` = HMAC-SHA256(mac_key, ``"Signal_PQCKA_V1_MLKEM768:ekheader"`` ‖
  BE64(epoch) ‖ header); ``mac_ct(epoch, ct)`` the same with ``":ciphertext"``.

Why it is there
---------------
The header MAC ties epoch ``e``'s new key to every secret before it, so an attacker who does not
hold the previous epoch's secret (or, in epoch 1, the handshake's) cannot substitute a key of
their own; the ciphertext MAC, made under the key that already includes epoch ``e``'s secret,
proves to the decapsulating side that the encapsulator derived the same secret.  Verification is
constant time (:func:`hmac.compare_digest`) and raises; it never returns a flag.

What it does not know
---------------------
Chunks, states or the message-key chain (:mod:`e2e.spqr.chain`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Final

from e2e.kdf import hkdf
from e2e.spqr.errors import SpqrAuthenticationError

__all__ = ["MAC_SIZE", "Authenticator"]

MAC_SIZE: Final = 32
_ZERO_SALT: Final = bytes(32)
_UPDATE_INFO: Final = b"Signal_PQCKA_V1_MLKEM768:Authenticator Update"
_HEADER_LABEL: Final = b"Signal_PQCKA_V1_MLKEM768:ekheader"
_CIPHERTEXT_LABEL: Final = b"Signal_PQCKA_V1_MLKEM768:ciphertext"


@dataclass(frozen=True, slots=True)
class Authenticator:
    """``root_key`` and ``mac_key``; immutable, :meth:`update` returns a new one."""

    root_key: bytes
    mac_key: bytes

    @classmethod
    def new(cls, auth_key: bytes, epoch: int = 1) -> Authenticator:
        """The authenticator of a fresh state: zero keys updated with ``auth_key``."""
        return cls(bytes(32), bytes(32)).update(epoch, auth_key)

    def update(self, epoch: int, key: bytes) -> Authenticator:
        """Mix ``key`` (the handshake's ``auth_key`` or an epoch's secret) into both keys."""
        out = hkdf(_ZERO_SALT, self.root_key + key, _UPDATE_INFO + epoch.to_bytes(8, "big"), 64)
        return Authenticator(out[:32], out[32:])

    def mac_hdr(self, epoch: int, header: bytes) -> bytes:
        """The MAC of epoch ``epoch``'s encapsulation-key header."""
        data = _HEADER_LABEL + epoch.to_bytes(8, "big") + header
        return hmac.digest(self.mac_key, data, "sha256")

    def mac_ct(self, epoch: int, ciphertext: bytes) -> bytes:
        """The MAC of epoch ``epoch``'s ciphertext ``c1 ‖ c2``."""
        data = _CIPHERTEXT_LABEL + epoch.to_bytes(8, "big") + ciphertext
        return hmac.digest(self.mac_key, data, "sha256")

    def verify_hdr(self, epoch: int, header: bytes, mac: bytes) -> None:
        """Raise :class:`~e2e.spqr.errors.SpqrAuthenticationError` unless ``mac`` is the header's."""
        if not hmac.compare_digest(self.mac_hdr(epoch, header), mac):
            raise SpqrAuthenticationError(f"the encapsulation-key header MAC of epoch {epoch} is invalid")

    def verify_ct(self, epoch: int, ciphertext: bytes, mac: bytes) -> None:
        """Raise :class:`~e2e.spqr.errors.SpqrAuthenticationError` unless ``mac`` is the ciphertext's."""
        if not hmac.compare_digest(self.mac_ct(epoch, ciphertext), mac):
            raise SpqrAuthenticationError(f"the ciphertext MAC of epoch {epoch} is invalid")

    def __repr__(self) -> str:
        return "Authenticator(<redacted>)"
