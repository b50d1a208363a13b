"""The Double Ratchet state: libsignal's initialization (with its published vector), the KDF chains
against the reference KDF module, limits, eviction, and the unchanged-state guarantee."""

from __future__ import annotations

import pytest
from conftest import DeterministicRng
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from parties import established
from test_x3dh import (
    ALICE_BASE_PRIVATE,
    ALICE_IDENTITY_PRIVATE,
    BOB_IDENTITY_PRIVATE,
    BOB_SIGNED_PRE_KEY_PRIVATE,
    EXPECTED_CHAIN_KEY,
    _bundle,
    _fixed,
    _key,
)

from e2e import protobuf
from e2e.errors import (
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    StateFormatError,
    TooManySkippedMessagesError,
)
from e2e.explain import Event
from e2e.kdf import ChainKey, RootKey
from e2e.keys import KeyPair, PrivateKey, PublicKey, Rng
from e2e.primitives import cbc_decrypt, chain_step, derive_message_keys
from e2e.ratchet import DEFAULT_LIMITS, LAST_COUNTER, Limits, PendingPreKey, RatchetState
from e2e.wire import SignalMessage, encode_signal_message
from e2e.x3dh import initiate, respond


def _libsignal_states(rng: DeterministicRng) -> tuple[RatchetState, RatchetState, KeyPair]:
    """Both sides initialized from libsignal's published X3DH test keys."""
    alice_identity, bob_identity = _key(ALICE_IDENTITY_PRIVATE), _key(BOB_IDENTITY_PRIVATE)
    bob_signed = _key(BOB_SIGNED_PRE_KEY_PRIVATE)
    bundle = _bundle(bob_identity, bob_signed, rng)
    initial, alice_secret = initiate(alice_identity, bundle, _fixed(bytes.fromhex(ALICE_BASE_PRIVATE)))
    bob_secret = respond(bob_identity, bob_signed, None, initial)
    alice_ratchet_private = rng(32)
    alice = RatchetState.initialize_alice(
        alice_secret,
        alice_identity.public_key,
        bob_identity.public_key,
        bob_signed.public_key,
        initial.base_key,
        PendingPreKey(None, 7, initial.base_key),
        1,
        1234,
        _fixed(alice_ratchet_private),
    )
    bob = RatchetState.initialize_bob(
        bob_secret, bob_identity.public_key, alice_identity.public_key, bob_signed, initial.base_key, 1234, 1
    )
    return alice, bob, KeyPair(PrivateKey(alice_ratchet_private))


def test_initialization_matches_libsignal(rng: DeterministicRng) -> None:
    """libsignal ratchet.rs test_ratcheting_session_as_bob / _as_alice: the chain key ab9be50e…031a
    is Bob's first sending chain and Alice's receiving chain for Bob's signed prekey."""
    alice, bob, alice_ratchet = _libsignal_states(rng)
    bob_signed = _key(BOB_SIGNED_PRE_KEY_PRIVATE)
    assert bob.sending_chain_key.hex() == EXPECTED_CHAIN_KEY
    assert bob.sending_ratchet_key == bob_signed.public_key
    assert [(chain.ratchet_key, chain.chain_key.hex()) for chain in alice.receiver_chains] == [
        (bob_signed.public_key, EXPECTED_CHAIN_KEY)
    ]
    # Alice: RK, CKs = KDF_RK(SK.root, DH(her ratchet key, Bob's signed prekey)), via the reference KDF.
    assert alice.sending_ratchet_key == alice_ratchet.public_key
    root = RootKey(bob.root_key)
    expected_root, expected_chain = root.kdf_rk(alice_ratchet.agree(bob_signed.public_key))
    assert (alice.root_key, alice.sending_chain_key) == (expected_root.key, expected_chain.key)


