"""python-axolotl against this project's store API (SessionBuilder, SessionCipher, in-memory store).

The conversations of :mod:`tests.interop.test_conversations` again, with our side on
:class:`tests.interop.store_peer.StoreParty`: the transcripts must match those of two
python-axolotl parties message for message.  Then a restart with a message in flight, and
replays and damage refused with every store unchanged.
"""

from __future__ import annotations

import pytest

from e2e.errors import DecodeError, DuplicateMessageError, InvalidMessageError, UntrustedIdentityError
from e2e.keys import Rng

from .axolotl_peer import PREKEY_TYPE, WHISPER_TYPE, AxolotlParty
from .conversation import check_types, run_conversation
from .keys_with_sign_bit import scalar_with_sign_bit
from .store_peer import REMOTE, StoreParty

pytestmark = pytest.mark.interop

CONVERSATIONS = range(4)
Device = AxolotlParty | StoreParty


def _scalars(direction: bytes, index: int) -> tuple[bytes, bytes]:
    seed = direction + index.to_bytes(2, "big")
    return scalar_with_sign_bit(seed + b"alice", index % 2), scalar_with_sign_bit(
        seed + b"bob", index // 2 % 2
    )


def _baseline(alice_scalar: bytes, bob_scalar: bytes, seed: int) -> list[tuple[str, int, int, int, int]]:
    bob, alice = AxolotlParty(bob_scalar), AxolotlParty(alice_scalar)
    alice.start_session(bob.bundle())
    return run_conversation(alice, bob, seed).shape()


def _play(alice: Device, bob: Device, index: int, alice_scalar: bytes, bob_scalar: bytes) -> None:
    alice.start_session(bob.bundle())
    transcript = run_conversation(alice, bob, seed=index)
    check_types(transcript)
    assert not bob.has_pre_key()
    assert transcript.shape() == _baseline(alice_scalar, bob_scalar, index)


@pytest.mark.parametrize("index", CONVERSATIONS)
def test_our_store_alice_with_axolotl_bob(index: int, rng: Rng) -> None:
    alice_scalar, bob_scalar = _scalars(b"store to axolotl", index)
    alice = StoreParty(rng, alice_scalar, registration_id=2000 + index)
    _play(alice, AxolotlParty(bob_scalar, registration_id=1000 + index), index, alice_scalar, bob_scalar)


@pytest.mark.parametrize("index", CONVERSATIONS)
def test_axolotl_alice_with_our_store_bob(index: int, rng: Rng) -> None:
    alice_scalar, bob_scalar = _scalars(b"axolotl to store", index)
    bob = StoreParty(rng, bob_scalar, registration_id=3000 + index)
    _play(AxolotlParty(alice_scalar, registration_id=4000 + index), bob, index, alice_scalar, bob_scalar)


def _send(sender: Device, receiver: Device, plaintext: bytes) -> int:
    message_type, body = sender.encrypt(plaintext)
    assert receiver.decrypt(message_type, body) == plaintext
    return message_type


@pytest.mark.parametrize("ours", ["alice", "bob"])
def test_restart_with_a_message_in_flight(rng: Rng, ours: str) -> None:
    alice_scalar = scalar_with_sign_bit(b"store restart alice " + ours.encode(), 1)
    bob_scalar = scalar_with_sign_bit(b"store restart bob " + ours.encode(), 0)
    alice: Device = StoreParty(rng, alice_scalar) if ours == "alice" else AxolotlParty(alice_scalar)
    bob: Device = StoreParty(rng, bob_scalar) if ours == "bob" else AxolotlParty(bob_scalar)
    alice.start_session(bob.bundle())
    for number in range(2):
        _send(alice, bob, b"alice %d" % number)
        _send(bob, alice, b"bob %d" % number)
    late_type, late = alice.encrypt(b"written before the restart")
    bob.signed_pre_key_id, bob.pre_key_id = 21, 22
    alice.start_session(bob.bundle())
    assert _send(alice, bob, b"after the restart") == PREKEY_TYPE
    assert _send(bob, alice, b"reply on the new session") == WHISPER_TYPE
    assert bob.decrypt(late_type, late) == b"written before the restart"
    for number in range(3):
        _send(alice, bob, b"again %d" % number)
        _send(bob, alice, b"back %d" % number)


def _snapshot(party: StoreParty) -> tuple[object, ...]:
    record = party.store.load_session(REMOTE)
    return (
        party.store.pre_key_ids(),
        party.store.get_identity(REMOTE),
        None if record is None else record.serialize(),
    )


def test_our_store_bob_refuses_replays_damage_and_strangers(rng: Rng) -> None:
    alice = AxolotlParty(scalar_with_sign_bit(b"store errors alice", 0))
    bob = StoreParty(rng, scalar_with_sign_bit(b"store errors bob", 1))
    alice.start_session(bob.bundle())
    first = alice.encrypt(b"first")
    damaged = first[1][:-1] + bytes([first[1][-1] ^ 0x80])
    before = _snapshot(bob)
    with pytest.raises((DecodeError, InvalidMessageError)):
        bob.decrypt(first[0], damaged)
    assert _snapshot(bob) == before and bob.has_pre_key()
    assert bob.decrypt(*first) == b"first"
    assert not bob.has_pre_key()
    before = _snapshot(bob)
    with pytest.raises(DuplicateMessageError):
        bob.decrypt(*first)
    assert _snapshot(bob) == before
    _send(bob, alice, b"reply")
    message_type, body = alice.encrypt(b"second")
    before = _snapshot(bob)
    with pytest.raises(DecodeError):
        bob.decrypt(message_type, body[: len(body) // 2])
    with pytest.raises(InvalidMessageError):
        bob.decrypt(message_type, body[:-1] + bytes([body[-1] ^ 1]))
    assert _snapshot(bob) == before
    assert bob.decrypt(message_type, body) == b"second"
    # Another python-axolotl device at the same address, with another identity: not trusted.
    stranger = AxolotlParty(scalar_with_sign_bit(b"store errors stranger", 0))
    bob.pre_key_id = 14
    stranger.start_session(bob.bundle())
    before = _snapshot(bob)
    with pytest.raises(UntrustedIdentityError):
        bob.decrypt(*stranger.encrypt(b"let me in"))
    assert _snapshot(bob) == before
    _send(alice, bob, b"still talking")
