"""Known answers from Signal's ``spqr`` crate: its frozen states, checked byte for byte, and its
conversation continued by this implementation.

Provenance: ``src/issue1275_a_state.in`` and ``src/issue1275_b_state.in`` of
signalapp/SparsePostQuantumRatchet at commit fd320484dcec89004021e6fdc7481825f5f261fa (the crate's
regression test ``regression_test_libcrux_issue_1275_from_generated_states``), copied unchanged to
``tests/fixtures/spqr/``.  They are the two sides of a lockstep run, 30 steps in, created with
``auth_key = [41; 32]``, ``Direction::A2B`` for Alex and ``B2A`` for Blake, default chain params.
Alex is key sender of epoch 1 in ``HeaderSent`` (28 of 30 ``c1`` chunks received); Blake is in
``Ct1Sampled``: it has encapsulated, so epoch 1's secret is already in its chain.

Every value checked below was computed by the crate; none was computed by this implementation
and pasted in.  The crate's own test continues the run 20 steps to epoch 2; so does the last test,
with this implementation on both sides, which makes the crate's half-finished epoch 1 end on our
code (``encaps2``, the erasure decoders, decapsulation, the authenticator, the epoch-1 chain).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import DeterministicRng
from spqr_crate_state import read_crate_state

from e2e.spqr import Direction, SpqrState, mlkem768
from e2e.spqr import braid as braid_states
from e2e.spqr.authenticator import Authenticator
from e2e.spqr.braid import epoch_secret
from e2e.spqr.chain import Chain

FIXTURES = Path(__file__).parent / "fixtures" / "spqr"
AUTH_KEY = bytes([41]) * 32


@pytest.fixture(scope="module")
def alex() -> SpqrState:
    return read_crate_state((FIXTURES / "crate_issue1275_a_state.bin").read_bytes())


@pytest.fixture(scope="module")
def blake() -> SpqrState:
    return read_crate_state((FIXTURES / "crate_issue1275_b_state.bin").read_bytes())


def test_the_fixtures_are_the_states_the_crate_describes(alex: SpqrState, blake: SpqrState) -> None:
    assert isinstance(alex.braid, braid_states.HeaderSent)
    assert isinstance(blake.braid, braid_states.Ct1Sampled)
    assert alex.epoch == blake.epoch == 1
    assert alex.chain is not None and blake.chain is not None
    assert alex.chain.direction is Direction.A2B and blake.chain.direction is Direction.B2A


def test_authenticator_start_matches_the_crate(alex: SpqrState) -> None:
    # The key sender has not updated its authenticator since the start of epoch 1.
    assert alex.braid is not None
    assert alex.braid.auth == Authenticator.new(AUTH_KEY, 1)


def test_chain_start_and_steps_match_the_crate(alex: SpqrState, blake: SpqrState) -> None:
    # Both sides have sent and received 30 messages in epoch 0.
    ours = Chain.new(AUTH_KEY, Direction.A2B)
    theirs = Chain.new(AUTH_KEY, Direction.B2A)
    for _ in range(30):
        ours, _, key = ours.send_key(0)
        theirs, key_again = theirs.recv_key(0, ours.links[0].send.ctr)
        assert key == key_again
    assert alex.chain is not None and blake.chain is not None
    assert ours.next_root == alex.chain.next_root
    assert ours.links[0].send == alex.chain.links[0].send
    assert theirs.links[0].recv == blake.chain.links[0].recv
    assert alex.chain.links[0].recv.next == blake.chain.links[0].send.next


def test_header_layout_matches_libcrux(alex: SpqrState, blake: SpqrState) -> None:
    # Alex stores libcrux's 2400-byte key dk_PKE ‖ ek ‖ H(ek) ‖ z; Blake holds the header
    # Alex sent.  libcrux's pk1 is ρ ‖ H(ek) and its pk2 is t̂ (ek without ρ).
    assert isinstance(alex.braid, braid_states.HeaderSent)
    assert isinstance(blake.braid, braid_states.Ct1Sampled)
    dk = alex.braid.dk
    assert len(dk) == mlkem768.EXPANDED_KEY_SIZE
    ek = dk[1152 : 1152 + 1184]
    assert blake.braid.header == ek[1152:] + hashlib.sha3_256(ek).digest()
    assert dk[2336:2368] == hashlib.sha3_256(ek).digest()
    assert mlkem768.vector_matches_header(ek[:1152], blake.braid.header)


def test_encaps1_reproduces_the_crates_ciphertext(blake: SpqrState) -> None:
    # libcrux's encapsulation state ends with the randomness m; from m and the header our
    # encaps1 must produce the very c1 libcrux produced.
    assert isinstance(blake.braid, braid_states.Ct1Sampled)
    m = blake.braid.encaps_state
    c1, state, _ = mlkem768.encaps1(blake.braid.header, lambda n: m[:n])
    assert c1 == blake.braid.ct1
    assert state == m


def test_epoch_secret_and_chain_epoch_match_the_crate(blake: SpqrState) -> None:
    # Blake's chain already holds epoch 1, which the crate derived from the ML-KEM secret; we
    # derive it from m and the header through FIPS 203, the "SCKA Key" KDF and "Add Epoch".
    assert isinstance(blake.braid, braid_states.Ct1Sampled)
    assert blake.chain is not None
    m = blake.braid.encaps_state
    _, _, shared_secret = mlkem768.encaps1(blake.braid.header, lambda n: m[:n])
    secret = epoch_secret(1, shared_secret)
    epoch0 = Chain.new(AUTH_KEY, Direction.B2A)
    for _ in range(30):
        epoch0, _, _ = epoch0.send_key(0)
    ours = epoch0.add_epoch(1, secret.secret)
    assert ours.next_root == blake.chain.next_root
    assert ours.links[1] == blake.chain.links[1]
    # The ciphertext sender updated its authenticator with the same secret.
    assert blake.braid.auth == Authenticator.new(AUTH_KEY, 1).update(1, secret.secret)


def test_decapsulation_of_the_expanded_libcrux_key(alex: SpqrState, blake: SpqrState) -> None:
    assert isinstance(alex.braid, braid_states.HeaderSent)
    assert isinstance(blake.braid, braid_states.Ct1Sampled)
    vector = alex.braid.dk[1152 : 1152 + 1152]
    m = blake.braid.encaps_state
    c2 = mlkem768.encaps2(vector, blake.braid.header, m)
    _, _, shared_secret = mlkem768.encaps1(blake.braid.header, lambda n: m[:n])
    assert mlkem768.decaps(alex.braid.dk, blake.braid.ct1, c2) == shared_secret


def test_continuing_the_crates_conversation_to_epoch_2(alex: SpqrState, blake: SpqrState) -> None:
    rng = DeterministicRng(b"spqr-crate-continuation")
    for _ in range(30, 50):
        alex, message, alex_key = alex.send(rng)
        blake, blake_key = blake.recv(message)
        assert alex_key is not None and alex_key == blake_key
        blake, message, blake_key = blake.send(rng)
        alex, alex_key = alex.recv(message)
        assert blake_key is not None and alex_key == blake_key
    assert alex.epoch == blake.epoch == 2
    assert alex.chain is not None and alex.chain.current_epoch >= 1
