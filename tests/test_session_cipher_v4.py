"""Version-4 sessions with SPQR over the store API: the Kyber prekey store, the factory in the ciphers.

Two in-memory stores run Signal's PQXDH (a Kyber1024 prekey, message version 4) and SPQR through
:class:`SessionBuilder` / :class:`SessionCipher`, as the client library does over SQLite: the
one-time Kyber prekey is consumed only after success, the last-resort one stays, a v4 message
naming a Kyber prekey the store does not hold is typed and changes nothing (an ML-KEM prekey of
the same id does not stand in for it), explain mode shows SPQR's steps and tracing changes no byte.
"""

from __future__ import annotations

import pytest
from conftest import DeterministicRng

from e2e import (
    DowngradeError,
    InMemoryProtocolStore,
    KemKeyPair,
    KemPreKeyRecord,
    KeyPair,
    PreKeyRecord,
    ProtocolAddress,
    SessionBuilder,
    SessionCipher,
    SignedPreKeyRecord,
    UnknownPreKeyError,
    make_pre_key_bundle,
)
from e2e.keys import Rng
from e2e.kyber import KyberKeyPair
from e2e.records import KyberPreKeyRecord
from e2e.spqr import SpqrRatchetFactory

ALICE, BOB = ProtocolAddress("alice", 1), ProtocolAddress("bob", 1)
FACTORY = SpqrRatchetFactory()


def _device(rng: Rng, registration_id: int) -> InMemoryProtocolStore:
    store = InMemoryProtocolStore(KeyPair.generate(rng), registration_id, pq_ratchet_factory=FACTORY)
    identity = store.get_identity_key_pair()
    signed = KeyPair.generate(rng)
    store.store_signed_pre_key(
        SignedPreKeyRecord(1, signed, identity.sign(signed.public_key.serialize(), rng), 0)
    )
    store.store_pre_key(PreKeyRecord(100, KeyPair.generate(rng)))
    for key_id, last_resort in ((200, False), (500, True)):
        kyber = KyberKeyPair.generate(rng)
        signature = identity.sign(kyber.public_key.serialize(), rng)
        store.store_kyber_pre_key(KyberPreKeyRecord(key_id, kyber, signature, 0, last_resort))
    mlkem = KemKeyPair.generate(rng)
    store.store_kem_pre_key(
        KemPreKeyRecord(200, mlkem, identity.sign(mlkem.public_key.serialize(), rng), 0, False)
    )
    return store


def _snapshot(store: InMemoryProtocolStore) -> tuple[object, ...]:
    return (
        store.pre_key_ids(),
        store.kem_pre_key_ids(),
        store.kyber_pre_key_ids(),
        [(a, store.load_session(a).serialize()) for a in store.session_addresses()],  # type: ignore[union-attr]
    )


def test_v4_with_spqr_over_the_store_api(rng: DeterministicRng) -> None:
    alice, bob = _device(rng, 1), _device(rng, 2)
    bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, pre_key_id=100, kyber_pre_key_id=200)
    SessionBuilder(alice, BOB, pq_ratchet_factory=FACTORY).process_pre_key_bundle(bundle, rng)
    to_bob = SessionCipher(alice, BOB, pq_ratchet_factory=FACTORY)
    to_alice = SessionCipher(bob, ALICE, pq_ratchet_factory=FACTORY)
    first = to_bob.encrypt(b"hello v4", rng)
    assert first.body[0] == 0x44
    assert to_alice.decrypt(first) == b"hello v4"
    assert bob.kyber_pre_key_ids() == [500] and bob.kem_pre_key_ids() == [200] and bob.pre_key_ids() == []
    record = bob.load_session(ALICE)
    assert record is not None and record.session_version == 4
    assert record.current_state is not None and record.current_state.pq_ratchet is not None
    # Enough ping-pong for SPQR to move, through stored records on both sides.
    for i in range(30):
        reply = to_alice.encrypt(b"pong %d" % i, rng)
        assert to_bob.decrypt(reply) == b"pong %d" % i
        message = to_bob.encrypt(b"ping %d" % i, rng)
        assert to_alice.decrypt(message) == b"ping %d" % i
    # A v3 bundle for a v4 session is a downgrade, refused with nothing stored.
    before = _snapshot(alice)
    v3_bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, kem_pre_key_id=200)
    with pytest.raises(DowngradeError):
        SessionBuilder(alice, BOB, pq_ratchet_factory=FACTORY).process_pre_key_bundle(v3_bundle, rng)
    assert _snapshot(alice) == before


def test_last_resort_kyber_prekey_stays(rng: DeterministicRng) -> None:
    alice, bob = _device(rng, 1), _device(rng, 2)
    bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, kyber_pre_key_id=500)
    SessionBuilder(alice, BOB, pq_ratchet_factory=FACTORY).process_pre_key_bundle(bundle, rng)
    message = SessionCipher(alice, BOB, pq_ratchet_factory=FACTORY).encrypt(b"lr", rng)
    assert SessionCipher(bob, ALICE, pq_ratchet_factory=FACTORY).decrypt(message) == b"lr"
    assert bob.kyber_pre_key_ids() == [200, 500] and bob.kem_pre_key_ids() == [200]


