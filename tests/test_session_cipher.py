"""The store API: SessionBuilder and SessionCipher over the store protocols, with the in-memory store.

* an outside harness drives a whole conversation in about twenty lines (the same code as
  docs/store-api.md shows);
* both message types decrypt from bytes with their explicit type, or from a Ciphertext; the type
  is never guessed;
* one-time prekeys (EC and KEM) are consumed only after a message decrypted, a last-resort KEM
  prekey is kept, and a repeated PreKey message needs no prekey at all;
* trust on first use: a changed identity raises UntrustedIdentityError, for bundles, PreKey
  messages, SignalMessages of an archived state and sends;
* every failed call leaves every store exactly as it was (a snapshot of all of it compared);
* a hypothesis run with loss, reorder and duplication through the cipher.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DeterministicRng
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e import (
    Ciphertext,
    DecodeError,
    Direction,
    DowngradeError,
    DuplicateMessageError,
    E2EError,
    InMemoryProtocolStore,
    InvalidMessageError,
    InvalidSignatureError,
    KemKeyPair,
    KemPreKeyRecord,
    KeyPair,
    MessageType,
    NoSessionError,
    PreKeyRecord,
    ProtocolAddress,
    ProtocolStore,
    SessionBuilder,
    SessionCipher,
    SignedPreKeyRecord,
    UnknownPreKeyError,
    UntrustedIdentityError,
    make_pre_key_bundle,
)
from e2e.keys import Rng

FUZZ_SCALE = int(os.environ.get("E2E_FUZZ_SCALE", "1"))
ALICE, BOB = ProtocolAddress("alice", 1), ProtocolAddress("bob", 1)


def test_an_outside_harness_drives_a_conversation_in_twenty_lines() -> None:
    # The code of docs/store-api.md, line for line.
    rng = os.urandom
    alice = InMemoryProtocolStore(KeyPair.generate(rng), registration_id=1)
    bob = InMemoryProtocolStore(KeyPair.generate(rng), registration_id=2)
    signed = KeyPair.generate(rng)
    signature = bob.get_identity_key_pair().sign(signed.public_key.serialize(), rng)
    bob.store_signed_pre_key(SignedPreKeyRecord(1, signed, signature, timestamp=0))
    bob.store_pre_key(PreKeyRecord(7, KeyPair.generate(rng)))
    bundle = make_pre_key_bundle(bob, device_id=1, signed_pre_key_id=1, pre_key_id=7)

    alice_address, bob_address = ProtocolAddress("alice", 1), ProtocolAddress("bob", 1)
    SessionBuilder(alice, bob_address).process_pre_key_bundle(bundle, rng)
    to_bob, to_alice = SessionCipher(alice, bob_address), SessionCipher(bob, alice_address)

    first = to_bob.encrypt(b"hello bob", rng)  # a PreKeySignalMessage (type 3)
    assert to_alice.decrypt(first.body, first.type) == b"hello bob"
    assert bob.pre_key_ids() == []  # the one-time prekey is spent
    reply = to_alice.encrypt(b"hello alice", rng)  # a SignalMessage (type 2)
    assert to_bob.decrypt(reply.body, 2) == b"hello alice"
    for number in range(3):
        message = to_bob.encrypt(b"message %d" % number, rng)
        assert message.type == MessageType.WHISPER
        assert to_alice.decrypt(message) == b"message %d" % number


def test_the_documented_harness_is_this_test_and_runs() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "store-api.md").read_text(encoding="utf-8")
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    _, code = block.split("\n\n", 1)
    ours = [
        line.strip()
        for line in inspect.getsource(
            test_an_outside_harness_drives_a_conversation_in_twenty_lines
        ).splitlines()
    ]
    documented = [line.strip() for line in code.splitlines() if line.strip()]
    assert documented == [line for line in ours if line and line in documented]
    assert len(documented) <= 22
    exec(compile(block, "docs/store-api.md", "exec"), {})


# -- helpers ----------------------------------------------------------------------------------


class Device:
    """A device of the tests: a store with a signed prekey, one-time prekeys and KEM prekeys."""

    def __init__(self, rng: Rng, registration_id: int, *, kem: bool = False) -> None:
        self.rng = rng
        self.store = InMemoryProtocolStore(KeyPair.generate(rng), registration_id)
        self.add_signed_pre_key(1)
        for pre_key_id in (100, 101, 102):
            self.store.store_pre_key(PreKeyRecord(pre_key_id, KeyPair.generate(rng)))
        if kem:
            self.add_kem_pre_key(200, last_resort=False)
            self.add_kem_pre_key(500, last_resort=True)

    @property
    def identity(self) -> KeyPair:
        return self.store.get_identity_key_pair()

    def add_signed_pre_key(self, signed_pre_key_id: int) -> None:
        key_pair = KeyPair.generate(self.rng)
        signature = self.identity.sign(key_pair.public_key.serialize(), self.rng)
        self.store.store_signed_pre_key(SignedPreKeyRecord(signed_pre_key_id, key_pair, signature, 0))

    def add_kem_pre_key(self, kem_pre_key_id: int, *, last_resort: bool) -> None:
        key_pair = KemKeyPair.generate(self.rng)
        signature = self.identity.sign(key_pair.public_key.serialize(), self.rng)
        record = KemPreKeyRecord(kem_pre_key_id, key_pair, signature, 0, last_resort)
        self.store.store_kem_pre_key(record)


def snapshot(store: InMemoryProtocolStore) -> tuple[object, ...]:
    """Everything the store holds, in comparable form."""
    return (
        store.pre_key_ids(),
        store.signed_pre_key_ids(),
        store.kem_pre_key_ids(),
        [(address, store.get_identity(address)) for address in store.identity_addresses()],
        [(address, store.load_session(address).serialize()) for address in store.session_addresses()],  # type: ignore[union-attr]
    )


def assert_unchanged(
    stores: list[InMemoryProtocolStore], call: Callable[[], object], error: type[Exception]
) -> None:
    before = [snapshot(store) for store in stores]
    with pytest.raises(error):
        call()
    assert [snapshot(store) for store in stores] == before


def pair(
    rng: Rng, *, kem: bool = False, pre_key_id: int | None = 100
) -> tuple[Device, Device, SessionCipher, SessionCipher]:
    """Alice with a session built from Bob's bundle; the two ciphers (to Bob, to Alice)."""
    alice, bob = Device(rng, 1), Device(rng, 2, kem=kem)
    bundle = make_pre_key_bundle(
        bob.store, 1, signed_pre_key_id=1, pre_key_id=pre_key_id, kem_pre_key_id=200 if kem else None
    )
    SessionBuilder(alice.store, BOB).process_pre_key_bundle(bundle, rng)
    return alice, bob, SessionCipher(alice.store, BOB), SessionCipher(bob.store, ALICE)


