"""v4 sessions with SPQR: PQXDH with a Kyber-1024 prekey, then the Triple Ratchet between two of
our own records, across many SPQR epochs, with every message's field 5 carrying an SPQR message,
tampering refused with the records unchanged, restarts from stored records mid-epoch, and the
SPQR state checked for the right epoch on both sides."""

from __future__ import annotations

import dataclasses
import random

import pytest
from conftest import DeterministicRng
from parties import Party

from e2e.errors import E2EError
from e2e.kyber import KyberKeyPair
from e2e.session import Ciphertext, SessionRecord
from e2e.spqr import SpqrRatchet, SpqrRatchetFactory
from e2e.spqr.message import SpqrMessage
from e2e.wire import MessageType, PreKeySignalMessage, SignalMessage

FACTORY = SpqrRatchetFactory()


def _pq_state(record: SessionRecord) -> SpqrRatchet:
    # The test inspects the SPQR state, which the record does not expose.
    state = record._current
    assert state is not None and isinstance(state.pq_ratchet, SpqrRatchet)
    return state.pq_ratchet


def _field5(ciphertext: Ciphertext) -> bytes:
    if ciphertext.type == MessageType.PREKEY:
        return PreKeySignalMessage.deserialize(ciphertext.body).message.pq_ratchet
    return SignalMessage.deserialize(ciphertext.body).pq_ratchet


def start(rng: DeterministicRng) -> tuple[SessionRecord, SessionRecord, Party, KyberKeyPair]:
    alice_party, bob_party = Party.create(rng, 1000), Party.create(rng, 2000)
    kyber = KyberKeyPair.generate(rng)
    bundle = dataclasses.replace(
        bob_party.bundle(rng),
        kem_pre_key_id=77,
        kem_pre_key=kyber.public_key,
        kem_pre_key_signature=bob_party.identity.sign(kyber.public_key.serialize(), rng),
    )
    alice = SessionRecord.initiate(alice_party.identity, 1000, bundle, rng, pq_ratchet_factory=FACTORY)
    first = alice.encrypt(b"hello", rng)
    assert first.type == MessageType.PREKEY
    assert len(_field5(first)) == 37
    message = PreKeySignalMessage.deserialize(first.body)
    bob = SessionRecord(pq_ratchet_factory=FACTORY)
    plaintext = bob.decrypt_prekey_message(
        message,
        bob_party.identity,
        bob_party.signed_pre_key,
        bob_party.one_time_pre_keys[message.pre_key_id] if message.pre_key_id is not None else None,
        rng,
        our_registration_id=2000,
        our_kem_pre_key=kyber,
    )
    assert plaintext == b"hello"
    assert alice.decrypt(bob.encrypt(b"welcome", rng).body, rng) == b"welcome"
    return alice, bob, bob_party, kyber


def test_a_v4_conversation_runs_spqr_through_many_epochs() -> None:
    rng = DeterministicRng(b"spqr-session")
    alice, bob, _, _ = start(rng)
    for i in range(300):
        reply = bob.encrypt(b"b%d" % i, rng)
        assert 4 <= len(_field5(reply)) <= 39
        SpqrMessage.deserialize(_field5(reply))
        assert alice.decrypt(reply.body, rng) == b"b%d" % i
        message = alice.encrypt(b"a%d" % i, rng)
        assert bob.decrypt(message.body, rng) == b"a%d" % i
    assert _pq_state(alice).state.epoch >= 6
    assert abs(_pq_state(alice).state.epoch - _pq_state(bob).state.epoch) <= 1