def test_v4_message_naming_a_missing_kyber_prekey_changes_nothing(rng: DeterministicRng) -> None:
    alice, bob = _device(rng, 1), _device(rng, 2)
    bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, pre_key_id=100, kyber_pre_key_id=200)
    SessionBuilder(alice, BOB, pq_ratchet_factory=FACTORY).process_pre_key_bundle(bundle, rng)
    message = SessionCipher(alice, BOB, pq_ratchet_factory=FACTORY).encrypt(b"x", rng)
    to_alice = SessionCipher(bob, ALICE, pq_ratchet_factory=FACTORY)
    # Bob's Kyber prekey 200 is gone; his ML-KEM prekey 200 does not stand in for it.
    original = bob.load_kyber_pre_key(200)
    assert original is not None and bob.load_kem_pre_key(200) is not None
    bob.remove_kyber_pre_key(200)
    before = _snapshot(bob)
    with pytest.raises(UnknownPreKeyError):
        to_alice.decrypt(message)
    assert _snapshot(bob) == before
    bob.store_kyber_pre_key(original)
    assert to_alice.decrypt(message) == b"x"
    assert bob.kyber_pre_key_ids() == [500]


def test_explain_shows_spqr_chunks_keys_mixed_and_epoch_changes(rng: DeterministicRng) -> None:
    from e2e.explain import Event

    alice, bob = _device(rng, 1), _device(rng, 2)
    bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, pre_key_id=100, kyber_pre_key_id=200)
    SessionBuilder(alice, BOB, pq_ratchet_factory=FACTORY).process_pre_key_bundle(bundle, rng)
    to_bob = SessionCipher(alice, BOB, pq_ratchet_factory=FACTORY)
    to_alice = SessionCipher(bob, ALICE, pq_ratchet_factory=FACTORY)
    events: list[Event] = []
    for i in range(120):
        message = to_bob.encrypt(b"ping %d" % i, rng, trace=events.append)
        assert to_alice.decrypt(message, trace=events.append) == b"ping %d" % i
        reply = to_alice.encrypt(b"pong %d" % i, rng, trace=events.append)
        assert to_bob.decrypt(reply, trace=events.append) == b"pong %d" % i
    steps = [e for e in events if e.step == "ratchet.pq_key"]
    assert len(steps) == 480
    assert {e.public["direction"] for e in steps} == {"encrypt", "decrypt"}
    assert all(e.public["spqr_version"] == 1 for e in steps)
    assert any("spqr_chunk" in e.public for e in steps if e.public["direction"] == "decrypt")
    mixed = [e for e in steps if e.public["pq_key_mixed"]]
    assert mixed and all(len(e.secret["pq_key"]) == 32 for e in mixed)
    assert all("pq_key" not in e.secret for e in steps if not e.public["pq_key_mixed"])
    epochs = [e for e in events if e.step == "ratchet.pq_epoch"]
    # The epoch moves when a received chunk completes the braid's step, one epoch at a time.
    assert "decrypt" in {e.public["direction"] for e in epochs}
    assert all(e.public["to"] == e.public["from"] + 1 for e in epochs)  # type: ignore[operator]
    assert max(e.public["to"] for e in epochs) >= 2  # type: ignore[type-var]
    # No secret in the public values: only ints, short strings and bools.
    assert all(isinstance(v, (int, str, bool)) and len(str(v)) < 40 for e in steps for v in e.public.values())


def test_tracing_changes_no_bytes_in_v4(rng: DeterministicRng) -> None:
    outputs = []
    for traced in (False, True):
        run = DeterministicRng()
        alice, bob = _device(run, 1), _device(run, 2)
        bundle = make_pre_key_bundle(bob, 1, signed_pre_key_id=1, pre_key_id=100, kyber_pre_key_id=200)
        SessionBuilder(alice, BOB, pq_ratchet_factory=FACTORY).process_pre_key_bundle(bundle, run)
        to_bob = SessionCipher(alice, BOB, pq_ratchet_factory=FACTORY)
        to_alice = SessionCipher(bob, ALICE, pq_ratchet_factory=FACTORY)
        trace = (lambda _event: None) if traced else None
        out = []
        for i in range(5):
            message = to_bob.encrypt(b"%d" % i, run, trace=trace)
            to_alice.decrypt(message, trace=trace)
            out.append(message.body)
            reply = to_alice.encrypt(b"r%d" % i, run, trace=trace)
            to_bob.decrypt(reply, trace=trace)
            out.append(reply.body)
        outputs.append(out)
    assert outputs[0] == outputs[1]