# -- message types -----------------------------------------------------------------------------


def test_both_message_types_from_bytes_or_ciphertext(rng: DeterministicRng) -> None:
    _, _, to_bob, to_alice = pair(rng)
    first = to_bob.encrypt(b"one", rng)
    assert first.type == MessageType.PREKEY
    assert to_alice.decrypt(first.body, int(first.type)) == b"one"
    reply = to_alice.encrypt(b"two", rng)
    assert reply.type == MessageType.WHISPER
    assert to_bob.decrypt(reply, MessageType.WHISPER) == b"two"
    assert to_alice.decrypt(to_bob.encrypt(b"three", rng)) == b"three"


def test_the_message_type_is_never_guessed(rng: DeterministicRng) -> None:
    alice, bob, to_bob, to_alice = pair(rng)
    first = to_bob.encrypt(b"one", rng)
    stores = [alice.store, bob.store]
    assert_unchanged(stores, lambda: to_alice.decrypt(first.body), TypeError)
    assert_unchanged(stores, lambda: to_alice.decrypt(first.body, 7), DecodeError)
    assert_unchanged(stores, lambda: to_alice.decrypt(first.body, True), TypeError)
    assert_unchanged(stores, lambda: to_alice.decrypt(first, MessageType.WHISPER), ValueError)
    assert_unchanged(stores, lambda: to_alice.decrypt(bytearray(first.body), 3), TypeError)  # type: ignore[arg-type]
    # A PreKey message given as a SignalMessage does not parse as one.
    assert_unchanged(stores, lambda: to_alice.decrypt(first.body, MessageType.WHISPER), E2EError)
    assert_unchanged(stores, lambda: to_alice.decrypt(Ciphertext(7, first.body)), DecodeError)  # type: ignore[arg-type]
    assert to_alice.decrypt(Ciphertext(3, first.body)) == b"one"  # type: ignore[arg-type]