def test_message_keys_follow_the_reference_chain(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    chain = ChainKey(bob.sending_chain_key, 0)
    for counter in range(3):
        serialized = bob.encrypt(b"message %d" % counter, rng)
        message = SignalMessage.deserialize(serialized)
        assert (message.counter, message.previous_counter, message.ratchet_key) == (
            counter,
            0,
            bob.sending_ratchet_key,
        )
        keys = chain.message_keys()
        message.verify_mac(keys.mac_key, bob.local_identity_key, bob.remote_identity_key)
        assert cbc_decrypt(keys.cipher_key, keys.iv, message.ciphertext) == b"message %d" % counter
        assert alice.decrypt(message, rng) == b"message %d" % counter
        chain = chain.next()
    assert bob.sending_chain_key == chain.key


def test_dh_step_as_libsignal(rng: DeterministicRng) -> None:
    """Bob's reception of Alice's first message: KDF_RK twice, a new ratchet key, PN as libsignal."""
    alice, bob, alice_ratchet = _libsignal_states(rng)
    bob_signed = _key(BOB_SIGNED_PRE_KEY_PRIVATE)
    root = RootKey(bob.root_key)
    for _ in range(2):
        bob.encrypt(b"before", rng)  # Bob sends twice on his first chain, so PN becomes 1.
    message = SignalMessage.deserialize(alice.encrypt(b"hi", rng))
    assert bob.decrypt(message, _no_randomness) == b"hi"
    receiving_root, receiving_chain = root.kdf_rk(bob_signed.agree(alice_ratchet.public_key))
    # The receiving half is done and the sending half is due: no key is drawn until Bob sends.
    assert bob.root_key == receiving_root.key
    assert bob.sending_chain_pending
    assert bob.sending_ratchet_key == bob_signed.public_key
    assert bob.receiver_chains[-1].chain_key == receiving_chain.next().key
    new_ratchet = rng(32)
    reply = SignalMessage.deserialize(bob.encrypt(b"reply", _fixed(new_ratchet)))
    new_key = KeyPair(PrivateKey(new_ratchet))
    sending_root, sending_chain = receiving_root.kdf_rk(new_key.agree(alice_ratchet.public_key))
    assert (reply.ratchet_key, reply.counter, reply.previous_counter) == (new_key.public_key, 0, 1)
    assert bob.root_key == sending_root.key
    assert bob.sending_ratchet_key == new_key.public_key
    assert not bob.sending_chain_pending
    assert (bob.sending_chain_key, bob.sending_index, bob.previous_counter) == (
        sending_chain.next().key,
        1,
        1,
    )
    keys = sending_chain.message_keys()
    reply.verify_mac(keys.mac_key, bob.local_identity_key, bob.remote_identity_key)
    assert alice.decrypt(reply, rng) == b"reply"


def _no_randomness(n: int) -> bytes:
    raise AssertionError("decrypt drew randomness")


def test_receives_without_sends_cost_no_key_generation(rng: DeterministicRng) -> None:
    """Messages on a new remote ratchet key draw nothing; the fresh key is drawn by the next send."""
    alice, bob, _ = _libsignal_states(rng)
    assert bob.decrypt(SignalMessage.deserialize(alice.encrypt(b"one", rng)), _no_randomness) == b"one"
    assert bob.decrypt(SignalMessage.deserialize(alice.encrypt(b"two", rng)), _no_randomness) == b"two"
    assert bob.sending_chain_pending
    assert alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"three", rng)), rng) == b"three"
    assert alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"four", rng)), rng) == b"four"
    assert not bob.sending_chain_pending
    assert bob.decrypt(SignalMessage.deserialize(alice.encrypt(b"five", rng)), _no_randomness) == b"five"
    assert alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"six", rng)), rng) == b"six"


