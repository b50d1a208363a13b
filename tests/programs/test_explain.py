"""The explain renderer, fed with the events the core really emits during an X3DH handshake."""

from __future__ import annotations

import re

import pytest

from client.explain import SHOW_SECRETS_WARNING, STEP_TITLES, Explainer, render
from e2e.errors import InvalidMessageError
from e2e.explain import Event, fingerprint
from e2e.keys import KeyPair
from e2e.session import SessionRecord
from e2e.wire import PreKeySignalMessage
from e2e.x3dh import PreKeyBundle, initiate, respond


def _handshake(rng) -> tuple[list[Event], list[Event]]:
    """Run X3DH both ways with a one-time prekey and return Alice's and Bob's events."""
    alice_identity = KeyPair.generate(rng)
    bob_identity = KeyPair.generate(rng)
    bob_signed = KeyPair.generate(rng)
    bob_one_time = KeyPair.generate(rng)
    bundle = PreKeyBundle(
        registration_id=7,
        device_id=1,
        identity_key=bob_identity.public_key,
        signed_pre_key_id=1,
        signed_pre_key=bob_signed.public_key,
        signed_pre_key_signature=bob_identity.sign(bob_signed.public_key.serialize(), rng),
        pre_key_id=3,
        pre_key=bob_one_time.public_key,
    )
    alice_events: list[Event] = []
    bob_events: list[Event] = []
    message, _ = initiate(alice_identity, bundle, rng, trace=alice_events.append)
    respond(bob_identity, bob_signed, bob_one_time, message, trace=bob_events.append)
    return alice_events, bob_events


def test_secrets_appear_only_as_fingerprints(rng) -> None:
    alice_events, bob_events = _handshake(rng)
    events = alice_events + bob_events
    secrets = [value for event in events for value in event.secret.values()]
    assert len(secrets) >= 10  # four DH outputs and two KDF outputs on each side
    text = "\n".join(render(event) for event in events)
    for secret in secrets:
        assert secret.hex() not in text
        assert secret.hex()[:16] not in text
        assert fingerprint(secret) in text


def test_the_four_dh_results_are_named_with_their_formula_and_match_across_sides(rng) -> None:
    alice_events, bob_events = _handshake(rng)
    alice_lines = [render(e) for e in alice_events if e.step == "x3dh.dh"]
    bob_lines = [render(e) for e in bob_events if e.step == "x3dh.dh"]
    assert [line.split(" = ")[0] for line in alice_lines] == [
        "X3DH: DH1",
        "X3DH: DH2",
        "X3DH: DH3",
        "X3DH: DH4",
    ]
    assert "DH(EK_A, OPK_B)" in alice_lines[3]
    # Both sides derive the same values, so a student sees the same fingerprints on both.
    assert alice_lines == bob_lines


def test_public_values_are_shown_as_they_are(rng) -> None:
    alice_events, _ = _handshake(rng)
    verified = next(e for e in alice_events if e.step == "x3dh.bundle_verified")
    line = render(verified)
    assert "verified" in line
    for value in verified.public.values():
        assert str(value) in line


def test_show_secrets_prints_them_marked(rng) -> None:
    alice_events, _ = _handshake(rng)
    kdf = next(e for e in alice_events if e.step == "x3dh.kdf")
    line = render(kdf, show_secrets=True)
    for value in kdf.secret.values():
        assert f"SECRET {value.hex()}" in line
    assert "PRIVATE" in SHOW_SECRETS_WARNING


def test_unknown_steps_render_under_their_own_name() -> None:
    key = bytes(range(32))
    event = Event("future.step", {"counter": 4, "fresh": True}, {"key": key})
    assert render(event) == f"future.step: counter=4, fresh=yes, key={fingerprint(key)}"
    assert render(Event("another.step")) == "another.step"


@pytest.mark.parametrize("enabled", [True, False])
def test_explainer_labels_lines_and_can_be_switched_off(rng, enabled: bool) -> None:
    lines: list[str] = []
    explainer = Explainer(lines.append, label="Alice", enabled=enabled)
    alice_events, _ = _handshake(rng)
    for event in alice_events:
        explainer(event)
    if enabled:
        assert len(lines) == len(alice_events)
        assert all(line.startswith("Alice: ") for line in lines)
    else:
        assert lines == []