# -- prekeys -----------------------------------------------------------------------------------


def test_one_time_prekey_consumed_only_after_success(rng: DeterministicRng) -> None:
    alice, bob, to_bob, to_alice = pair(rng)
    first = to_bob.encrypt(b"hi", rng)
    tampered = first.body[:-10] + bytes([first.body[-10] ^ 1]) + first.body[-9:]
    assert_unchanged([alice.store, bob.store], lambda: to_alice.decrypt(tampered, 3), InvalidMessageError)
    assert 100 in bob.store.pre_key_ids() and bob.store.session_addresses() == []
    assert to_alice.decrypt(first) == b"hi"
    assert bob.store.pre_key_ids() == [101, 102]
    assert bob.store.get_identity(ALICE) == alice.identity.public_key


def test_a_repeated_prekey_message_needs_no_prekey(rng: DeterministicRng) -> None:
    alice, bob, to_bob, to_alice = pair(rng)
    first, second = to_bob.encrypt(b"first", rng), to_bob.encrypt(b"second", rng)
    assert first.type == second.type == MessageType.PREKEY
    assert to_alice.decrypt(first) == b"first"
    # Bob rotates his signed prekey away; the one-time prekey is spent already.
    bob.store.remove_signed_pre_key(1)
    assert to_alice.decrypt(second) == b"second"
    assert_unchanged([alice.store, bob.store], lambda: to_alice.decrypt(second), DuplicateMessageError)


def test_unknown_prekeys_are_typed_and_change_nothing(rng: DeterministicRng) -> None:
    for missing in ("signed", "one-time", "KEM"):
        local = DeterministicRng(missing.encode())
        alice, bob, to_bob, to_alice = pair(local, kem=True)
        first = to_bob.encrypt(b"hi", local)
        if missing == "signed":
            bob.store.remove_signed_pre_key(1)
        elif missing == "one-time":
            bob.store.remove_pre_key(100)
        else:
            bob.store.remove_kem_pre_key(200)
        before = [snapshot(alice.store), snapshot(bob.store)]
        with pytest.raises(UnknownPreKeyError) as raised:
            to_alice.decrypt(first)
        assert raised.value.kind.startswith(missing) and isinstance(raised.value, InvalidMessageError)
        assert [snapshot(alice.store), snapshot(bob.store)] == before
    with pytest.raises(UnknownPreKeyError):
        make_pre_key_bundle(bob.store, 1, signed_pre_key_id=9)
    with pytest.raises(UnknownPreKeyError):
        make_pre_key_bundle(bob.store, 1, signed_pre_key_id=1, pre_key_id=999)
    with pytest.raises(UnknownPreKeyError):
        make_pre_key_bundle(bob.store, 1, signed_pre_key_id=1, kem_pre_key_id=999)


