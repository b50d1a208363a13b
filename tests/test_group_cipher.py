"""The group cipher: members following senders through loss, reordering and rotation; every bad input
refused with a typed error and the store left exactly as it was; hypothesis properties over delivery
orders and bit flips."""

from __future__ import annotations

import os
import uuid

import pytest
from conftest import DeterministicRng
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e.errors import (
    DecodeError,
    DistributionMismatchError,
    DuplicateMessageError,
    E2EError,
    InvalidMessageError,
    InvalidSignatureError,
    NoSenderKeyError,
    TooManySkippedMessagesError,
)
from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore, SenderKeyName
from e2e.keys import KeyPair
from e2e.primitives import cbc_encrypt
from e2e.sender_key_messages import SenderKeyDistributionMessage, SenderKeyFraming, SenderKeyMessage
from e2e.sender_key_state import MAX_FORWARD_JUMPS, SenderKeyRecord

GROUP = uuid.UUID("6a0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
OTHER_GROUP = uuid.UUID("00000000-0000-4000-8000-000000000001")
ALICE = SenderKeyName("alice", 1, GROUP)
# `make fuzz` raises E2E_FUZZ_SCALE for a long run; `make test` runs the bounded default.
FUZZ_SCALE = int(os.environ.get("E2E_FUZZ_SCALE", "1"))


class Member:
    """One member's device: a store and a cipher."""

    def __init__(self, framing: SenderKeyFraming = SenderKeyFraming.LIBSIGNAL) -> None:
        self.store = InMemorySenderKeyStore()
        self.cipher = GroupCipher(self.store, framing)

    def snapshot(self, name: SenderKeyName) -> bytes | None:
        return self.store.serialized(name)


def _pair(
    rng: DeterministicRng, framing: SenderKeyFraming = SenderKeyFraming.LIBSIGNAL
) -> tuple[Member, Member, bytes]:
    alice, bob = Member(framing), Member(framing)
    distribution = alice.cipher.create_distribution_message(ALICE, rng).serialize()
    bob.cipher.process_distribution_message(ALICE, distribution)
    return alice, bob, distribution


@pytest.mark.parametrize("framing", list(SenderKeyFraming))
def test_a_group_of_four_in_order_and_out_of_order(rng: DeterministicRng, framing: SenderKeyFraming) -> None:
    alice = Member(framing)
    members = [Member(framing) for _ in range(3)]
    distribution = alice.cipher.create_distribution_message(ALICE, rng).serialize()
    for member in members:
        member.cipher.process_distribution_message(ALICE, distribution)
    messages = [alice.cipher.encrypt(ALICE, b"message %d" % number, rng) for number in range(10)]
    orders = [list(range(10)), list(reversed(range(10))), [3, 0, 9, 1, 2, 8, 4, 7, 5, 6]]
    for member, order in zip(members, orders, strict=True):
        for number in order:
            assert member.cipher.decrypt(ALICE, messages[number]) == b"message %d" % number


def test_one_ciphertext_for_everyone(rng: DeterministicRng) -> None:
    alice, bob, distribution = _pair(rng)
    carol = Member()
    carol.cipher.process_distribution_message(ALICE, distribution)
    message = alice.cipher.encrypt(ALICE, b"hi all", rng)
    assert bob.cipher.decrypt(ALICE, message) == carol.cipher.decrypt(ALICE, message) == b"hi all"


def test_a_late_member_reads_only_what_follows(rng: DeterministicRng) -> None:
    alice, _bob, _ = _pair(rng)
    before = alice.cipher.encrypt(ALICE, b"before", rng)
    late = Member()
    late.cipher.process_distribution_message(
        ALICE, alice.cipher.create_distribution_message(ALICE, rng).serialize()
    )
    after = alice.cipher.encrypt(ALICE, b"after", rng)
    assert late.cipher.decrypt(ALICE, after) == b"after"
    with pytest.raises(DuplicateMessageError):
        late.cipher.decrypt(ALICE, before)


def test_duplicates_and_replays_are_refused_and_change_nothing(rng: DeterministicRng) -> None:
    alice, bob, _ = _pair(rng)
    first, second, third = (alice.cipher.encrypt(ALICE, b"%d" % n, rng) for n in range(3))
    assert bob.cipher.decrypt(ALICE, third) == b"2"
    assert bob.cipher.decrypt(ALICE, first) == b"0"
    for replay in (first, third):
        before = bob.snapshot(ALICE)
        with pytest.raises(DuplicateMessageError):
            bob.cipher.decrypt(ALICE, replay)
        assert bob.snapshot(ALICE) == before
    assert bob.cipher.decrypt(ALICE, second) == b"1"


def test_a_repeated_distribution_message_does_not_rewind(rng: DeterministicRng) -> None:
    alice, bob, distribution = _pair(rng)
    message = alice.cipher.encrypt(ALICE, b"once", rng)
    assert bob.cipher.decrypt(ALICE, message) == b"once"
    bob.cipher.process_distribution_message(ALICE, distribution)
    with pytest.raises(DuplicateMessageError):
        bob.cipher.decrypt(ALICE, message)


def test_rotation_keeps_late_messages_of_old_chains_readable(rng: DeterministicRng) -> None:
    alice, bob, _ = _pair(rng)
    held = []
    held_back = alice.cipher.encrypt(ALICE, b"first chain, delivered last", rng)
    for round_number in range(4):
        held.append(alice.cipher.encrypt(ALICE, b"chain %d" % round_number, rng))
        bob.cipher.process_distribution_message(ALICE, alice.cipher.rotate(ALICE, rng).serialize())
    newest = alice.cipher.encrypt(ALICE, b"newest", rng)
    chain_ids = {SenderKeyMessage.deserialize(m, SenderKeyFraming.LIBSIGNAL).chain_id for m in held}
    assert len(chain_ids) == 4
    assert bob.cipher.decrypt(ALICE, newest) == b"newest"
    for round_number, message in reversed(list(enumerate(held))):
        assert bob.cipher.decrypt(ALICE, message) == b"chain %d" % round_number
    # A sixth chain pushes the oldest out: its late message then finds no state.
    bob.cipher.process_distribution_message(ALICE, alice.cipher.rotate(ALICE, rng).serialize())
    record = bob.store.load_sender_key(ALICE)
    assert record is not None and len(record.states) == 5
    assert bob.cipher.decrypt(ALICE, alice.cipher.encrypt(ALICE, b"sixth", rng)) == b"sixth"
    before = bob.snapshot(ALICE)
    with pytest.raises(NoSenderKeyError):
        bob.cipher.decrypt(ALICE, held_back)
    assert bob.snapshot(ALICE) == before


def test_a_removed_member_reads_nothing_after_rotation(rng: DeterministicRng) -> None:
    alice, bob, _ = _pair(rng)
    removed = Member()
    removed.cipher.process_distribution_message(
        ALICE, alice.cipher.create_distribution_message(ALICE, rng).serialize()
    )
    bob.cipher.process_distribution_message(ALICE, alice.cipher.rotate(ALICE, rng).serialize())
    message = alice.cipher.encrypt(ALICE, b"without you", rng)
    assert bob.cipher.decrypt(ALICE, message) == b"without you"
    before = removed.snapshot(ALICE)
    with pytest.raises(NoSenderKeyError):
        removed.cipher.decrypt(ALICE, message)
    assert removed.snapshot(ALICE) == before


def _tamper_cases(
    rng: DeterministicRng, alice: Member, message: bytes
) -> dict[str, tuple[bytes, type[E2EError]]]:
    parsed = SenderKeyMessage.deserialize(message, SenderKeyFraming.LIBSIGNAL)
    record = alice.store.load_sender_key(ALICE)
    assert record is not None
    state = record.current_state()
    assert state is not None and state.signing_key_pair is not None
    own_key = state.signing_key_pair.private_key

    def resigned(**changes: object) -> bytes:
        fields = {
            "distribution_id": parsed.distribution_id,
            "chain_id": parsed.chain_id,
            "iteration": parsed.iteration,
            "ciphertext": parsed.ciphertext,
        }
        fields.update(changes)
        return SenderKeyMessage.create(
            SenderKeyFraming.LIBSIGNAL,
            fields["distribution_id"],  # type: ignore[arg-type]
            fields["chain_id"],  # type: ignore[arg-type]
            fields["iteration"],  # type: ignore[arg-type]
            fields["ciphertext"],  # type: ignore[arg-type]
            own_key,
            rng,
        ).serialized

    flipped_signature = message[:-1] + bytes((message[-1] ^ 0x01,))
    flipped_ciphertext = bytearray(message)
    flipped_ciphertext[-70] ^= 0x80
    other_key = KeyPair.generate(rng).private_key
    forged = SenderKeyMessage.create(
        SenderKeyFraming.LIBSIGNAL,
        GROUP,
        parsed.chain_id,
        parsed.iteration,
        parsed.ciphertext,
        other_key,
        rng,
    ).serialized
    # A ciphertext signed by the sender but whose padding is wrong under the message key.
    bad_padding = resigned(ciphertext=cbc_encrypt(bytes(32), bytes(16), b"not under the real key"))
    return {
        "truncated": (message[:-1], DecodeError),
        "cut to the header": (message[:20], DecodeError),
        "empty": (b"", DecodeError),
        "oversized": (b"\x33" + bytes(300_000), DecodeError),
        "signature flipped": (flipped_signature, InvalidSignatureError),
        "ciphertext flipped": (bytes(flipped_ciphertext), InvalidSignatureError),
        "signed by another member": (forged, InvalidSignatureError),
        "other distribution": (resigned(distribution_id=OTHER_GROUP), DistributionMismatchError),
        "unknown chain": (resigned(chain_id=parsed.chain_id ^ 1), NoSenderKeyError),
        "too far ahead": (
            resigned(iteration=parsed.iteration + MAX_FORWARD_JUMPS + 1),
            TooManySkippedMessagesError,
        ),
        "bad padding": (bad_padding, InvalidMessageError),
        "old framing": (
            SenderKeyMessage.create(
                SenderKeyFraming.AXOLOTL,
                None,
                parsed.chain_id,
                parsed.iteration,
                parsed.ciphertext,
                own_key,
                rng,
            ).serialized,
            DecodeError,
        ),
    }


def test_every_bad_message_is_a_typed_error_and_changes_nothing(rng: DeterministicRng) -> None:
    alice, bob, _ = _pair(rng)
    assert bob.cipher.decrypt(ALICE, alice.cipher.encrypt(ALICE, b"warm up", rng)) == b"warm up"
    message = alice.cipher.encrypt(ALICE, b"the real one", rng)
    for name, (data, error) in _tamper_cases(rng, alice, message).items():
        before = bob.snapshot(ALICE)
        with pytest.raises(error):
            bob.cipher.decrypt(ALICE, data)
        assert bob.snapshot(ALICE) == before, name
    assert bob.cipher.decrypt(ALICE, message) == b"the real one"


def test_no_sender_key_cases(rng: DeterministicRng) -> None:
    alice, bob, distribution = _pair(rng)
    message = alice.cipher.encrypt(ALICE, b"x", rng)
    stranger = Member()
    with pytest.raises(NoSenderKeyError):
        stranger.cipher.decrypt(ALICE, message)
    assert stranger.snapshot(ALICE) is None
    with pytest.raises(NoSenderKeyError, match="create a distribution"):
        stranger.cipher.encrypt(ALICE, b"x", rng)
    # Bob holds Alice's chain but not her signing key: he cannot send on it.
    before = bob.snapshot(ALICE)
    with pytest.raises(NoSenderKeyError, match="another member"):
        bob.cipher.encrypt(ALICE, b"x", rng)
    with pytest.raises(NoSenderKeyError):
        bob.cipher.create_distribution_message(ALICE, rng)
    assert bob.snapshot(ALICE) == before
    # A cipher of the other framing does not use these states.
    old = GroupCipher(bob.store, SenderKeyFraming.AXOLOTL)
    with pytest.raises(NoSenderKeyError):
        old.encrypt(ALICE, b"x", rng)
    assert distribution


def test_bad_distribution_messages_change_nothing(rng: DeterministicRng) -> None:
    alice, bob, distribution = _pair(rng)
    before = bob.snapshot(ALICE)
    elsewhere = SenderKeyName("alice", 1, OTHER_GROUP)
    with pytest.raises(DistributionMismatchError):
        bob.cipher.process_distribution_message(elsewhere, distribution)
    assert bob.snapshot(elsewhere) is None
    for data in (distribution[:-1], b"", b"\x33", distribution + b"\x00", b"\x22" + distribution[1:]):
        with pytest.raises(DecodeError):
            bob.cipher.process_distribution_message(ALICE, data)
    assert bob.snapshot(ALICE) == before
    old = GroupCipher(bob.store, SenderKeyFraming.AXOLOTL)
    with pytest.raises(DecodeError):
        old.process_distribution_message(ALICE, distribution)
    assert bob.snapshot(ALICE) == before
    assert alice.snapshot(ALICE) is not None


def test_a_failed_encrypt_changes_nothing(rng: DeterministicRng) -> None:
    alice, _bob, _ = _pair(rng)
    before = alice.snapshot(ALICE)
    with pytest.raises(ValueError):
        alice.cipher.encrypt(ALICE, bytes(256 * 1024), rng)
    with pytest.raises(TypeError):
        alice.cipher.encrypt(ALICE, "text", rng)  # type: ignore[arg-type]
    assert alice.snapshot(ALICE) == before


def test_the_sender_state_steps_once_per_message(rng: DeterministicRng) -> None:
    alice, _bob, _ = _pair(rng)
    iterations = [
        SenderKeyMessage.deserialize(
            alice.cipher.encrypt(ALICE, b"m", rng), SenderKeyFraming.LIBSIGNAL
        ).iteration
        for _ in range(3)
    ]
    assert iterations == [0, 1, 2]
    offer = alice.cipher.create_distribution_message(ALICE, rng)
    assert isinstance(offer, SenderKeyDistributionMessage)
    assert offer.iteration == 3


def test_the_rng_is_drawn_in_libsignal_order() -> None:
    draws: list[int] = []

    def rng(n: int) -> bytes:
        draws.append(n)
        return bytes([len(draws)]) * n

    offer = GroupCipher(InMemorySenderKeyStore()).create_distribution_message(ALICE, rng)
    assert draws == [4, 32, 32]
    assert offer.chain_id == int.from_bytes(bytes([1]) * 4, "big") >> 1
    assert offer.chain_key == bytes([2]) * 32
    assert offer.signing_key == KeyPair.generate(lambda n: bytes([3]) * n).public_key


def test_repr_redacts(rng: DeterministicRng) -> None:
    alice, _, _ = _pair(rng)
    record = alice.store.load_sender_key(ALICE)
    assert isinstance(record, SenderKeyRecord)
    state = record.current_state()
    assert state is not None
    text = repr(alice.cipher) + repr(record)
    assert state.chain_key.key.hex() not in text


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=40 * FUZZ_SCALE, deadline=None)
@given(
    order=st.permutations(list(range(8))),
    duplicates=st.lists(st.integers(0, 7), max_size=4),
    lost=st.sets(st.integers(0, 7), max_size=3),
)
def test_any_delivery_order_decrypts_each_message_once(
    order: list[int], duplicates: list[int], lost: set[int]
) -> None:
    rng = DeterministicRng(b"orders")
    alice, bob, _ = _pair(rng)
    messages = [alice.cipher.encrypt(ALICE, b"m%d" % n, rng) for n in range(8)]
    delivered: set[int] = set()
    schedule = [n for n in order if n not in lost] + duplicates
    for number in schedule:
        if number in delivered or number in lost:
            before = bob.snapshot(ALICE)
            if number in lost:
                continue
            with pytest.raises(DuplicateMessageError):
                bob.cipher.decrypt(ALICE, messages[number])
            assert bob.snapshot(ALICE) == before
        else:
            assert bob.cipher.decrypt(ALICE, messages[number]) == b"m%d" % number
            delivered.add(number)
    assert delivered == set(range(8)) - lost


@settings(max_examples=60 * FUZZ_SCALE, deadline=None)
@given(position=st.integers(0, 200), bit=st.integers(0, 7))
def test_any_bit_flip_is_refused_without_a_trace(position: int, bit: int) -> None:
    rng = DeterministicRng(b"flips")
    alice, bob, _ = _pair(rng)
    message = alice.cipher.encrypt(ALICE, b"a message of some length", rng)
    flipped = bytearray(message)
    flipped[position % len(message)] ^= 1 << bit
    before = bob.snapshot(ALICE)
    with pytest.raises(E2EError):
        bob.cipher.decrypt(ALICE, bytes(flipped))
    assert bob.snapshot(ALICE) == before
    assert bob.cipher.decrypt(ALICE, message) == b"a message of some length"