def test_bursts_out_of_order_and_losses_across_epochs() -> None:
    rng = DeterministicRng(b"spqr-session-ooo")
    shuffle = random.Random(5)
    alice, bob, _, _ = start(rng)
    for round_number in range(60):
        burst = [alice.encrypt(b"a%d.%d" % (round_number, i), rng) for i in range(5)]
        kept = [m for m in burst if shuffle.random() > 0.2]
        shuffle.shuffle(kept)
        for message in kept:
            assert bob.decrypt(message.body, rng).startswith(b"a%d." % round_number)
        replies = [bob.encrypt(b"b%d.%d" % (round_number, i), rng) for i in range(3)]
        shuffle.shuffle(replies)
        for reply in replies[:2]:
            assert alice.decrypt(reply.body, rng).startswith(b"b%d." % round_number)
    assert _pq_state(bob).state.epoch >= 2


def test_tampering_with_any_byte_is_refused_and_changes_nothing() -> None:
    rng = DeterministicRng(b"spqr-session-tamper")
    alice, bob, _, _ = start(rng)
    for _ in range(50):
        assert alice.decrypt(bob.encrypt(b"x", rng).body, rng) == b"x"
        assert bob.decrypt(alice.encrypt(b"y", rng).body, rng) == b"y"
    message = alice.encrypt(b"secret", rng).body
    before = bob.serialize()
    for position in range(len(message)):
        tampered = bytearray(message)
        tampered[position] ^= 0x04
        with pytest.raises(E2EError):
            bob.decrypt(bytes(tampered), rng)
        assert bob.serialize() == before
    # The untouched message still decrypts, once.
    assert SignalMessage.deserialize(message).pq_ratchet
    assert bob.decrypt(message, rng) == b"secret"
    with pytest.raises(E2EError):
        bob.decrypt(message, rng)


def test_restarting_from_stored_records_mid_epoch() -> None:
    rng = DeterministicRng(b"spqr-session-restart")
    alice, bob, _, _ = start(rng)
    for i in range(200):
        if i % 13 == 0:
            alice = SessionRecord.deserialize(alice.serialize(), pq_ratchet_factory=FACTORY)
            bob = SessionRecord.deserialize(bob.serialize(), pq_ratchet_factory=FACTORY)
        assert alice.decrypt(bob.encrypt(b"%d" % i, rng).body, rng) == b"%d" % i
        assert bob.decrypt(alice.encrypt(b"%d" % i, rng).body, rng) == b"%d" % i
    assert _pq_state(alice).state.epoch >= 4


def test_the_ratchet_explains_its_epoch_and_state() -> None:
    rng = DeterministicRng(b"spqr-session-explain")
    alice, bob, _, _ = start(rng)
    facts = _pq_state(alice).explain()
    assert facts == {"spqr_epoch": 1, "spqr_state": "KeysSampled"}
    assert "redacted" in repr(_pq_state(bob))


def test_a_peer_without_spqr_is_refused_and_nothing_is_stored() -> None:
    # Alice runs v4 without a post-quantum ratchet (empty field 5, unsalted keys), as a peer that
    # dropped SPQR would; Bob requires it, as libsignal does, and refuses her first message.
    rng = DeterministicRng(b"spqr-session-downgrade")
    alice_party, bob_party = Party.create(rng, 1000), Party.create(rng, 2000)
    kyber = KyberKeyPair.generate(rng)
    bundle = dataclasses.replace(
        bob_party.bundle(rng),
        kem_pre_key_id=77,
        kem_pre_key=kyber.public_key,
        kem_pre_key_signature=bob_party.identity.sign(kyber.public_key.serialize(), rng),
    )
    alice = SessionRecord.initiate(alice_party.identity, 1000, bundle, rng)
    first = alice.encrypt(b"hello", rng)
    assert _field5(first) == b""
    message = PreKeySignalMessage.deserialize(first.body)
    bob = SessionRecord(pq_ratchet_factory=FACTORY)
    before = bob.serialize()
    with pytest.raises(E2EError):
        bob.decrypt_prekey_message(
            message,
            bob_party.identity,
            bob_party.signed_pre_key,
            bob_party.one_time_pre_keys[message.pre_key_id] if message.pre_key_id is not None else None,
            rng,
            our_registration_id=2000,
            our_kem_pre_key=kyber,
        )
    assert bob.serialize() == before