def test_kem_prekeys_one_time_consumed_last_resort_kept(rng: DeterministicRng) -> None:
    _, bob, to_bob, to_alice = pair(rng, kem=True)
    first = to_bob.encrypt(b"pq", rng)
    assert to_alice.decrypt(first) == b"pq"
    assert bob.store.kem_pre_key_ids() == [500] and bob.store.pre_key_ids() == [101, 102]
    # A second device of Alice's gets the last-resort KEM prekey: it stays after use.
    carol = Device(rng, 3)
    bundle = make_pre_key_bundle(bob.store, 1, signed_pre_key_id=1, pre_key_id=101, kem_pre_key_id=500)
    carol_address = ProtocolAddress("carol", 1)
    SessionBuilder(carol.store, BOB).process_pre_key_bundle(bundle, rng)
    message = SessionCipher(carol.store, BOB).encrypt(b"last resort", rng)
    assert SessionCipher(bob.store, carol_address).decrypt(message) == b"last resort"
    assert bob.store.kem_pre_key_ids() == [500] and bob.store.pre_key_ids() == [102]


def test_require_pqxdh_refuses_x3dh_and_changes_nothing(rng: DeterministicRng) -> None:
    alice, bob, to_bob, _ = pair(rng)
    first = to_bob.encrypt(b"classic", rng)
    strict = SessionCipher(bob.store, ALICE, require_pqxdh=True)
    assert_unchanged([alice.store, bob.store], lambda: strict.decrypt(first), DowngradeError)


# -- trust -------------------------------------------------------------------------------------


def test_a_changed_identity_in_a_prekey_message_is_untrusted(rng: DeterministicRng) -> None:
    _, bob, to_bob, to_alice = pair(rng)
    assert to_alice.decrypt(to_bob.encrypt(b"first", rng)) == b"first"
    # Alice reinstalls: a new identity at the same address, and a new session from a new bundle.
    reinstalled = Device(rng, 1)
    bundle = make_pre_key_bundle(bob.store, 1, signed_pre_key_id=1, pre_key_id=101)
    SessionBuilder(reinstalled.store, BOB).process_pre_key_bundle(bundle, rng)
    message = SessionCipher(reinstalled.store, BOB).encrypt(b"it's me", rng)
    before = snapshot(bob.store)
    with pytest.raises(UntrustedIdentityError) as raised:
        to_alice.decrypt(message)
    assert raised.value.address == ALICE and raised.value.identity_key == reinstalled.identity.public_key
    assert snapshot(bob.store) == before
    # The user compares safety numbers and accepts the new key: the held message decrypts.
    assert bob.store.save_identity(ALICE, reinstalled.identity.public_key) is True
    assert to_alice.decrypt(message) == b"it's me"
    assert 101 not in bob.store.pre_key_ids()


def test_a_late_message_of_an_untrusted_archived_state_is_refused(rng: DeterministicRng) -> None:
    _, bob, to_bob, to_alice = pair(rng)
    assert to_alice.decrypt(to_bob.encrypt(b"first", rng)) == b"first"
    assert to_bob.decrypt(to_alice.encrypt(b"reply", rng)) == b"reply"
    late = to_bob.encrypt(b"late, from the old identity", rng)
    reinstalled = Device(rng, 1)
    bundle = make_pre_key_bundle(bob.store, 1, signed_pre_key_id=1, pre_key_id=101)
    SessionBuilder(reinstalled.store, BOB).process_pre_key_bundle(bundle, rng)
    new_cipher = SessionCipher(reinstalled.store, BOB)
    bob.store.save_identity(ALICE, reinstalled.identity.public_key)
    assert to_alice.decrypt(new_cipher.encrypt(b"new", rng)) == b"new"
    # Bob's record now holds the new state (trusted) and the old one (no longer trusted).
    assert_unchanged([bob.store], lambda: to_alice.decrypt(late), UntrustedIdentityError)
    assert to_alice.decrypt(new_cipher.encrypt(b"newer", rng)) == b"newer"
    assert new_cipher.decrypt(to_alice.encrypt(b"answer", rng)) == b"answer"


