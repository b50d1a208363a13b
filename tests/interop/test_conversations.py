"""Conversations between this project and python-axolotl, in both directions.

Ten conversations each way, each with fresh keys, run the whole script of
:mod:`tests.interop.conversation` (PreKey messages before any reply, out-of-order delivery
across DH ratchet steps, block-boundary and 64 KiB plaintexts, replies).  The identity keys are
chosen so that the four combinations of the two parties' Edwards sign bits all occur: a verifier
that mishandles libsignal's sign bit in XEdDSA signatures fails half of them.  Half the
conversations also store and reload our session after every message.

Beyond "every message decrypts", each transcript is compared with the transcript of the same
script played by two python-axolotl parties: message types, wire lengths, counters and previous
counters must be the same message for message.
"""

from __future__ import annotations

import pytest

from e2e.keys import Rng

from .axolotl_peer import AxolotlParty
from .conversation import check_types, run_conversation
from .keys_with_sign_bit import edwards_sign_bit, scalar_with_sign_bit
from .our_peer import OurParty

pytestmark = pytest.mark.interop

CONVERSATIONS = range(10)
Device = AxolotlParty | OurParty


def _identities(direction: bytes, index: int) -> tuple[bytes, bytes]:
    """Alice's and Bob's identity scalars: Alice's sign bit is ``index % 2``, Bob's ``index // 2 % 2``."""
    seed = direction + index.to_bytes(2, "big")
    return (
        scalar_with_sign_bit(seed + b"alice", index % 2),
        scalar_with_sign_bit(seed + b"bob", index // 2 % 2),
    )


def _baseline(alice_scalar: bytes, bob_scalar: bytes, seed: int) -> list[tuple[str, int, int, int, int]]:
    """The same script between two python-axolotl parties."""
    bob = AxolotlParty(bob_scalar)
    alice = AxolotlParty(alice_scalar)
    alice.start_session(bob.bundle())
    return run_conversation(alice, bob, seed).shape()


def _play(alice: Device, bob: Device, index: int, alice_scalar: bytes, bob_scalar: bytes) -> None:
    bundle = bob.bundle()
    # Alice verifies Bob's signature, whose sign bit this index chose.
    assert bundle.signed_pre_key_signature[63] >> 7 == index // 2 % 2
    alice.start_session(bundle)
    transcript = run_conversation(alice, bob, seed=index)
    check_types(transcript)
    assert not bob.has_pre_key()
    assert transcript.shape() == _baseline(alice_scalar, bob_scalar, index)


@pytest.mark.parametrize("index", CONVERSATIONS)
def test_our_alice_with_axolotl_bob(index: int, rng: Rng) -> None:
    alice_scalar, bob_scalar = _identities(b"ours to axolotl", index)
    bob = AxolotlParty(bob_scalar, registration_id=1000 + index)
    alice = OurParty(rng, alice_scalar, registration_id=2000 + index, persist=index % 3 == 0)
    _play(alice, bob, index, alice_scalar, bob_scalar)


@pytest.mark.parametrize("index", CONVERSATIONS)
def test_axolotl_alice_with_our_bob(index: int, rng: Rng) -> None:
    alice_scalar, bob_scalar = _identities(b"axolotl to ours", index)
    bob = OurParty(rng, bob_scalar, registration_id=3000 + index, persist=index % 3 == 1)
    alice = AxolotlParty(alice_scalar, registration_id=4000 + index)
    _play(alice, bob, index, alice_scalar, bob_scalar)


@pytest.mark.parametrize("direction", [b"ours to axolotl", b"axolotl to ours"])
def test_every_sign_bit_combination_occurs(direction: bytes) -> None:
    combinations = set()
    for index in CONVERSATIONS:
        alice_scalar, bob_scalar = _identities(direction, index)
        combinations.add((edwards_sign_bit(alice_scalar), edwards_sign_bit(bob_scalar)))
    assert combinations == {(0, 0), (1, 0), (0, 1), (1, 1)}
