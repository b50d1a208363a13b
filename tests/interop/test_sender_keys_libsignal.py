"""Sender Keys against libsignal itself (``@signalapp/libsignal-client`` 0.103.0 through the Node peer).

Both directions: our distribution and group messages processed and decrypted by libsignal, and
libsignal's by us; in order and out of order; across several sender-key states (we rotate, and
libsignal rotates by forgetting its key); signing keys of both Edwards sign bits; tampered messages
and replays refused by each side, and on our side with the state unchanged.  The distribution
message we encode is byte for byte the one libsignal's own encoder makes from the same fields.
"""

from __future__ import annotations

import os
import uuid

import pytest

from e2e.errors import (
    DecodeError,
    DuplicateMessageError,
    E2EError,
    InvalidSignatureError,
    NoSenderKeyError,
    TooManySkippedMessagesError,
)
from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore, SenderKeyName
from e2e.keys import KeyPair, PrivateKey
from e2e.sender_key_messages import SenderKeyDistributionMessage, SenderKeyFraming, SenderKeyMessage
from e2e.sender_key_state import MAX_FORWARD_JUMPS, SenderChainKey, SenderKeyRecord, SenderKeyState

from .keys_with_sign_bit import scalar_with_sign_bit
from .node_peer import Address, NodePeer, NodePeerError, libsignal_sender_key_record

pytestmark = pytest.mark.interop

GROUP = uuid.UUID("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a")
OURS = SenderKeyName("ours", 1, GROUP)
OUR_ADDRESS = Address("ours", 1)
THEIRS = SenderKeyName("libsignal", 2, GROUP)
THEIR_ADDRESS = Address("libsignal", 2)
LIBSIGNAL = SenderKeyFraming.LIBSIGNAL


def _our_chain(store: InMemorySenderKeyStore, sign_bit: int, chain_id: int, seed: bytes) -> None:
    """Put a new chain of ours in front, with a signing key of the given Edwards sign bit."""
    signing = KeyPair(PrivateKey(scalar_with_sign_bit(seed, sign_bit)))
    record = store.load_sender_key(OURS) or SenderKeyRecord()
    record.add_state(
        SenderKeyState(LIBSIGNAL, chain_id, SenderChainKey(0, os.urandom(32)), signing.public_key, signing)
    )
    store.store_sender_key(OURS, record)


@pytest.fixture
def ours() -> tuple[GroupCipher, InMemorySenderKeyStore]:
    store = InMemorySenderKeyStore()
    return GroupCipher(store, LIBSIGNAL), store


def test_our_distribution_message_is_libsignals_bytes(libsignal: NodePeer) -> None:
    cipher = GroupCipher(InMemorySenderKeyStore(), LIBSIGNAL)
    offer = cipher.create_distribution_message(OURS, os.urandom)
    made_by_libsignal = libsignal.sender_key_distribution_new(
        str(GROUP), offer.chain_id, offer.iteration, offer.chain_key, offer.signing_key.serialize()
    )
    assert offer.serialize() == made_by_libsignal
    for chain_id, iteration in [(0, 0), (0x7FFF_FFFF, 0xFFFF_FFFF), (1, 300)]:
        fields = SenderKeyDistributionMessage(
            LIBSIGNAL, GROUP, chain_id, iteration, offer.chain_key, offer.signing_key
        )
        assert fields.serialize() == libsignal.sender_key_distribution_new(
            str(GROUP), chain_id, iteration, offer.chain_key, offer.signing_key.serialize()
        )


