"""Session restarts and bad messages between this project and python-axolotl.

libsignal keeps the states of earlier sessions with a device ("archived" states): when a device
starts a new session, messages still in flight on the old one must decrypt, and the state that
decrypts one becomes current again on the receiver.  Both implementations must make the same
choices here or a conversation breaks after a reinstall or a race between two session starts.

The error cases check that what python-axolotl sends, replayed or damaged, is refused by us with
the right typed error and leaves our session able to go on.
"""

from __future__ import annotations

import pytest

from e2e.errors import DecodeError, DuplicateMessageError, InvalidMessageError
from e2e.keys import Rng

from .axolotl_peer import PREKEY_TYPE, WHISPER_TYPE, AxolotlParty
from .keys_with_sign_bit import scalar_with_sign_bit
from .our_peer import OurParty

pytestmark = pytest.mark.interop

Device = AxolotlParty | OurParty


def _send(sender: Device, receiver: Device, plaintext: bytes) -> int:
    message_type, body = sender.encrypt(plaintext)
    assert receiver.decrypt(message_type, body) == plaintext
    return message_type


def _talk(alice: Device, bob: Device, rounds: int = 2) -> None:
    for number in range(rounds):
        _send(alice, bob, b"alice %d" % number)
        _send(bob, alice, b"bob %d" % number)


def _devices(rng: Rng, ours: str) -> tuple[Device, Device]:
    alice_scalar = scalar_with_sign_bit(b"restart alice " + ours.encode(), 1)
    bob_scalar = scalar_with_sign_bit(b"restart bob " + ours.encode(), 1)
    if ours == "alice":
        return OurParty(rng, alice_scalar), AxolotlParty(bob_scalar)
    return AxolotlParty(alice_scalar), OurParty(rng, bob_scalar)


@pytest.mark.parametrize("ours", ["alice", "bob"])
def test_restart_with_messages_in_flight(rng: Rng, ours: str) -> None:
    alice, bob = _devices(rng, ours)
    alice.start_session(bob.bundle())
    _talk(alice, bob)
    # Alice writes on the old session; the message is delayed.
    late_type, late = alice.encrypt(b"written before the restart")
    assert late_type == WHISPER_TYPE

    # Alice starts over from a new bundle (new prekey ids): a PreKey message again.
    bob.signed_pre_key_id, bob.pre_key_id = 21, 22
    alice.start_session(bob.bundle())
    assert _send(alice, bob, b"after the restart") == PREKEY_TYPE
    assert _send(bob, alice, b"reply on the new session") == WHISPER_TYPE

    # The delayed message decrypts with Bob's archived state, which becomes current again on his
    # side; his next reply is on the old session, and Alice finds it among her archived states.
    assert bob.decrypt(late_type, late) == b"written before the restart"
    _talk(alice, bob, rounds=3)


@pytest.mark.parametrize("ours", ["alice", "bob"])
def test_both_sides_restart_and_keep_talking(rng: Rng, ours: str) -> None:
    alice, bob = _devices(rng, ours)
    alice.start_session(bob.bundle())
    _talk(alice, bob)
    for restart in range(3):
        bob.signed_pre_key_id, bob.pre_key_id = 30 + restart, 40 + restart
        alice.start_session(bob.bundle())
        _talk(alice, bob)


def test_our_bob_refuses_replays_and_damage_and_goes_on(rng: Rng) -> None:
    alice, bob = _devices(rng, "bob")
    assert isinstance(bob, OurParty)
    alice.start_session(bob.bundle())
    first = alice.encrypt(b"first")
    assert bob.decrypt(*first) == b"first"
    # The same PreKey message again: the state it built exists, its key is spent.
    with pytest.raises(DuplicateMessageError):
        bob.decrypt(*first)
    _send(bob, alice, b"reply")

    message_type, body = alice.encrypt(b"second")
    before = bob.record.serialize()
    damaged = bytearray(body)
    damaged[-1] ^= 0x80  # the MAC's last byte
    with pytest.raises(InvalidMessageError):
        bob.decrypt(message_type, bytes(damaged))
    with pytest.raises(DecodeError):
        bob.decrypt(message_type, body[: len(body) // 2])
    assert bob.record.serialize() == before
    assert bob.decrypt(message_type, body) == b"second"
    with pytest.raises(DuplicateMessageError):
        bob.decrypt(message_type, body)
    _talk(alice, bob)