def test_pending_sending_chain_survives_storage(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    bob.decrypt(SignalMessage.deserialize(alice.encrypt(b"hi", rng)), rng)
    data = bob.serialize()
    loaded = RatchetState.deserialize(data)
    assert loaded.sending_chain_pending and loaded.serialize() == data
    fresh = rng(32)
    assert loaded.encrypt(b"reply", _fixed(fresh)) == bob.encrypt(b"reply", _fixed(fresh))
    assert loaded.serialize() == bob.serialize()
    assert not RatchetState.deserialize(bob.serialize()).sending_chain_pending
    assert data.count(b"\x88\x01\x01") == 1
    with pytest.raises(StateFormatError, match="only as 1"):
        RatchetState.deserialize(data.replace(b"\x88\x01\x01", b"\x88\x01\x02"))


def test_alice_stops_sending_prekey_after_a_reply(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    assert alice.pending_prekey is not None
    assert alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"reply", rng)), rng) == b"reply"
    assert alice.pending_prekey is None


def _burst(sender: RatchetState, count: int, rng: Rng) -> list[SignalMessage]:
    return [SignalMessage.deserialize(sender.encrypt(b"m%d" % number, rng)) for number in range(count)]


def test_out_of_order_and_skipped_keys_are_used_once(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    messages = _burst(bob, 5, rng)
    events: list[Event] = []
    assert alice.decrypt(messages[4], rng, events.append) == b"m4"
    assert len(alice.skipped) == 4
    assert any(event.step == "ratchet.skipped_keys_stored" for event in events)
    for number in (2, 0, 3, 1):
        assert alice.decrypt(messages[number], rng, events.append) == b"m%d" % number
    assert alice.skipped == {}
    assert sum(event.step == "ratchet.skipped_key_used" for event in events) == 4
    for message in messages:
        with pytest.raises(DuplicateMessageError):
            alice.decrypt(message, rng)


def test_max_skip_per_message(rng: DeterministicRng) -> None:
    alice, bob = (
        state.__class__.deserialize(state.serialize(), Limits(max_skip=3))
        for state in _libsignal_states(rng)[:2]
    )
    messages = _burst(bob, 6, rng)
    before = alice.serialize()
    with pytest.raises(TooManySkippedMessagesError):
        alice.decrypt(messages[4], rng)
    assert alice.serialize() == before
    assert alice.decrypt(messages[3], rng) == b"m3"
    assert alice.decrypt(messages[5], rng) == b"m5"


def test_new_chain_beyond_max_skip_is_refused(rng: DeterministicRng) -> None:
    alice, bob = established(rng, Limits(max_skip=2))
    for _ in range(3):
        alice.encrypt(b"lost", rng)
    late = alice.encrypt(b"fourth", rng)
    with pytest.raises(TooManySkippedMessagesError):
        bob.decrypt(late.body, rng)


def test_stored_skipped_keys_are_capped_oldest_first(rng: DeterministicRng) -> None:
    limits = Limits(max_stored_skipped_keys=3)
    alice, bob = (
        state.__class__.deserialize(state.serialize(), limits) for state in _libsignal_states(rng)[:2]
    )
    messages = _burst(bob, 6, rng)
    assert alice.decrypt(messages[5], rng) == b"m5"
    assert sorted(counter for _, counter in alice.skipped) == [2, 3, 4]
    for number in (0, 1):
        with pytest.raises(DuplicateMessageError):
            alice.decrypt(messages[number], rng)
    assert [alice.decrypt(messages[number], rng) for number in (2, 3, 4)] == [b"m2", b"m3", b"m4"]


def test_receiver_chains_are_capped(rng: DeterministicRng) -> None:
    limits = Limits(max_receiver_chains=2)
    alice, bob = established(rng, limits)
    state = alice.current_state
    assert state is not None
    late = []
    for round_number in range(4):
        late.append(bob.encrypt(b"late %d" % round_number, rng))
        bob.decrypt(alice.encrypt(b"ping", rng).body, rng)
        alice.decrypt(bob.encrypt(b"pong", rng).body, rng)
    assert len(state.receiver_chains) == 2
    # A late message on a dropped chain is no longer decryptable; one on a kept chain is.
    with pytest.raises(InvalidMessageError):
        alice.decrypt(late[0].body, rng)
    assert alice.decrypt(late[3].body, rng) == b"late 3"


def test_failed_key_generation_leaves_the_state_unchanged(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    assert bob.decrypt(SignalMessage.deserialize(alice.encrypt(b"hi", rng)), rng) == b"hi"
    before = bob.serialize()

    def broken_rng(n: int) -> bytes:
        return b"short"

    # The fresh ratchet key of the DH step is drawn by the first send after it.
    with pytest.raises(InvalidKeyError):
        bob.encrypt(b"reply", broken_rng)
    assert bob.serialize() == before
    assert alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"reply", rng)), rng) == b"reply"