def test_libsignals_distribution_message_parses_to_its_fields(libsignal: NodePeer) -> None:
    libsignal.create_identity("libsignal")
    data = libsignal.sender_key_distribution_create("libsignal", THEIR_ADDRESS, str(GROUP))
    theirs = libsignal.sender_key_distribution_inspect(data)
    parsed = SenderKeyDistributionMessage.deserialize(data, LIBSIGNAL)
    assert str(parsed.distribution_id) == theirs["distribution_id"]
    assert (parsed.chain_id, parsed.iteration, parsed.chain_key) == (
        theirs["chain_id"],
        theirs["iteration"],
        theirs["chain_key"],
    )
    assert parsed.serialize() == data
    assert parsed.chain_id < 2**31


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_libsignal_decrypts_ours_out_of_order(
    libsignal: NodePeer, ours: tuple[GroupCipher, InMemorySenderKeyStore], sign_bit: int
) -> None:
    cipher, store = ours
    _our_chain(store, sign_bit, 12345, b"ours-%d" % sign_bit)
    libsignal.create_identity("member")
    offer = cipher.create_distribution_message(OURS, os.urandom)
    fields = libsignal.sender_key_distribution_process("member", OUR_ADDRESS, offer.serialize())
    assert fields == {"distribution_id": str(GROUP), "chain_id": 12345, "iteration": 0}
    plaintexts = [b"", b"x", bytes(15), bytes(16), os.urandom(1000)] + [b"m%d" % n for n in range(5)]
    messages = [cipher.encrypt(OURS, plaintext, os.urandom) for plaintext in plaintexts]
    for number in [3, 0, 9, 1, 2, 8, 4, 7, 5, 6]:
        assert libsignal.group_decrypt("member", OUR_ADDRESS, messages[number]) == plaintexts[number]
    inspected = libsignal.sender_key_message_inspect(messages[0], offer.signing_key.serialize())
    assert inspected["signature_valid"] is True
    assert (inspected["chain_id"], inspected["iteration"], inspected["distribution_id"]) == (
        12345,
        0,
        str(GROUP),
    )


def test_libsignal_follows_our_rotations(
    libsignal: NodePeer, ours: tuple[GroupCipher, InMemorySenderKeyStore]
) -> None:
    cipher, store = ours
    libsignal.create_identity("member")
    held: list[tuple[bytes, bytes]] = []
    for round_number in range(5):
        _our_chain(store, round_number % 2, 1000 + round_number, b"rotation-%d" % round_number)
        offer = cipher.create_distribution_message(OURS, os.urandom)
        libsignal.sender_key_distribution_process("member", OUR_ADDRESS, offer.serialize())
        for number in range(3):
            plaintext = b"chain %d message %d" % (round_number, number)
            held.append((cipher.encrypt(OURS, plaintext, os.urandom), plaintext))
    # All five chains are kept by libsignal: the late messages of old chains still decrypt.
    for message, plaintext in reversed(held):
        assert libsignal.group_decrypt("member", OUR_ADDRESS, message) == plaintext
    # A rotation made with our own rotate() works the same way.
    libsignal.sender_key_distribution_process(
        "member", OUR_ADDRESS, cipher.rotate(OURS, os.urandom).serialize()
    )
    assert (
        libsignal.group_decrypt("member", OUR_ADDRESS, cipher.encrypt(OURS, b"rotated", os.urandom))
        == b"rotated"
    )


def test_libsignal_refuses_our_tampered_messages_and_replays(
    libsignal: NodePeer, ours: tuple[GroupCipher, InMemorySenderKeyStore]
) -> None:
    cipher, _ = ours
    libsignal.create_identity("member")
    offer = cipher.create_distribution_message(OURS, os.urandom)
    libsignal.sender_key_distribution_process("member", OUR_ADDRESS, offer.serialize())
    message = cipher.encrypt(OURS, b"the real one", os.urandom)
    for position in (0, 5, 25, len(message) - 70, len(message) - 1):
        tampered = bytearray(message)
        tampered[position] ^= 0x04
        with pytest.raises(NodePeerError):
            libsignal.group_decrypt("member", OUR_ADDRESS, bytes(tampered))
    assert libsignal.group_decrypt("member", OUR_ADDRESS, message) == b"the real one"
    with pytest.raises(NodePeerError) as replay:
        libsignal.group_decrypt("member", OUR_ADDRESS, message)
    assert replay.value.code == "DuplicatedMessage"


@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled"])
def test_we_decrypt_libsignal_out_of_order(
    libsignal: NodePeer, ours: tuple[GroupCipher, InMemorySenderKeyStore], order: str
) -> None:
    cipher, _ = ours
    libsignal.create_identity("libsignal")
    cipher.process_distribution_message(
        THEIRS, libsignal.sender_key_distribution_create("libsignal", THEIR_ADDRESS, str(GROUP))
    )
    plaintexts = [b"", b"a", bytes(16), os.urandom(777), *(b"n%d" % n for n in range(6))]
    messages = [libsignal.group_encrypt("libsignal", THEIR_ADDRESS, str(GROUP), p) for p in plaintexts]
    numbers = list(range(len(messages)))
    if order == "reversed":
        numbers.reverse()
    elif order == "shuffled":
        numbers = [4, 9, 0, 2, 1, 8, 3, 7, 6, 5]
    for number in numbers:
        assert cipher.decrypt(THEIRS, messages[number]) == plaintexts[number]