def test_the_builder_checks_signatures_and_trust_first(rng: DeterministicRng) -> None:
    alice, bob = Device(rng, 1), Device(rng, 2)
    bundle = make_pre_key_bundle(bob.store, 1, signed_pre_key_id=1, pre_key_id=100)
    forged = replace(bundle, signed_pre_key_signature=bytes(64))
    builder = SessionBuilder(alice.store, BOB)
    assert_unchanged(
        [alice.store], lambda: builder.process_pre_key_bundle(forged, rng), InvalidSignatureError
    )
    alice.store.save_identity(BOB, Device(rng, 9).identity.public_key)
    assert_unchanged(
        [alice.store], lambda: builder.process_pre_key_bundle(bundle, rng), UntrustedIdentityError
    )
    assert not SessionCipher(alice.store, BOB).has_session()


def test_encrypt_checks_trust_and_needs_a_session(rng: DeterministicRng) -> None:
    alice, bob, to_bob, _ = pair(rng)
    assert to_bob.has_session()
    assert_unchanged([bob.store], lambda: SessionCipher(bob.store, ALICE).encrypt(b"x", rng), NoSessionError)
    assert_unchanged([alice.store], lambda: to_bob.encrypt("text", rng), TypeError)  # type: ignore[arg-type]
    alice.store.save_identity(BOB, Device(rng, 9).identity.public_key)
    assert_unchanged([alice.store], lambda: to_bob.encrypt(b"x", rng), UntrustedIdentityError)


def test_whisper_without_session(rng: DeterministicRng) -> None:
    _, bob, _, _ = pair(rng)
    reply_cipher = SessionCipher(bob.store, ProtocolAddress("nobody", 1))
    assert_unchanged([bob.store], lambda: reply_cipher.decrypt(b"\x33" + bytes(40), 2), NoSessionError)


# -- every failure leaves every store as it was ------------------------------------------------


def test_every_damaged_message_leaves_every_store_unchanged() -> None:
    def fresh() -> tuple[list[InMemoryProtocolStore], SessionCipher, SessionCipher, Ciphertext]:
        # The same seed gives the same keys and the same first message every time.
        rng = DeterministicRng(b"damage")
        alice, bob, to_bob, to_alice = pair(rng, kem=True)
        return [alice.store, bob.store], to_bob, to_alice, to_bob.encrypt(b"first", rng)

    stores, to_bob, to_alice, first = fresh()
    for position in range(0, len(first.body), 61):
        damaged = first.body[:position] + bytes([first.body[position] ^ 0x04]) + first.body[position + 1 :]
        before = [snapshot(store) for store in stores]
        try:
            plaintext = to_alice.decrypt(damaged, 3)
        except E2EError:
            assert [snapshot(store) for store in stores] == before
        else:
            # Only the registration id is not authenticated by the format (test_session_properties).
            assert plaintext == b"first"
            stores, to_bob, to_alice, first = fresh()
    for cut in (0, 1, 10, len(first.body) - 1):
        assert_unchanged(stores, lambda cut=cut: to_alice.decrypt(first.body[:cut], 3), E2EError)
    assert to_alice.decrypt(first) == b"first"
    rng = DeterministicRng(b"replies")
    reply = to_alice.encrypt(b"reply", rng)
    for cut in (0, 1, 10, len(reply.body) - 1):
        assert_unchanged(stores, lambda cut=cut: to_bob.decrypt(reply.body[:cut], 2), E2EError)
    flipped = reply.body[:-1] + bytes([reply.body[-1] ^ 1])
    assert_unchanged(stores, lambda: to_bob.decrypt(flipped, 2), InvalidMessageError)
    assert to_bob.decrypt(reply) == b"reply"
    assert_unchanged(stores, lambda: to_bob.decrypt(reply), DuplicateMessageError)


# -- values and their checks -------------------------------------------------------------------


