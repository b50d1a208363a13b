"""A pinned-randomness SPQR conversation: every message's ``pq_ratchet`` bytes and SPQR key.

``tests/fixtures/spqr/conversation-v1.json`` is a lockstep run of 90 rounds (Alice sends, Bob
receives, Bob sends, Alice receives) from ``auth_key = SHA-256("spqr-conversation-vector")``, both
sides drawing from one :class:`~e2e.vectors.SeededRng` seeded with ``"spqr-conversation-vector"``
(call ``i`` returns the first ``n`` bytes of ``SHA-256(seed ‖ BE64(c)) ‖ …``, a fresh block per
call).  SPQR draws exactly as the crate does: 64 bytes for each key pair, 32 for each
encapsulation, nothing else, so another implementation fed the same calls must produce these
bytes.  The run crosses two epoch boundaries.  The test regenerates it and compares every byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import spqr_libsignal_vector

from e2e.spqr import Direction, initial_state
from e2e.vectors import SeededRng

VECTOR = Path(__file__).parent / "fixtures" / "spqr" / "conversation-v1.json"
SEED = b"spqr-conversation-vector"


def transcript(rounds: int) -> list[dict[str, str]]:
    rng = SeededRng(SEED)
    auth_key = hashlib.sha256(SEED).digest()
    alice, bob = initial_state(auth_key, Direction.A2B), initial_state(auth_key, Direction.B2A)
    out = []
    for _ in range(rounds):
        alice, message, key = alice.send(rng)
        bob, key_again = bob.recv(message)
        assert key is not None and key == key_again
        out.append(
            {"from": "alice", "epoch": str(alice.epoch), "pq_ratchet": message.hex(), "key": key.hex()}
        )
        bob, message, key = bob.send(rng)
        alice, key_again = alice.recv(message)
        assert key is not None and key == key_again
        out.append({"from": "bob", "epoch": str(bob.epoch), "pq_ratchet": message.hex(), "key": key.hex()})
    return out


def test_the_pinned_conversation_is_reproduced_byte_for_byte() -> None:
    stored = json.loads(VECTOR.read_text())
    assert stored["auth_key"] == hashlib.sha256(SEED).hexdigest()
    assert transcript(stored["rounds"]) == stored["messages"]
    assert {entry["epoch"] for entry in stored["messages"]} >= {"1", "2", "3"}


def test_the_libsignal_burst_vector_is_reproduced_byte_for_byte() -> None:
    # Checked by libsignal in tests/interop/test_spqr_libsignal.py.
    assert spqr_libsignal_vector.generate() == spqr_libsignal_vector.stored()