def test_low_order_ratchet_key_is_an_invalid_message(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    genuine = SignalMessage.deserialize(alice.encrypt(b"hi", rng))
    zero_key = SignalMessage.create(
        bytes(32), alice.local_identity_key, alice.remote_identity_key, PublicKey(bytes(32)), 0, 0, bytes(16)
    )
    before = bob.serialize()
    with pytest.raises(InvalidMessageError, match="ratchet key"):
        bob.decrypt(zero_key, rng)
    assert bob.serialize() == before
    assert bob.decrypt(genuine, rng) == b"hi"


def test_encrypt_refuses_what_does_not_fit(rng: DeterministicRng) -> None:
    alice, _, _ = _libsignal_states(rng)
    with pytest.raises(TypeError):
        alice.encrypt("text", rng)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        alice.encrypt(bytes(256 * 1024), rng)


def test_state_round_trip_and_refusals(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    _burst(bob, 3, rng)
    alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"x", rng)), rng)
    for state in (alice, bob):
        data = state.serialize()
        assert RatchetState.deserialize(data).serialize() == data
    data = alice.serialize()
    with pytest.raises(StateFormatError, match="session version 2"):
        RatchetState.deserialize(b"\x08\x02" + data[2:])
    with pytest.raises(StateFormatError):
        RatchetState.deserialize(data[:-5])
    with pytest.raises(StateFormatError):
        RatchetState.deserialize(b"garbage")


@pytest.mark.parametrize(
    "bad",
    [
        {"max_skip": -1},
        {"max_stored_skipped_keys": -5},
        {"max_receiver_chains": 0},
        {"max_archived_states": 1.5},
    ],
)
def test_limits_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Limits(**bad)  # type: ignore[arg-type]
    assert Limits() == DEFAULT_LIMITS


def test_repr_never_shows_secrets(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    bob.encrypt(b"x", rng)
    alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"y", rng)), rng)
    for state in (alice, bob):
        text = repr(state) + "".join(repr(chain) for chain in state.receiver_chains)
        secrets = [state.root_key, state.sending_chain_key, *(c.chain_key for c in state.receiver_chains)]
        secrets += list(state.skipped.values())
        secrets.append(state.serialize()[state.serialize().index(b"\x2a\x20") + 2 :][:32])  # the private key
        for secret in secrets:
            assert secret.hex() not in text
            assert secret.hex()[:8] not in text


