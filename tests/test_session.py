"""SessionRecord: the handshake through PreKeySignalMessages, conversations, archived states and
simultaneous initiation, and a record left byte-for-byte unchanged by every kind of failure."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import DeterministicRng
from parties import Party, established

from e2e.errors import (
    DecodeError,
    DuplicateMessageError,
    E2EError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    NoSessionError,
    StateFormatError,
    TooManySkippedMessagesError,
)
from e2e.explain import Event
from e2e.keys import PublicKey
from e2e.ratchet import Limits
from e2e.session import Ciphertext, SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage, SignalMessage


def test_handshake_prekey_messages_until_a_reply(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1000), Party.create(rng, 2000)
    alice = SessionRecord.initiate(alice_party.identity, 1000, bob_party.bundle(rng), rng)
    assert alice.has_current_state() and alice.has_unacknowledged_prekey_message()
    assert alice.their_identity_key == bob_party.identity.public_key
    assert alice.remote_registration_id == 2000
    first, second = alice.encrypt(b"one", rng), alice.encrypt(b"two", rng)
    assert first.type == second.type == MessageType.PREKEY
    header = PreKeySignalMessage.deserialize(first.body)
    assert (header.registration_id, header.pre_key_id, header.signed_pre_key_id) == (1000, 100, 2001)
    assert header.identity_key == alice_party.identity.public_key

    bob = SessionRecord()
    assert not bob.has_current_state() and bob.their_identity_key is None
    assert bob_party.receive(bob, first, rng) == b"one"
    assert 100 not in bob_party.one_time_pre_keys  # spent
    # The second PreKey message names the spent prekey, but its base key is known: no prekey needed.
    assert bob_party.receive(bob, second, rng) == b"two"
    assert bob.their_identity_key == alice_party.identity.public_key
    assert bob.remote_registration_id == 1000
    assert bob.current_state is not None and bob.current_state.local_registration_id == 2000

    reply = bob.encrypt(b"three", rng)
    assert reply.type == MessageType.WHISPER
    assert alice.decrypt(reply.body, rng) == b"three"
    assert not alice.has_unacknowledged_prekey_message()
    assert alice.encrypt(b"four", rng).type == MessageType.WHISPER


def test_handshake_without_one_time_prekey(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2, one_time=0)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    bob = SessionRecord()
    message = alice.encrypt(b"hi", rng)
    assert PreKeySignalMessage.deserialize(message.body).pre_key_id is None
    assert bob_party.receive(bob, message, rng) == b"hi"


def test_bundle_with_a_bad_signature_starts_nothing(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2)
    bundle = bob_party.bundle(rng)
    forged = type(bundle)(
        **{**{f: getattr(bundle, f) for f in bundle.__slots__}, "signed_pre_key_signature": bytes(64)}
    )
    with pytest.raises(InvalidSignatureError):
        SessionRecord.initiate(alice_party.identity, 1, forged, rng)


def test_long_conversation_with_serialization_between_messages(rng: DeterministicRng) -> None:
    alice, bob = established(rng)
    for number in range(20):
        sender, receiver = (alice, bob) if number % 3 else (bob, alice)
        message = sender.encrypt(b"message %d" % number, rng)
        receiver = SessionRecord.deserialize(receiver.serialize())
        assert receiver.decrypt(message.body, rng) == b"message %d" % number
        if sender is alice:
            bob = receiver
        else:
            alice = receiver
        assert SessionRecord.deserialize(receiver.serialize()).serialize() == receiver.serialize()


def test_late_messages_from_earlier_chains(rng: DeterministicRng) -> None:
    alice, bob = established(rng)
    late = [alice.encrypt(b"late %d" % number, rng) for number in range(3)]
    for _ in range(3):
        bob.decrypt(alice.encrypt(b"ping", rng).body, rng)
        alice.decrypt(bob.encrypt(b"pong", rng).body, rng)
    assert [bob.decrypt(message.body, rng) for message in reversed(late)] == [b"late 2", b"late 1", b"late 0"]


def _assert_unchanged(record: SessionRecord, attempt: Callable[[], object], error: type[E2EError]) -> None:
    before = record.serialize()
    with pytest.raises(error):
        attempt()
    assert record.serialize() == before


def test_every_failure_leaves_the_record_unchanged(rng: DeterministicRng) -> None:
    alice, bob = established(rng, Limits(max_skip=5))
    delivered = alice.encrypt(b"delivered", rng)
    assert bob.decrypt(delivered.body, rng) == b"delivered"
    skipped = [alice.encrypt(b"skipped %d" % number, rng) for number in range(7)]
    bob.decrypt(skipped[1].body, rng)  # Stores the key of skipped[0].
    body = skipped[2].body
    flipped_mac = body[:-1] + bytes((body[-1] ^ 1,))
    flipped_ciphertext = body[:-12] + bytes((body[-12] ^ 1,)) + body[-11:]
    _, stranger = established(DeterministicRng(b"stranger"))
    foreign = stranger.encrypt(b"not for bob", rng)

    _assert_unchanged(bob, lambda: bob.decrypt(flipped_mac, rng), InvalidMessageError)
    _assert_unchanged(bob, lambda: bob.decrypt(flipped_ciphertext, rng), InvalidMessageError)
    _assert_unchanged(bob, lambda: bob.decrypt(delivered.body, rng), DuplicateMessageError)
    _assert_unchanged(bob, lambda: bob.decrypt(skipped[1].body, rng), DuplicateMessageError)
    _assert_unchanged(bob, lambda: bob.decrypt(foreign.body, rng), InvalidMessageError)
    _assert_unchanged(bob, lambda: bob.decrypt(b"\x23" + body[1:], rng), DecodeError)
    _assert_unchanged(bob, lambda: bob.decrypt(body[:20], rng), DecodeError)
    _assert_unchanged(bob, lambda: bob.decrypt(b"garbage", rng), DecodeError)
    _assert_unchanged(bob, lambda: bob.decrypt(b"", rng), DecodeError)
    _assert_unchanged(bob, lambda: bob.decrypt("text", rng), DecodeError)  # type: ignore[arg-type]
    _assert_unchanged(bob, lambda: bob.decrypt(b"\x33" + bytes(300_000), rng), DecodeError)
    # skipped[6] is 4 keys beyond the chain (limit 5); a message 8 beyond would be too many.
    far = [alice.encrypt(b"far %d" % number, rng) for number in range(3)]
    _assert_unchanged(bob, lambda: bob.decrypt(far[2].body, rng), TooManySkippedMessagesError)
    # After all that, every genuine message still decrypts.
    assert bob.decrypt(skipped[0].body, rng) == b"skipped 0"
    assert [bob.decrypt(message.body, rng) for message in skipped[2:]] == [
        b"skipped %d" % n for n in range(2, 7)
    ]
    assert bob.decrypt(far[2].body, rng) == b"far 2"


def test_bad_prekey_messages_leave_the_record_unchanged(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    message = PreKeySignalMessage.deserialize(alice.encrypt(b"hi", rng).body)
    _, existing = established(DeterministicRng(b"bob has another session"))
    wrong_key = Party.create(rng, 9).signed_pre_key
    one_time = bob_party.one_time_pre_keys[100]
    # The inner message's MAC sits just before fields 5 and 6 (4 bytes here): flip its last byte.
    position = len(message.serialized) - 5
    tampered = PreKeySignalMessage.deserialize(
        message.serialized[:position]
        + bytes((message.serialized[position] ^ 1,))
        + message.serialized[position + 1 :]
    )
    for record in (SessionRecord(), existing):
        _assert_unchanged(
            record,
            lambda r=record: r.decrypt_prekey_message(
                message, bob_party.identity, wrong_key, one_time, rng, our_registration_id=2
            ),
            InvalidMessageError,
        )
        _assert_unchanged(
            record,
            lambda r=record: r.decrypt_prekey_message(
                message,
                bob_party.identity,
                bob_party.signed_pre_key,
                bob_party.one_time_pre_keys[101],
                rng,
                our_registration_id=2,
            ),
            InvalidMessageError,
        )
        _assert_unchanged(
            record,
            lambda r=record: r.decrypt_prekey_message(
                tampered, bob_party.identity, bob_party.signed_pre_key, one_time, rng, our_registration_id=2
            ),
            InvalidMessageError,
        )
    bob = SessionRecord()
    assert (
        bob.decrypt_prekey_message(
            message, bob_party.identity, bob_party.signed_pre_key, one_time, rng, our_registration_id=2
        )
        == b"hi"
    )
    # A replay of the same PreKey message is a duplicate, and changes nothing.
    _assert_unchanged(
        bob,
        lambda: bob.decrypt_prekey_message(message, bob_party.identity, None, None, our_registration_id=2),
        DuplicateMessageError,
    )


def test_wrong_types_are_refused(rng: DeterministicRng) -> None:
    alice, bob = established(rng)
    identity = Party.create(rng, 5)
    body = alice.encrypt(b"x", rng).body
    with pytest.raises(TypeError):
        bob.decrypt_prekey_message(
            bytearray(body),  # type: ignore[arg-type]
            identity.identity,
            identity.signed_pre_key,
            None,
            our_registration_id=5,
        )
    with pytest.raises(TypeError):
        bob.decrypt_prekey_message(
            body,
            identity.identity,
            identity.signed_pre_key,
            None,
            our_registration_id=None,  # type: ignore[arg-type]
        )
    with pytest.raises(TypeError):
        alice.encrypt("text", rng)  # type: ignore[arg-type]
    assert bob.decrypt(body, rng) == b"x"


def test_no_session(rng: DeterministicRng) -> None:
    record = SessionRecord()
    with pytest.raises(NoSessionError):
        record.encrypt(b"x", rng)
    alice, _ = established(rng)
    message = alice.encrypt(b"x", rng)
    _assert_unchanged(record, lambda: record.decrypt(message.body, rng), NoSessionError)


def test_simultaneous_initiation_converges(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    bob = SessionRecord.initiate(bob_party.identity, 2, alice_party.bundle(rng), rng)
    from_alice, from_bob = alice.encrypt(b"hi bob", rng), bob.encrypt(b"hi alice", rng)
    assert from_alice.type == from_bob.type == MessageType.PREKEY
    assert bob_party.receive(bob, from_alice, rng) == b"hi bob"
    assert alice_party.receive(alice, from_bob, rng) == b"hi alice"
    assert len(alice.archived_states) == len(bob.archived_states) == 1
    events: list[Event] = []
    for number in range(6):
        sender, receiver, party = (alice, bob, bob_party) if number % 2 == 0 else (bob, alice, alice_party)
        message = sender.encrypt(b"after %d" % number, rng)
        assert party.receive(receiver, message, rng) if message.type == MessageType.PREKEY else True
        if message.type == MessageType.WHISPER:
            assert receiver.decrypt_message(SignalMessage.deserialize(message.body), rng, events.append) == (
                b"after %d" % number
            )
    # Both now use the same pair of states: each side's current state is the other's.
    assert alice.current_state is not None and bob.current_state is not None
    assert alice.current_state.base_key == bob.current_state.base_key
    assert not alice.has_unacknowledged_prekey_message() and not bob.has_unacknowledged_prekey_message()
    assert alice.encrypt(b"x", rng).type == bob.encrypt(b"y", rng).type == MessageType.WHISPER
    assert any(event.step == "session.state_promoted" for event in events)


def test_new_session_archives_the_old_and_old_messages_still_decrypt(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1, one_time=3), Party.create(rng, 2, one_time=3)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    bob = SessionRecord()
    bob_party.receive(bob, alice.encrypt(b"first session", rng), rng)
    late = alice.encrypt(b"late, old session", rng)
    alice.start_session(alice_party.identity, 1, bob_party.bundle(rng), rng)
    assert len(alice.archived_states) == 1
    assert bob_party.receive(bob, alice.encrypt(b"second session", rng), rng) == b"second session"
    assert len(bob.archived_states) == 1
    # The late message belongs to the archived state, which is tried and promoted.
    assert bob_party.receive(bob, late, rng) == b"late, old session"
    assert bob.current_state is not None and bob.current_state.base_key == alice.archived_states[0].base_key


def test_archived_states_are_capped(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2, one_time=0)
    alice = SessionRecord.initiate(
        alice_party.identity, 1, bob_party.bundle(rng), rng, Limits(max_archived_states=2)
    )
    for _ in range(4):
        alice.start_session(alice_party.identity, 1, bob_party.bundle(rng), rng)
    assert len(alice.archived_states) == 2
    alice.archive_current_state()
    assert not alice.has_current_state() and len(alice.archived_states) == 2
    restored = SessionRecord.deserialize(alice.serialize(), Limits(max_archived_states=1))
    assert len(restored.archived_states) == 1


def test_record_format_refusals(rng: DeterministicRng) -> None:
    alice, bob = established(rng)
    # Alice has received Bob's new ratchet key and not answered yet: her sending chain is pending,
    # which only format version 3 can hold; older versions with that field are refused.
    pending = alice.serialize()
    assert pending[:2] == b"S\x03"
    assert SessionRecord.deserialize(pending).serialize() == pending
    for older in (b"S\x01", b"S\x02"):
        with pytest.raises(StateFormatError, match="pending sending chain"):
            SessionRecord.deserialize(older + pending[2:])
    assert bob.decrypt(alice.encrypt(b"answer", rng).body, rng) == b"answer"
    data = alice.serialize()
    assert data[:2] == b"S\x01"
    assert SessionRecord.deserialize(data).serialize() == data
    assert SessionRecord.deserialize(SessionRecord().serialize()).has_current_state() is False
    with pytest.raises(StateFormatError, match="format version 9"):
        SessionRecord.deserialize(b"S\x09" + data[2:])
    with pytest.raises(StateFormatError, match="found a prekey"):
        SessionRecord.deserialize(b"P\x01" + data[2:])
    with pytest.raises(StateFormatError, match="unknown kind"):
        SessionRecord.deserialize(b"Z\x01")
    for length in (0, 1, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(StateFormatError):
            SessionRecord.deserialize(data[:length])
    with pytest.raises(StateFormatError):
        SessionRecord.deserialize(bytearray(data))  # type: ignore[arg-type]


def test_tracing_changes_no_output(rng: DeterministicRng) -> None:
    def conversation(trace: Callable[[Event], None] | None) -> list[bytes]:
        local = DeterministicRng(b"same seed")
        alice_party, bob_party = Party.create(local, 1), Party.create(local, 2)
        alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(local), local, trace=trace)
        bob = SessionRecord()
        outputs = []
        first = alice.encrypt(b"hello", local, trace)
        message = PreKeySignalMessage.deserialize(first.body)
        bob.decrypt_prekey_message(
            message,
            bob_party.identity,
            bob_party.signed_pre_key,
            bob_party.one_time_pre_keys[100],
            local,
            trace,
            our_registration_id=2,
        )
        outputs.append(first.body)
        for number in range(3):
            reply = bob.encrypt(b"r%d" % number, local, trace)
            alice.decrypt(reply.body, local, trace)
            outputs += [reply.body, alice.serialize(), bob.serialize()]
        return outputs

    events: list[Event] = []
    assert conversation(events.append) == conversation(None)
    steps = {event.step for event in events}
    assert {
        "x3dh.dh",
        "ratchet.init",
        "ratchet.dh_step",
        "ratchet.chain_step",
        "ratchet.message_key",
        "ratchet.mac",
        "session.new_state",
    } <= steps
    # Public fields carry no secret: every secret value lives in Event.secret only.
    for event in events:
        for value in event.secret.values():
            assert value.hex() not in repr(event.public)
        assert all(value.hex() not in repr(event) for value in event.secret.values())


def test_mac_failure_is_traced(rng: DeterministicRng) -> None:
    alice, bob = established(rng)
    body = alice.encrypt(b"x", rng).body
    events: list[Event] = []
    with pytest.raises(InvalidMessageError):
        bob.decrypt(body[:-1] + bytes((body[-1] ^ 1,)), rng, events.append)
    assert [event.public["ok"] for event in events if event.step == "ratchet.mac"] == [False]


def test_repr_never_shows_secrets(rng: DeterministicRng) -> None:
    alice, bob = established(rng)
    for record in (alice, bob):
        state = record.current_state
        assert state is not None
        text = repr(record)
        for secret in [
            state.root_key,
            state.sending_chain_key,
            *(c.chain_key for c in state.receiver_chains),
        ]:
            assert secret.hex()[:8] not in text
    ciphertext = alice.encrypt(b"plaintext", rng)
    assert ciphertext.body.hex()[:16] not in repr(ciphertext)
    assert repr(Ciphertext(MessageType.WHISPER, b"abc")) == "Ciphertext(type=WHISPER, body=<3 bytes>)"


def test_repeated_prekey_message_with_another_identity_key_is_refused(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    bob = SessionRecord()
    bob_party.receive(bob, alice.encrypt(b"first", rng), rng)
    second = PreKeySignalMessage.deserialize(alice.encrypt(b"second", rng).body)
    impostor = Party.create(rng, 3).identity.public_key
    forged = PreKeySignalMessage.create(
        second.registration_id,
        second.pre_key_id,
        second.signed_pre_key_id,
        second.base_key,
        impostor,
        second.message,
    )
    _assert_unchanged(
        bob,
        lambda: bob.decrypt_prekey_message(
            forged, bob_party.identity, bob_party.signed_pre_key, None, rng, our_registration_id=2
        ),
        InvalidMessageError,
    )
    assert (
        bob.decrypt_prekey_message(
            second, bob_party.identity, bob_party.signed_pre_key, None, rng, our_registration_id=2
        )
        == b"second"
    )


def test_first_message_with_an_aliased_base_key_is_not_a_new_session(rng: DeterministicRng) -> None:
    """X25519 ignores the top bit of a public key: the same base key with that bit set would be a
    second spelling of the same X3DH, and without a one-time prekey Bob would accept the recorded
    first message again as a new session.  The decoder refuses such keys."""
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2, one_time=0)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    first = alice.encrypt(b"once", rng)
    bob = SessionRecord()
    assert bob_party.receive(bob, first, rng) == b"once"
    base = PreKeySignalMessage.deserialize(first.body).base_key.raw
    aliased = first.body.replace(base, base[:31] + bytes((base[31] | 0x80,)))
    _assert_unchanged(
        bob, lambda: bob_party.receive(bob, Ciphertext(MessageType.PREKEY, aliased), rng), DecodeError
    )
    _assert_unchanged(bob, lambda: bob_party.receive(bob, first, rng), DuplicateMessageError)


def test_low_order_base_key_is_refused_and_changes_nothing(rng: DeterministicRng) -> None:
    alice_party, bob_party = Party.create(rng, 1), Party.create(rng, 2, one_time=0)
    alice = SessionRecord.initiate(alice_party.identity, 1, bob_party.bundle(rng), rng)
    genuine = PreKeySignalMessage.deserialize(alice.encrypt(b"hi", rng).body)
    zero = PreKeySignalMessage.create(
        genuine.registration_id,
        None,
        genuine.signed_pre_key_id,
        PublicKey(bytes(32)),
        genuine.identity_key,
        genuine.message,
    )
    _, bob = established(DeterministicRng(b"an existing session"))
    _assert_unchanged(
        bob,
        lambda: bob.decrypt_prekey_message(
            PreKeySignalMessage.deserialize(zero.serialized),
            bob_party.identity,
            bob_party.signed_pre_key,
            None,
            rng,
            our_registration_id=2,
        ),
        InvalidKeyError,
    )