def test_the_registration_id_is_required_and_checked(rng: DeterministicRng) -> None:
    identity = KeyPair.generate(rng)
    with pytest.raises(TypeError):
        InMemoryProtocolStore(identity)  # type: ignore[call-arg]
    for bad in (-1, 1 << 32, True, None, "1"):
        with pytest.raises(ValueError):
            InMemoryProtocolStore(identity, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        InMemoryProtocolStore(b"not a key pair", 1)  # type: ignore[arg-type]
    assert InMemoryProtocolStore(identity, 0).get_local_registration_id() == 0


def test_addresses_are_values_and_serve_as_sender_key_names() -> None:
    address = ProtocolAddress("alice", 2)
    assert str(address) == "alice.2" and address == ProtocolAddress("alice", 2)
    distribution = uuid.UUID(int=1)
    sender_keys = {(address, distribution): b"state"}
    assert sender_keys[(ProtocolAddress("alice", 2), uuid.UUID(int=1))] == b"state"
    assert sorted([ProtocolAddress("b", 1), ProtocolAddress("a", 2)])[0].name == "a"
    for name, device_id in (("", 1), (b"alice", 1), ("alice", -1), ("alice", 1 << 32), ("alice", True)):
        with pytest.raises(ValueError):
            ProtocolAddress(name, device_id)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SessionCipher(InMemoryProtocolStore(KeyPair.generate(os.urandom), 1), ("alice", 1))  # type: ignore[arg-type]


def test_repr_redacts_secrets(rng: DeterministicRng) -> None:
    alice, bob, to_bob, to_alice = pair(rng, kem=True)
    to_alice.decrypt(to_bob.encrypt(b"secret", rng))
    for store in (alice.store, bob.store):
        text = repr(store)
        assert store.get_identity_key_pair().private_key.serialize().hex() not in text
        assert "secret" not in text
    signed = bob.store.load_signed_pre_key(1)
    assert signed is not None and signed.key_pair.private_key.serialize().hex() not in repr(bob.store)


def test_the_in_memory_store_satisfies_the_protocol(rng: DeterministicRng) -> None:
    store: ProtocolStore = InMemoryProtocolStore(KeyPair.generate(rng), 5)
    key = KeyPair.generate(rng).public_key
    store.check_trusted_identity(ALICE, key, Direction.RECEIVING)  # first use: trusted
    assert store.save_identity(ALICE, key) is False and store.get_identity(ALICE) == key
    store.check_trusted_identity(ALICE, key, Direction.SENDING)
    with pytest.raises(UntrustedIdentityError):
        store.check_trusted_identity(ALICE, KeyPair.generate(rng).public_key, Direction.SENDING)
    store.remove_pre_key(12345)
    store.remove_kem_pre_key(12345)
    assert store.load_session(ALICE) is None and store.load_pre_key(1) is None


# -- loss, reorder, duplication ----------------------------------------------------------------


@settings(max_examples=25 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "deliver", "drop", "again"]), st.integers(0, 9)), max_size=40
    )
)
def test_loss_reorder_and_duplication_through_the_cipher(steps: list[tuple[str, int]]) -> None:
    rng = DeterministicRng(b"store api schedules")
    alice, bob, to_bob, to_alice = pair(rng)
    ciphers = {"a": to_bob, "b": to_alice}
    receivers = {"a": to_alice, "b": to_bob}
    in_flight: list[tuple[str, Ciphertext, bytes]] = []
    delivered: list[tuple[str, Ciphertext]] = []
    bob_heard = False
    for action, number in steps:
        if action in ("a", "b"):
            if action == "b" and not bob_heard:
                continue
            plaintext = b"%s %d %d" % (action.encode(), number, len(in_flight))
            in_flight.append((action, ciphers[action].encrypt(plaintext, rng), plaintext))
        elif in_flight and action in ("deliver", "drop"):
            sender, ciphertext, plaintext = in_flight.pop(number % len(in_flight))
            if action == "deliver":
                assert receivers[sender].decrypt(ciphertext) == plaintext
                delivered.append((sender, ciphertext))
                bob_heard = bob_heard or sender == "a"
        elif delivered and action == "again":
            sender, ciphertext = delivered[number % len(delivered)]
            assert_unchanged(
                [alice.store, bob.store],
                lambda r=receivers[sender], c=ciphertext: r.decrypt(c),
                DuplicateMessageError,
            )