def test_counter_beyond_the_last_is_refused(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    forged = SignalMessage.create(
        bytes(32),
        bob.local_identity_key,
        bob.remote_identity_key,
        bob.sending_ratchet_key,
        2**32 - 1,
        0,
        bytes(16),
    )
    before = alice.serialize()
    with pytest.raises(InvalidMessageError, match="beyond the last"):
        alice.decrypt(forged, rng)
    assert alice.serialize() == before
    assert LAST_COUNTER == 2**32 - 2


def test_bad_padding_after_a_good_mac_leaves_the_state_unchanged(rng: DeterministicRng) -> None:
    """A sender holding the keys (so the MAC verifies) but padding wrongly: refused, nothing kept."""
    alice, bob, _ = _libsignal_states(rng)
    seed, _ = chain_step(bob.sending_chain_key)
    keys = derive_message_keys(seed)
    encryptor = Cipher(algorithms.AES(keys[:32]), modes.CBC(keys[64:])).encryptor()
    unpadded = encryptor.update(b"sixteen bytes!!!" + bytes(15) + b"\x07") + encryptor.finalize()
    data = encode_signal_message(
        keys[32:64],
        bob.local_identity_key.serialize() + bob.remote_identity_key.serialize(),
        bob.sending_ratchet_key.serialize(),
        0,
        0,
        unpadded,
    )
    events: list[Event] = []
    before = alice.serialize()
    with pytest.raises(InvalidMessageError, match="padding"):
        alice.decrypt(SignalMessage.deserialize(data), rng, events.append)
    assert alice.serialize() == before
    assert [event.public["ok"] for event in events if event.step == "ratchet.mac"] == [True]
    assert alice.decrypt(SignalMessage.deserialize(bob.encrypt(b"proper", rng)), rng) == b"proper"


def test_skipped_keys_of_several_messages_evict_the_oldest(rng: DeterministicRng) -> None:
    limits = Limits(max_stored_skipped_keys=3)
    alice, bob = (
        state.__class__.deserialize(state.serialize(), limits) for state in _libsignal_states(rng)[:2]
    )
    messages = _burst(bob, 6, rng)
    assert alice.decrypt(messages[2], rng) == b"m2"  # stores the keys of 0 and 1
    assert alice.decrypt(messages[5], rng) == b"m5"  # stores 3 and 4, evicting 0
    assert sorted(counter for _, counter in alice.skipped) == [1, 3, 4]
    with pytest.raises(DuplicateMessageError):
        alice.decrypt(messages[0], rng)
    assert [alice.decrypt(messages[number], rng) for number in (1, 3, 4)] == [b"m1", b"m3", b"m4"]


def test_loading_with_lower_limits_keeps_the_newest(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    messages = _burst(bob, 5, rng)
    alice.decrypt(messages[4], rng)
    restored = RatchetState.deserialize(alice.serialize(), Limits(max_stored_skipped_keys=2))
    assert sorted(counter for _, counter in restored.skipped) == [2, 3]


def _packed_field(state: RatchetState, number: int) -> tuple[int, int]:
    """Where field ``number`` (a packed LEN field of the state) starts and ends in serialize()."""
    data = state.serialize()
    position = 0
    while True:
        tag, after_tag = protobuf.decode_varint(data, position, len(data))
        if tag & 7 == protobuf.VARINT:
            _, position = protobuf.decode_varint(data, after_tag, len(data))
            continue
        length, start = protobuf.decode_varint(data, after_tag, len(data))
        if tag >> 3 == number:
            return position, start + length
        position = start + length


def test_malformed_states_are_refused(rng: DeterministicRng) -> None:
    alice, bob, _ = _libsignal_states(rng)
    messages = _burst(bob, 3, rng)
    alice.decrypt(messages[2], rng)
    data = alice.serialize()
    start, end = _packed_field(alice, 11)
    skipped = data[start:end][2:]  # the two skipped keys, 68 bytes each, after tag and length
    doubled = protobuf.encode_bytes_field(11, skipped[:68] * 2)
    with pytest.raises(StateFormatError, match="stored twice"):
        RatchetState.deserialize(data[:start] + doubled + data[end:])
    odd = protobuf.encode_bytes_field(11, skipped[:67])
    with pytest.raises(StateFormatError, match="wrong length"):
        RatchetState.deserialize(data[:start] + odd + data[end:])
    start, end = _packed_field(alice, 4)
    with pytest.raises(StateFormatError, match="root key is not 32 bytes"):
        RatchetState.deserialize(data[:start] + protobuf.encode_bytes_field(4, bytes(31)) + data[end:])
