"""Our message codecs on python-axolotl's bytes: field for field, MAC and byte-exact re-encoding.

python-axolotl builds its messages with Google's protobuf library; our :mod:`e2e.wire` has its own
encoder and a strict decoder.  These tests take real python-axolotl messages (a PreKey message, a
first reply, and a message after DH ratchet steps, whose previous counter is non-zero), read them
with our decoder, check every field against python-axolotl's own reading of the same bytes, check
the MAC with the key python-axolotl used, and encode the same values again with our encoder: the
bytes must come out identical.
"""

from __future__ import annotations

import pytest
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage
from axolotl.protocol.whispermessage import WhisperMessage

from e2e.errors import DecodeError, InvalidMessageError
from e2e.keys import PublicKey
from e2e.wire import MessageType, PreKeySignalMessage, SignalMessage

from .axolotl_peer import PREKEY_TYPE, WHISPER_TYPE, AxolotlParty
from .keys_with_sign_bit import scalar_with_sign_bit

pytestmark = pytest.mark.interop


def _key(point: object) -> PublicKey:
    return PublicKey.deserialize(bytes(point.serialize()))  # type: ignore[attr-defined]


def _pair() -> tuple[AxolotlParty, AxolotlParty]:
    bob = AxolotlParty(scalar_with_sign_bit(b"wire bob", 1), registration_id=1234, signed_pre_key_id=77)
    alice = AxolotlParty(scalar_with_sign_bit(b"wire alice", 0), registration_id=4321)
    alice.start_session(bob.bundle())
    return alice, bob


def _check_signal_message(
    ours: SignalMessage, body: bytes, mac_key: bytes, sender: PublicKey, receiver: PublicKey
) -> None:
    theirs = WhisperMessage(serialized=body)
    assert ours.serialized == body
    assert ours.ratchet_key == _key(theirs.getSenderRatchetKey())
    assert ours.counter == theirs.getCounter()
    assert ours.previous_counter == theirs.previousCounter
    assert ours.ciphertext == bytes(theirs.getBody())
    ours.verify_mac(mac_key, sender, receiver)
    # The same values through our encoder give the same bytes, MAC included.
    again = SignalMessage.create(
        mac_key, sender, receiver, ours.ratchet_key, ours.counter, ours.previous_counter, ours.ciphertext
    )
    assert again.serialized == body
    # The MAC binds the direction: swapping the identity keys must fail.
    with pytest.raises(InvalidMessageError):
        ours.verify_mac(mac_key, receiver, sender)


def test_message_types_are_libsignals() -> None:
    assert (MessageType.WHISPER, MessageType.PREKEY) == (WHISPER_TYPE, PREKEY_TYPE)


def test_prekey_message_from_axolotl() -> None:
    alice, bob = _pair()
    mac_key = alice.next_mac_key()
    message_type, body = alice.encrypt(b"first message" * 3)
    assert message_type == PREKEY_TYPE
    ours = PreKeySignalMessage.deserialize(body)
    theirs = PreKeyWhisperMessage(serialized=body)

    assert ours.serialized == body
    assert ours.registration_id == theirs.getRegistrationId() == 4321
    assert ours.pre_key_id == theirs.getPreKeyId() == bob.pre_key_id
    assert ours.signed_pre_key_id == theirs.getSignedPreKeyId() == 77
    assert ours.base_key == _key(theirs.getBaseKey())
    assert ours.identity_key == alice.identity_key
    initial = ours.initial_message()
    assert (initial.identity_key, initial.base_key) == (ours.identity_key, ours.base_key)
    assert (initial.signed_pre_key_id, initial.pre_key_id) == (77, bob.pre_key_id)
    assert ours.message.counter == 0 and ours.message.previous_counter == 0
    _check_signal_message(
        ours.message,
        bytes(theirs.getWhisperMessage().serialize()),
        mac_key,
        alice.identity_key,
        bob.identity_key,
    )

    again = PreKeySignalMessage.create(
        ours.registration_id,
        ours.pre_key_id,
        ours.signed_pre_key_id,
        ours.base_key,
        ours.identity_key,
        ours.message,
    )
    assert again.serialized == body
    # And python-axolotl's Bob accepts it, of course.
    assert bob.decrypt(message_type, body) == b"first message" * 3


def test_signal_messages_after_ratchet_steps() -> None:
    alice, bob = _pair()
    for _ in range(3):
        bob.decrypt(*alice.encrypt(b"hello"))
    # Bob's replies, then Alice's answer on a new chain, then Bob on a new chain: the last two
    # messages carry non-zero previous counters.
    checked = 0
    for sender, receiver, count in ((bob, alice, 2), (alice, bob, 3), (bob, alice, 2)):
        for _ in range(count):
            mac_key = sender.next_mac_key()
            message_type, body = sender.encrypt(b"x" * (17 * checked))
            assert message_type == WHISPER_TYPE
            ours = SignalMessage.deserialize(body)
            _check_signal_message(ours, body, mac_key, sender.identity_key, receiver.identity_key)
            assert receiver.decrypt(message_type, body) == b"x" * (17 * checked)
            checked += 1
    assert ours.previous_counter > 0


def test_tampered_axolotl_message_fails_our_mac_or_decoder() -> None:
    alice, bob = _pair()
    mac_key = alice.next_mac_key()
    _, body = alice.encrypt(b"payload")
    inner = PreKeySignalMessage.deserialize(body).message.serialized
    for index in range(1, len(inner)):
        tampered = bytearray(inner)
        tampered[index] ^= 0x01
        try:
            message = SignalMessage.deserialize(bytes(tampered))
        except DecodeError:
            continue
        with pytest.raises(InvalidMessageError):
            message.verify_mac(mac_key, alice.identity_key, bob.identity_key)
