"""The Triple Ratchet against libsignal 0.103 (Node): v4 sessions whose every message carries an
SPQR message, in both directions, across many SPQR epochs.

libsignal requires SPQR (``min_version`` V1) and checks it before the message MAC, so every
message it decrypts here proves that our ``pq_ratchet`` bytes parse in Signal's ``spqr`` crate,
that the braid's chunks, MACs and KEM values are the ones it expects, and that our SPQR key for
that message equals its own (it is the HKDF salt of the message keys, so the MAC would fail
otherwise).  Every message of ours that libsignal accepts, and every message of libsignal's that we
decrypt, is such a proof.  The runs cover strict ping-pong (an epoch every ~87 messages), bursts,
reordering and loss across epochs, replays and bit flips refused on both sides with the state
unchanged, and restarts from stored records mid-epoch.
"""

from __future__ import annotations

import base64
import dataclasses
import random
from typing import Any

import pytest
import spqr_libsignal_vector
from conftest import DeterministicRng
from parties import Party

from e2e.errors import E2EError
from e2e.keys import PublicKey
from e2e.kyber import KyberKeyPair, KyberPublicKey
from e2e.session import Ciphertext, SessionRecord
from e2e.spqr import SpqrRatchet, SpqrRatchetFactory
from e2e.spqr.message import SpqrMessage
from e2e.wire import MessageType, PreKeySignalMessage, SignalMessage
from e2e.x3dh import PreKeyBundle

from .node_peer import NodePeer, NodePeerError

pytestmark = pytest.mark.interop

FACTORY = SpqrRatchetFactory()
OURS = {"name": "python", "device_id": 1}
THEIRS = {"name": "node", "device_id": 1}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _spqr_epoch(record: SessionRecord) -> int:
    # The SPQR state is inside the record's current state, which the record does not expose.
    state = record._current
    assert state is not None and isinstance(state.pq_ratchet, SpqrRatchet)
    return state.pq_ratchet.state.epoch


class Conversation:
    """Our record and libsignal's party ``node``, talking to each other."""

    def __init__(self, peer: NodePeer, rng: DeterministicRng, record: SessionRecord) -> None:
        self.peer = peer
        self.rng = rng
        self.record = record
        self.pq_sizes: set[int] = set()

    def ours_to_theirs(self, plaintext: bytes) -> Ciphertext:
        return self.record.encrypt(plaintext, self.rng)

    def deliver_to_theirs(self, ciphertext: Ciphertext, genuine: bool = True) -> bytes:
        body = ciphertext.body
        if genuine:
            field5 = (
                PreKeySignalMessage.deserialize(body).message.pq_ratchet
                if ciphertext.type == MessageType.PREKEY
                else SignalMessage.deserialize(body).pq_ratchet
            )
            SpqrMessage.deserialize(field5)
            self.pq_sizes.add(len(field5))
        result = self.peer.call(
            "session_decrypt", party="node", peer=OURS, type=int(ciphertext.type), body=_b64(body)
        )
        return _unb64(result["plaintext"])

    def theirs_to_ours_wire(self, plaintext: bytes) -> tuple[int, bytes]:
        result = self.peer.call("session_encrypt", party="node", peer=OURS, plaintext=_b64(plaintext))
        return int(result["type"]), _unb64(result["body"])

    def deliver_to_ours(self, message: tuple[int, bytes], genuine: bool = True) -> bytes:
        kind, body = message
        assert kind == MessageType.WHISPER
        if genuine:
            self.pq_sizes.add(len(SignalMessage.deserialize(body).pq_ratchet))
        return self.record.decrypt(body, self.rng)

    def ping_pong(self, rounds: int, tag: bytes = b"") -> None:
        for i in range(rounds):
            text = b"%s ours %d" % (tag, i)
            assert self.deliver_to_theirs(self.ours_to_theirs(text)) == text
            text = b"%s theirs %d" % (tag, i)
            assert self.deliver_to_ours(self.theirs_to_ours_wire(text)) == text


def _libsignal_bundle_to_ours(bundle: dict[str, Any]) -> PreKeyBundle:
    return PreKeyBundle(
        registration_id=bundle["registration_id"],
        device_id=bundle["device_id"],
        identity_key=PublicKey.deserialize(_unb64(bundle["identity_key"])),
        signed_pre_key_id=bundle["signed_pre_key_id"],
        signed_pre_key=PublicKey.deserialize(_unb64(bundle["signed_pre_key"])),
        signed_pre_key_signature=_unb64(bundle["signed_pre_key_signature"]),
        pre_key_id=bundle["pre_key_id"],
        pre_key=PublicKey.deserialize(_unb64(bundle["pre_key"])),
        kem_pre_key_id=bundle["kyber_pre_key_id"],
        kem_pre_key=KyberPublicKey.deserialize(_unb64(bundle["kyber_pre_key"])),
        kem_pre_key_signature=_unb64(bundle["kyber_pre_key_signature"]),
    )