def _conversation(rng) -> list[Event]:
    """A real session through the core: first message, replies, messages out of order, a forged one."""
    events: list[Event] = []
    trace = events.append
    alice_identity, bob_identity = KeyPair.generate(rng), KeyPair.generate(rng)
    bob_signed, bob_one_time = KeyPair.generate(rng), KeyPair.generate(rng)
    bundle = PreKeyBundle(
        registration_id=7,
        device_id=1,
        identity_key=bob_identity.public_key,
        signed_pre_key_id=1,
        signed_pre_key=bob_signed.public_key,
        signed_pre_key_signature=bob_identity.sign(bob_signed.public_key.serialize(), rng),
        pre_key_id=3,
        pre_key=bob_one_time.public_key,
    )
    alice = SessionRecord.initiate(alice_identity, 5, bundle, rng, trace=trace)
    bob = SessionRecord()
    first = alice.encrypt(b"hello", rng, trace)
    bob.decrypt_prekey_message(
        PreKeySignalMessage.deserialize(first.body),
        bob_identity,
        bob_signed,
        bob_one_time,
        rng,
        trace,
        our_registration_id=7,
    )
    reply = bob.encrypt(b"hi", rng, trace)
    alice.decrypt(reply.body, rng, trace)
    late, early = alice.encrypt(b"one", rng, trace), alice.encrypt(b"two", rng, trace)
    bob.decrypt(early.body, rng, trace)
    bob.decrypt(late.body, rng, trace)
    forged = bob.encrypt(b"three", rng, trace).body
    with pytest.raises(InvalidMessageError):
        alice.decrypt(forged[:-1] + bytes([forged[-1] ^ 1]), rng, trace)
    return events


def test_every_step_of_a_real_conversation_has_a_title_and_hides_its_secrets(rng) -> None:
    events = _conversation(rng)
    steps = {event.step for event in events}
    assert {
        "ratchet.dh_step",
        "ratchet.skipped_keys_stored",
        "ratchet.skipped_key_used",
        "ratchet.mac",
    } <= steps
    assert steps <= set(STEP_TITLES)
    text = "\n".join(render(event) for event in events)
    assert "MAC check passed" in text
    assert "MAC check FAILED" in text
    for event in events:
        for secret in event.secret.values():
            assert secret.hex()[:16] not in text


def test_a_version_4_conversation_explains_kyber_and_spqr_and_hides_their_secrets(rng) -> None:
    """Signal's PQXDH with Kyber1024 and SPQR: every step has a title; SPQR's chunks, the keys it
    mixes in and its epoch changes are shown, the keys only as fingerprints."""
    import dataclasses

    from e2e.kyber import KyberKeyPair
    from e2e.spqr import SpqrRatchetFactory

    factory = SpqrRatchetFactory()
    events: list[Event] = []
    trace = events.append
    alice_identity, bob_identity = KeyPair.generate(rng), KeyPair.generate(rng)
    bob_signed, kyber = KeyPair.generate(rng), KyberKeyPair.generate(rng)
    bundle = dataclasses.replace(
        PreKeyBundle(
            registration_id=7,
            device_id=1,
            identity_key=bob_identity.public_key,
            signed_pre_key_id=1,
            signed_pre_key=bob_signed.public_key,
            signed_pre_key_signature=bob_identity.sign(bob_signed.public_key.serialize(), rng),
        ),
        kem_pre_key_id=9,
        kem_pre_key=kyber.public_key,
        kem_pre_key_signature=bob_identity.sign(kyber.public_key.serialize(), rng),
    )
    alice = SessionRecord.initiate(alice_identity, 5, bundle, rng, trace=trace, pq_ratchet_factory=factory)
    bob = SessionRecord(pq_ratchet_factory=factory)
    first = alice.encrypt(b"hello", rng, trace)
    bob.decrypt_prekey_message(
        PreKeySignalMessage.deserialize(first.body),
        bob_identity,
        bob_signed,
        None,
        rng,
        trace,
        our_registration_id=7,
        our_kem_pre_key=kyber,
    )
    for i in range(60):
        alice.decrypt(bob.encrypt(b"pong %d" % i, rng, trace).body, rng, trace)
        bob.decrypt(alice.encrypt(b"ping %d" % i, rng, trace).body, rng, trace)
    steps = {event.step for event in events}
    assert {"pqxdh.kem", "pqxdh.kdf", "ratchet.pq_key", "ratchet.pq_epoch"} <= steps
    assert steps <= set(STEP_TITLES)
    text = "\n".join(render(event) for event in events)
    assert "PQXDH: Kyber1024 encapsulation to Bob's Kyber prekey" in text
    assert "PQXDH: Kyber1024 decapsulation with our Kyber prekey" in text
    assert "SPQR: chunk of field 5 (pq_ratchet); SPQR's key mixed in" in text
    assert (
        "SPQR: new epoch, a fresh ML-KEM-768 secret from the braid: direction=decrypt, from=1, to=2" in text
    )
    assert re.search(
        r"spqr_type=\w+, spqr_chunk=\d+, our_spqr_epoch=\d+, our_spqr_state=\w+, pq_key=#[0-9a-f]{8}", text
    )
    for event in events:
        for secret in event.secret.values():
            assert secret.hex()[:16] not in text