def test_we_follow_libsignals_rotations(
    libsignal: NodePeer, ours: tuple[GroupCipher, InMemorySenderKeyStore]
) -> None:
    cipher, store = ours
    libsignal.create_identity("libsignal")
    held: list[tuple[bytes, bytes]] = []
    chain_ids = set()
    for round_number in range(5):
        if round_number:
            assert libsignal.sender_key_record_delete("libsignal", THEIR_ADDRESS, str(GROUP))
        offer = cipher.process_distribution_message(
            THEIRS, libsignal.sender_key_distribution_create("libsignal", THEIR_ADDRESS, str(GROUP))
        )
        chain_ids.add(offer.chain_id)
        if round_number == 0:
            held_back = libsignal.group_encrypt(
                "libsignal", THEIR_ADDRESS, str(GROUP), b"never delivered in time"
            )
        for number in range(3):
            plaintext = b"their chain %d message %d" % (round_number, number)
            held.append(
                (libsignal.group_encrypt("libsignal", THEIR_ADDRESS, str(GROUP), plaintext), plaintext)
            )
    record = store.load_sender_key(THEIRS)
    assert record is not None and len(record.states) == len(chain_ids) == 5
    for message, plaintext in reversed(held):
        assert cipher.decrypt(THEIRS, message) == plaintext
    # A sixth chain pushes the oldest out: a late message of the first chain finds no state.
    late = libsignal.group_encrypt("libsignal", THEIR_ADDRESS, str(GROUP), b"late")
    libsignal.sender_key_record_delete("libsignal", THEIR_ADDRESS, str(GROUP))
    cipher.process_distribution_message(
        THEIRS, libsignal.sender_key_distribution_create("libsignal", THEIR_ADDRESS, str(GROUP))
    )
    assert cipher.decrypt(THEIRS, late) == b"late"  # Its chain (the fifth) is still kept.
    before = store.serialized(THEIRS)
    with pytest.raises(NoSenderKeyError):
        cipher.decrypt(THEIRS, held_back)
    assert store.serialized(THEIRS) == before


def test_we_refuse_libsignals_tampered_messages_and_replays(
    libsignal: NodePeer, ours: tuple[GroupCipher, InMemorySenderKeyStore]
) -> None:
    cipher, store = ours
    libsignal.create_identity("libsignal")
    cipher.process_distribution_message(
        THEIRS, libsignal.sender_key_distribution_create("libsignal", THEIR_ADDRESS, str(GROUP))
    )
    message = libsignal.group_encrypt("libsignal", THEIR_ADDRESS, str(GROUP), b"from libsignal")
    parsed = SenderKeyMessage.deserialize(message, LIBSIGNAL)
    for position in range(len(message)):
        tampered = bytearray(message)
        tampered[position] ^= 0x10
        before = store.serialized(THEIRS)
        with pytest.raises(E2EError):
            cipher.decrypt(THEIRS, bytes(tampered))
        assert store.serialized(THEIRS) == before
    with pytest.raises(DecodeError):
        cipher.decrypt(THEIRS, message[:-1])
    # Re-signed by someone without the sender's signing key: refused by the signature.
    forged = SenderKeyMessage.create(
        LIBSIGNAL,
        GROUP,
        parsed.chain_id,
        parsed.iteration,
        parsed.ciphertext,
        KeyPair.generate(os.urandom).private_key,
        os.urandom,
    )
    with pytest.raises(InvalidSignatureError):
        cipher.decrypt(THEIRS, forged.serialized)
    assert cipher.decrypt(THEIRS, message) == b"from libsignal"
    before = store.serialized(THEIRS)
    with pytest.raises(DuplicateMessageError):
        cipher.decrypt(THEIRS, message)
    assert store.serialized(THEIRS) == before