def we_initiate(peer: NodePeer, seed: bytes) -> Conversation:
    rng = DeterministicRng(seed)
    ours = Party.create(rng, 1000)
    peer.call("create_identity", party="node", registration_id=2000)
    bundle = peer.call(
        "session_bundle", party="node", pre_key_id=31, signed_pre_key_id=32, kyber_pre_key_id=33
    )
    record = SessionRecord.initiate(
        ours.identity, 1000, _libsignal_bundle_to_ours(bundle), rng, pq_ratchet_factory=FACTORY
    )
    conversation = Conversation(peer, rng, record)
    first = conversation.ours_to_theirs(b"hello from python")
    assert first.type == MessageType.PREKEY
    assert conversation.deliver_to_theirs(first) == b"hello from python"
    return conversation


def they_initiate(peer: NodePeer, seed: bytes) -> Conversation:
    rng = DeterministicRng(seed)
    ours = Party.create(rng, 1000)
    kyber = KyberKeyPair.generate(rng)
    bundle = dataclasses.replace(
        ours.bundle(rng),
        kem_pre_key_id=44,
        kem_pre_key=kyber.public_key,
        kem_pre_key_signature=ours.identity.sign(kyber.public_key.serialize(), rng),
    )
    assert bundle.pre_key_id is not None and bundle.pre_key is not None
    peer.call("create_identity", party="node", registration_id=2000)
    peer.call(
        "session_process_bundle",
        party="node",
        peer=OURS,
        bundle={
            "registration_id": bundle.registration_id,
            "device_id": 1,
            "pre_key_id": bundle.pre_key_id,
            "pre_key": _b64(bundle.pre_key.serialize()),
            "signed_pre_key_id": bundle.signed_pre_key_id,
            "signed_pre_key": _b64(bundle.signed_pre_key.serialize()),
            "signed_pre_key_signature": _b64(bundle.signed_pre_key_signature),
            "identity_key": _b64(bundle.identity_key.serialize()),
            "kyber_pre_key_id": 44,
            "kyber_pre_key": _b64(kyber.public_key.serialize()),
            "kyber_pre_key_signature": _b64(bundle.kem_pre_key_signature or b""),
        },
    )
    kind, body = Conversation(peer, rng, SessionRecord()).theirs_to_ours_wire(b"hello from libsignal")
    assert kind == MessageType.PREKEY
    message = PreKeySignalMessage.deserialize(body)
    assert message.version == 4
    record = SessionRecord(pq_ratchet_factory=FACTORY)
    plaintext = record.decrypt_prekey_message(
        message,
        ours.identity,
        ours.signed_pre_key,
        ours.one_time_pre_keys[message.pre_key_id] if message.pre_key_id is not None else None,
        rng,
        our_registration_id=1000,
        our_kem_pre_key=kyber,
    )
    assert plaintext == b"hello from libsignal"
    conversation = Conversation(peer, rng, record)
    return conversation


START = {"we initiate": we_initiate, "they initiate": they_initiate}


@pytest.mark.parametrize("start", START)
def test_long_ping_pong_across_spqr_epochs(libsignal: NodePeer, start: str) -> None:
    conversation = START[start](libsignal, b"spqr-libsignal-" + start.encode())
    conversation.ping_pong(230)
    assert _spqr_epoch(conversation.record) >= 5
    # Field 5 carries 4 bytes without a chunk and 37 with one (38 and 39 once counters pass 127).
    assert conversation.pq_sizes <= {4, 37, 38, 39} and 37 in conversation.pq_sizes


@pytest.mark.parametrize("start", START)
def test_bursts_reordering_and_loss_across_epochs(libsignal: NodePeer, start: str) -> None:
    conversation = START[start](libsignal, b"spqr-libsignal-ooo-" + start.encode())
    conversation.ping_pong(1)
    shuffle = random.Random(start)
    for round_number in range(70):
        ours = [conversation.ours_to_theirs(b"o%d.%d" % (round_number, i)) for i in range(4)]
        theirs = [conversation.theirs_to_ours_wire(b"t%d.%d" % (round_number, i)) for i in range(4)]
        shuffle.shuffle(ours)
        shuffle.shuffle(theirs)
        # Each side loses one message in three rounds; the rest arrive in a random order.
        for message in ours[: 3 if round_number % 3 == 0 else 4]:
            assert conversation.deliver_to_theirs(message).startswith(b"o%d." % round_number)
        for wire in theirs[: 3 if round_number % 3 == 1 else 4]:
            assert conversation.deliver_to_ours(wire).startswith(b"t%d." % round_number)
    assert _spqr_epoch(conversation.record) >= 2
    conversation.ping_pong(5, b"after")


