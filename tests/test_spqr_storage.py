"""SPQR's storage format, version 1: a frozen pair of states still read and continued, exact round
trips in every braid state, and refusal of every corrupted, truncated or foreign record.

The fixtures in ``tests/fixtures/spqr/state-v1-*`` were written by this code in format 1, 99 rounds
into a ping-pong (``auth_key = SHA-256("spqr-frozen-fixture")``, ``DeterministicRng`` seeded with
the same string): Alice in epoch 3's ``HeaderSent``, Bob in ``Ct1Sampled``; Bob then sent five
more messages of which Alice received only the fifth, so she holds four skipped chain keys.
``state-v1-pending.txt`` lists the first four (``pq_ratchet`` bytes, SPQR key).  They must keep
reading and decrypting as long as format 1 is supported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DeterministicRng

from e2e.errors import StateFormatError
from e2e.spqr import Direction, SpqrState, SpqrStateFormatError, initial_state
from e2e.spqr.state import STATE_FORMAT_VERSION, STATE_KIND

FIXTURES = Path(__file__).parent / "fixtures" / "spqr"


def _fixture() -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    pending = []
    for line in (FIXTURES / "state-v1-pending.txt").read_text().splitlines():
        message, key = line.split()
        pending.append((bytes.fromhex(message), bytes.fromhex(key)))
    return (
        (FIXTURES / "state-v1-alice.bin").read_bytes(),
        (FIXTURES / "state-v1-bob.bin").read_bytes(),
        pending,
    )


def test_the_frozen_states_are_read_and_written_back_identically() -> None:
    alice_bytes, bob_bytes, _ = _fixture()
    assert alice_bytes[:2] == bytes((STATE_KIND, STATE_FORMAT_VERSION)) == bytes((ord("R"), 1))
    alice, bob = SpqrState.deserialize(alice_bytes), SpqrState.deserialize(bob_bytes)
    assert (alice.epoch, alice.braid_state_name) == (3, "HeaderSent")
    assert (bob.epoch, bob.braid_state_name) == (3, "Ct1Sampled")
    assert alice.serialize() == alice_bytes and bob.serialize() == bob_bytes


def test_the_frozen_states_continue_the_conversation() -> None:
    alice_bytes, bob_bytes, pending = _fixture()
    alice, bob = SpqrState.deserialize(alice_bytes), SpqrState.deserialize(bob_bytes)
    # The late messages decrypt in reverse order from the stored skipped keys.
    for message, key in reversed(pending):
        alice, key_again = alice.recv(message)
        assert key_again == key
    rng = DeterministicRng(b"spqr-frozen-continuation")
    for _ in range(120):
        alice, message, key = alice.send(rng)
        bob, key_again = bob.recv(message)
        assert key is not None and key == key_again
        bob, message, key = bob.send(rng)
        alice, key_again = alice.recv(message)
        assert key is not None and key == key_again
    assert alice.epoch >= 5


def test_every_braid_state_round_trips() -> None:
    rng = DeterministicRng(b"spqr-storage-states")
    auth_key = bytes(range(32))
    alice, bob = initial_state(auth_key, Direction.A2B), initial_state(auth_key, Direction.B2A)
    seen = set()
    for _ in range(200):
        for state in (alice, bob):
            seen.add(state.braid_state_name)
            assert SpqrState.deserialize(state.serialize()) == state
        alice, message, _ = alice.send(rng)
        bob, _ = bob.recv(message)
        bob, message, _ = bob.send(rng)
        alice, _ = alice.recv(message)
    # Strict ping-pong never rests in EkReceivedCt1Sampled; every other state occurs.
    assert len(seen) >= 10, seen


def test_negotiating_states_round_trip() -> None:
    state = initial_state(bytes(32), Direction.B2A)
    assert state.negotiating
    assert SpqrState.deserialize(state.serialize()) == state


def test_truncations_and_byte_flips_are_refused_or_read_as_a_valid_state() -> None:
    alice_bytes, _, _ = _fixture()
    for end in range(len(alice_bytes)):
        with pytest.raises(SpqrStateFormatError):
            SpqrState.deserialize(alice_bytes[:end])
    for position in range(0, len(alice_bytes), 7):
        corrupted = bytearray(alice_bytes)
        corrupted[position] ^= 0xFF
        try:
            state = SpqrState.deserialize(bytes(corrupted))
        except SpqrStateFormatError:
            continue
        # A flip inside a key, a chunk value or a counter still parses; it is then a different
        # but well-formed state, which round-trips like any other.
        assert SpqrState.deserialize(state.serialize()) == state


@pytest.mark.parametrize(
    "data",
    [b"", b"R", b"S\x01", b"R\x02" + b"\x08\x01", b"R\x01\x08\x02", b"R\x01\x08\x01", b"R\x01\xff"],
)
def test_foreign_and_malformed_records_are_refused(data: bytes) -> None:
    with pytest.raises(SpqrStateFormatError) as raised:
        SpqrState.deserialize(data)
    assert isinstance(raised.value, StateFormatError)