def test_a_three_member_group_of_mixed_implementations(libsignal: NodePeer) -> None:
    """One sender of ours and one of libsignal; each member reads both senders."""
    our_store = InMemorySenderKeyStore()
    ours = GroupCipher(our_store, LIBSIGNAL)
    second_store = InMemorySenderKeyStore()
    second = GroupCipher(second_store, LIBSIGNAL)
    libsignal.create_identity("libsignal")
    our_offer = ours.create_distribution_message(OURS, os.urandom).serialize()
    their_offer = libsignal.sender_key_distribution_create("libsignal", THEIR_ADDRESS, str(GROUP))
    libsignal.sender_key_distribution_process("libsignal", OUR_ADDRESS, our_offer)
    second.process_distribution_message(OURS, our_offer)
    for cipher in (ours, second):
        cipher.process_distribution_message(THEIRS, their_offer)
    from_ours = ours.encrypt(OURS, b"one upload from ours", os.urandom)
    from_theirs = libsignal.group_encrypt(
        "libsignal", THEIR_ADDRESS, str(GROUP), b"one upload from libsignal"
    )
    assert libsignal.group_decrypt("libsignal", OUR_ADDRESS, from_ours) == b"one upload from ours"
    assert second.decrypt(OURS, from_ours) == b"one upload from ours"
    assert (
        ours.decrypt(THEIRS, from_theirs)
        == second.decrypt(THEIRS, from_theirs)
        == b"one upload from libsignal"
    )


def _chain_key_after(chain_key: bytes, steps: int) -> bytes:
    key = SenderChainKey(0, chain_key)
    for _ in range(steps):
        key = key.next()
    return key.key


def test_the_forward_jump_limit_both_ways(libsignal: NodePeer) -> None:
    """25,000 iterations ahead decrypt on both sides; 25,001 are refused by both, ours unchanged."""
    chain_key = os.urandom(32)
    signing = KeyPair.generate(os.urandom)
    offer = SenderKeyDistributionMessage(LIBSIGNAL, GROUP, 77, 0, chain_key, signing.public_key).serialize()
    at_limit = _chain_key_after(chain_key, MAX_FORWARD_JUMPS)
    # libsignal sends from far along the chain; we hold the chain at iteration 0.
    libsignal.create_identity("libsignal")
    store = InMemorySenderKeyStore()
    cipher = GroupCipher(store, LIBSIGNAL)
    cipher.process_distribution_message(THEIRS, offer)
    for iteration, key in ((MAX_FORWARD_JUMPS + 1, os.urandom(32)), (MAX_FORWARD_JUMPS, at_limit)):
        libsignal.sender_key_record_import(
            "libsignal", THEIR_ADDRESS, str(GROUP), libsignal_sender_key_record(77, iteration, key, signing)
        )
        message = libsignal.group_encrypt("libsignal", THEIR_ADDRESS, str(GROUP), b"far ahead")
        if iteration > MAX_FORWARD_JUMPS:
            before = store.serialized(THEIRS)
            with pytest.raises(TooManySkippedMessagesError):
                cipher.decrypt(THEIRS, message)
            assert store.serialized(THEIRS) == before
        else:
            assert cipher.decrypt(THEIRS, message) == b"far ahead"
    # We send from far along the chain; libsignal holds it at iteration 0.
    libsignal.create_identity("member")
    libsignal.sender_key_distribution_process("member", OUR_ADDRESS, offer)
    for iteration, key in ((MAX_FORWARD_JUMPS + 1, os.urandom(32)), (MAX_FORWARD_JUMPS, at_limit)):
        our_store = InMemorySenderKeyStore()
        our_store.store_sender_key(
            OURS,
            SenderKeyRecord(
                [SenderKeyState(LIBSIGNAL, 77, SenderChainKey(iteration, key), signing.public_key, signing)]
            ),
        )
        message = GroupCipher(our_store, LIBSIGNAL).encrypt(OURS, b"far ahead", os.urandom)
        if iteration > MAX_FORWARD_JUMPS:
            with pytest.raises(NodePeerError, match="too far into the future"):
                libsignal.group_decrypt("member", OUR_ADDRESS, message)
        else:
            assert libsignal.group_decrypt("member", OUR_ADDRESS, message) == b"far ahead"