@pytest.mark.parametrize("start", START)
def test_replays_and_bit_flips_are_refused_both_ways(libsignal: NodePeer, start: str) -> None:
    conversation = START[start](libsignal, b"spqr-libsignal-tamper-" + start.encode())
    conversation.ping_pong(40)
    # Ours to libsignal: every flip refused, then the genuine message accepted once.
    message = conversation.ours_to_theirs(b"genuine")
    for position in range(0, len(message.body), 3):
        flipped = bytearray(message.body)
        flipped[position] ^= 0x20
        with pytest.raises(NodePeerError):
            conversation.deliver_to_theirs(Ciphertext(message.type, bytes(flipped)), genuine=False)
    assert conversation.deliver_to_theirs(message) == b"genuine"
    with pytest.raises(NodePeerError) as replay:
        conversation.deliver_to_theirs(message)
    assert replay.value.code == "DuplicatedMessage"
    # libsignal's to ours: the same, with our record unchanged by each refusal.
    kind, body = conversation.theirs_to_ours_wire(b"genuine back")
    before = conversation.record.serialize()
    for position in range(len(body)):
        flipped = bytearray(body)
        flipped[position] ^= 0x20
        with pytest.raises(E2EError):
            conversation.deliver_to_ours((kind, bytes(flipped)), genuine=False)
        assert conversation.record.serialize() == before
    assert conversation.deliver_to_ours((kind, body)) == b"genuine back"
    with pytest.raises(E2EError):
        conversation.deliver_to_ours((kind, body))
    conversation.ping_pong(60, b"after")
    assert _spqr_epoch(conversation.record) >= 2


@pytest.mark.parametrize("start", START)
def test_restarts_from_stored_records_mid_epoch(libsignal: NodePeer, start: str) -> None:
    conversation = START[start](libsignal, b"spqr-libsignal-restart-" + start.encode())
    for step in range(12):
        conversation.ping_pong(17, b"%d" % step)
        conversation.record = SessionRecord.deserialize(
            conversation.record.serialize(), pq_ratchet_factory=FACTORY
        )
        stored = libsignal.call("session_record_export", party="node", peer=OURS)["record"]
        libsignal.call("session_record_import", party="node", peer=OURS, record=stored)
    assert _spqr_epoch(conversation.record) >= 3


@pytest.mark.parametrize("start", START)
def test_64_kib_messages_across_an_epoch(libsignal: NodePeer, start: str) -> None:
    conversation = START[start](libsignal, b"spqr-libsignal-64k-" + start.encode())
    big = bytes(range(256)) * 256
    for i in range(50):
        assert conversation.deliver_to_theirs(conversation.ours_to_theirs(big + b"%d" % i)) == big + b"%d" % i
        assert (
            conversation.deliver_to_ours(conversation.theirs_to_ours_wire(big + b"%d" % i)) == big + b"%d" % i
        )
    assert _spqr_epoch(conversation.record) >= 2


@pytest.mark.parametrize("start", START)
def test_a_message_held_back_for_three_epochs_is_refused_by_both(libsignal: NodePeer, start: str) -> None:
    # After three epochs of ping-pong the keys of a held-back message are gone on both sides
    # (its Double Ratchet receiving chain is long dropped, and SPQR keeps no epoch older than the
    # one before its sending epoch): it is refused, not misdecrypted, and the conversation goes on.
    conversation = START[start](libsignal, b"spqr-libsignal-late-" + start.encode())
    conversation.ping_pong(2)
    late_ours = conversation.ours_to_theirs(b"late ours")
    late_theirs = conversation.theirs_to_ours_wire(b"late theirs")
    start_epoch = _spqr_epoch(conversation.record)
    while _spqr_epoch(conversation.record) < start_epoch + 3:
        conversation.ping_pong(1)
    with pytest.raises(NodePeerError):
        conversation.deliver_to_theirs(late_ours)
    before = conversation.record.serialize()
    with pytest.raises(E2EError):
        conversation.deliver_to_ours(late_theirs)
    assert conversation.record.serialize() == before
    conversation.ping_pong(3, b"after")


def test_libsignal_decrypts_the_pinned_burst_vector(libsignal: NodePeer) -> None:
    # tests/fixtures/spqr/libsignal-burst-v1.json: generated by tests/spqr_libsignal_vector.py with
    # pinned randomness; libsignal, given Bob's private keys, decrypts every message.
    document = spqr_libsignal_vector.stored()
    bob = document["bob"]
    libsignal.call(
        "create_identity",
        party="node",
        registration_id=bob["registration_id"],
        identity_private_key=_b64(bytes.fromhex(bob["identity_private"])),
    )
    libsignal.call(
        "session_import_prekeys",
        party="node",
        pre_key_id=bob["pre_key_id"],
        pre_key_private=_b64(bytes.fromhex(bob["pre_key_private"])),
        signed_pre_key_id=bob["signed_pre_key_id"],
        signed_pre_key_private=_b64(bytes.fromhex(bob["signed_pre_key_private"])),
        signed_pre_key_signature=_b64(bytes.fromhex(bob["signed_pre_key_signature"])),
        kyber_pre_key_id=bob["kyber_pre_key_id"],
        kyber_record=_b64(bytes.fromhex(bob["kyber_record"])),
    )
    for entry in document["messages"]:
        result = libsignal.call(
            "session_decrypt",
            party="node",
            peer=OURS,
            type=int(MessageType.PREKEY),
            body=_b64(bytes.fromhex(entry["body"])),
        )
        assert _unb64(result["plaintext"]) == bytes.fromhex(entry["plaintext"])
