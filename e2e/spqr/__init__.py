"""SPQR, the Sparse Post-Quantum Ratchet (version V1), byte-compatible with Signal's ``spqr`` crate.

What this package owns
----------------------
The third ratchet of Signal's Triple Ratchet: alongside the Double Ratchet, each side runs an
SPQR state that, a 32-byte chunk per message, agrees on a fresh ML-KEM-768 secret every epoch
(the *ML-KEM Braid*) and turns those secrets into one key per message (the *chain*).  The key is
mixed into the Double Ratchet's message key (:func:`message_keys`), so a message stays secret
against an attacker who can break X25519, as long as one epoch's KEM exchange since the
compromise was unobserved or unbroken.  The serialized SPQR message travels in field 5
(``pq_ratchet``) of every v4 SignalMessage.

The concept splits into one module per part, each with its own theory:

* :mod:`e2e.spqr.gf16` — the field GF(2¹⁶);
* :mod:`e2e.spqr.erasure` — 32-byte chunks, any sufficient subset rebuilds a value;
* :mod:`e2e.spqr.mlkem768` — incremental ML-KEM-768 (header / vector, ``encaps1`` / ``encaps2``);
* :mod:`e2e.spqr.authenticator` — the braid's MACs over headers and ciphertexts;
* :mod:`e2e.spqr.braid` — the state machine of an epoch;
* :mod:`e2e.spqr.chain` — per-epoch, per-direction message-key chains with their limits;
* :mod:`e2e.spqr.message` — the ``pq_ratchet`` wire format;
* :mod:`e2e.spqr.state` — version negotiation, ``send`` / ``recv``, the storage format;
* :mod:`e2e.spqr.ratchet` — the handle and factory a v4 session uses (:mod:`e2e.pq_ratchet`);
* :mod:`e2e.spqr.errors` — the typed errors.

Use
---
::

    alice = initial_state(auth_key, Direction.A2B)     # the session initiator
    bob = initial_state(auth_key, Direction.B2A)
    alice, pq_ratchet, key = alice.send(os.urandom)    # field 5 and the SPQR key
    bob, key_again = bob.recv(pq_ratchet)              # key_again == key

States are immutable; keep the returned one only when the enclosing message authenticated.
A v4 session takes ``SessionRecord(pq_ratchet_factory=SpqrRatchetFactory())``, which does that.

What it does not know
---------------------
Double Ratchet state, SignalMessage framing, PQXDH (which supplies ``auth_key``), storage.
"""

from __future__ import annotations

from typing import Final

from e2e.kdf import hkdf
from e2e.spqr.chain import ChainParams, Direction
from e2e.spqr.errors import (
    EncapsulationKeyMismatchError,
    EpochOutOfRangeError,
    InconsistentChunkError,
    MalformedSpqrMessageError,
    SpqrAuthenticationError,
    SpqrError,
    SpqrKeyJumpError,
    SpqrKeyTrimmedError,
    SpqrReplayError,
    SpqrStateFormatError,
    SpqrVersionError,
)
from e2e.spqr.ratchet import SpqrRatchet, SpqrRatchetFactory
from e2e.spqr.state import SpqrState, Version, initial_state

__all__ = [
    "Direction",
    "Version",
    "ChainParams",
    "SpqrState",
    "initial_state",
    "message_keys",
    "MESSAGE_KEYS_INFO",
    "SpqrRatchet",
    "SpqrRatchetFactory",
    "SpqrError",
    "MalformedSpqrMessageError",
    "SpqrVersionError",
    "EpochOutOfRangeError",
    "InconsistentChunkError",
    "SpqrAuthenticationError",
    "EncapsulationKeyMismatchError",
    "SpqrReplayError",
    "SpqrKeyTrimmedError",
    "SpqrKeyJumpError",
    "SpqrStateFormatError",
]

MESSAGE_KEYS_INFO: Final = b"WhisperMessageKeys"
"""The HKDF info of the Double Ratchet's message keys (libsignal ``MessageKeys::derive_keys``)."""


def message_keys(seed: bytes, spqr_key: bytes | None) -> tuple[bytes, bytes, bytes]:
    """``(cipher key, MAC key, IV)`` of one v4 message: the Triple Ratchet's combination.

    ``seed`` is the Double Ratchet message-key seed, ``HMAC-SHA256(CKs, 0x01)``; ``spqr_key`` the
    key :meth:`SpqrState.send` / :meth:`SpqrState.recv` returned for the same message.
    libsignal computes ``HKDF-SHA256(salt = spqr_key, ikm = seed, info = "WhisperMessageKeys",
    80)`` and splits it 32 / 32 / 16; with no SPQR key the salt is empty, which HKDF treats as
    32 zero bytes, giving exactly the v3 keys.
    """
    derived = hkdf(spqr_key or b"", seed, MESSAGE_KEYS_INFO, 80)
    return derived[:32], derived[32:64], derived[64:]
