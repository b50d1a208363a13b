"""More v4 conversations with libsignal 0.103 (Node): safety numbers, PreKey bursts, simultaneous starts.

Beside :mod:`test_spqr_libsignal` (whose conversation helpers these reuse), three more kinds of
conversation, each run with both sides as the initiator or both at once:

* **safety numbers**: after a v4 session, our :class:`e2e.fingerprint.Fingerprint` of the two
  identity keys and libsignal's ``Fingerprint`` (computed in the Node peer from its own identity
  key) give the same 60 digits, and each side's scannable form is the mirror the other accepts;
* **PreKey bursts delivered in reverse**: the initiator sends five PreKeySignalMessages before
  any reply, and the recipient takes them last first (each repeats the session start; only the
  first one to arrive starts a state);
* **simultaneous initiation**: both sides start a session from the other's bundle at the same time
  and each sends a PreKey message before receiving the other's; whichever is delivered first,
  both sides end up on one pair of states and keep talking across an SPQR epoch.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from conftest import DeterministicRng
from parties import Party

from e2e.fingerprint import ITERATIONS, SCANNABLE_VERSION, Fingerprint
from e2e.keys import KeyPair
from e2e.kyber import KyberKeyPair
from e2e.session import SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage

from .node_peer import NodePeer
from .test_spqr_libsignal import (
    FACTORY,
    OURS,
    START,
    Conversation,
    _libsignal_bundle_to_ours,
    _spqr_epoch,
)

pytestmark = pytest.mark.interop


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("start", START)
def test_safety_numbers_are_equal_on_both_sides(libsignal: NodePeer, start: str) -> None:
    conversation = START[start](libsignal, b"v4-safety-" + start.encode())
    conversation.ping_pong(3)
    state = conversation.record.current_state
    assert state is not None
    our_key, their_key = state.local_identity_key, state.remote_identity_key
    ours = Fingerprint.create(b"python", our_key, b"node", their_key)
    theirs = libsignal.call(
        "session_fingerprint",
        party="node",
        local_id=_b64(b"node"),
        remote_id=_b64(b"python"),
        remote_identity_key=_b64(our_key.serialize()),
        iterations=ITERATIONS,
        version=SCANNABLE_VERSION,
    )
    assert str(ours.displayable) == theirs["displayable"]
    assert len(theirs["displayable"]) == 60
    # Each side scans the other's code.
    ours.scannable.compare(base64.b64decode(theirs["scannable"]))
    assert ours.scannable.serialize() != base64.b64decode(theirs["scannable"])


@pytest.mark.parametrize("start", START)
def test_a_prekey_burst_delivered_in_reverse(libsignal: NodePeer, start: str) -> None:
    if start == "we initiate":
        conversation = START[start](libsignal, b"v4-burst-" + start.encode())
        burst = [conversation.ours_to_theirs(b"burst %d" % i) for i in range(5)]
        assert {message.type for message in burst} == {MessageType.PREKEY}
        for i, message in reversed(list(enumerate(burst))):
            assert conversation.deliver_to_theirs(message) == b"burst %d" % i
    else:
        conversation = START[start](libsignal, b"v4-burst-" + start.encode())
        wires = [conversation.theirs_to_ours_wire(b"burst %d" % i) for i in range(5)]
        assert {kind for kind, _ in wires} == {MessageType.PREKEY}
        # The first PreKey message started our state; these repeat its header.
        for i, (_kind, body) in reversed(list(enumerate(wires))):
            message = PreKeySignalMessage.deserialize(body)
            assert conversation.record.has_state_for_base_key(message.base_key)
            plaintext = conversation.record.decrypt_prekey_message(
                message, _unused_identity(), None, None, our_registration_id=1000
            )
            assert plaintext == b"burst %d" % i
    conversation.ping_pong(100, b"after")
    assert _spqr_epoch(conversation.record) >= 2


def _unused_identity() -> KeyPair:
    # A repeated PreKey message is decrypted by the state its base key names; the identity key
    # pair passed in is not used for it (Bob's own key is in the state).
    return KeyPair.generate(DeterministicRng(b"unused"))


@pytest.mark.parametrize("first", ["ours first", "theirs first"])
def test_simultaneous_initiation_converges(libsignal: NodePeer, first: str) -> None:
    rng = DeterministicRng(b"v4-simultaneous-" + first.encode())
    ours = Party.create(rng, 1000)
    kyber = KyberKeyPair.generate(rng)
    our_bundle = dataclasses.replace(
        ours.bundle(rng),
        kem_pre_key_id=55,
        kem_pre_key=kyber.public_key,
        kem_pre_key_signature=ours.identity.sign(kyber.public_key.serialize(), rng),
    )
    assert our_bundle.pre_key is not None and our_bundle.pre_key_id is not None
    libsignal.call("create_identity", party="node", registration_id=2000)
    their_bundle = libsignal.call(
        "session_bundle", party="node", pre_key_id=61, signed_pre_key_id=62, kyber_pre_key_id=63
    )
    # Both start at once: we from libsignal's bundle, libsignal from ours.
    record = SessionRecord.initiate(
        ours.identity, 1000, _libsignal_bundle_to_ours(their_bundle), rng, pq_ratchet_factory=FACTORY
    )
    libsignal.call(
        "session_process_bundle",
        party="node",
        peer=OURS,
        bundle={
            "registration_id": our_bundle.registration_id,
            "device_id": 1,
            "pre_key_id": our_bundle.pre_key_id,
            "pre_key": _b64(our_bundle.pre_key.serialize()),
            "signed_pre_key_id": our_bundle.signed_pre_key_id,
            "signed_pre_key": _b64(our_bundle.signed_pre_key.serialize()),
            "signed_pre_key_signature": _b64(our_bundle.signed_pre_key_signature),
            "identity_key": _b64(our_bundle.identity_key.serialize()),
            "kyber_pre_key_id": 55,
            "kyber_pre_key": _b64(kyber.public_key.serialize()),
            "kyber_pre_key_signature": _b64(our_bundle.kem_pre_key_signature or b""),
        },
    )
    conversation = Conversation(libsignal, rng, record)
    ours_first = conversation.ours_to_theirs(b"hello, I started")
    kind, body = conversation.theirs_to_ours_wire(b"hello, I started too")
    assert ours_first.type == MessageType.PREKEY and kind == MessageType.PREKEY

    def ours_receive() -> None:
        message = PreKeySignalMessage.deserialize(body)
        assert message.version == 4
        plaintext = record.decrypt_prekey_message(
            message,
            ours.identity,
            ours.signed_pre_key,
            ours.one_time_pre_keys[message.pre_key_id] if message.pre_key_id is not None else None,
            our_registration_id=1000,
            our_kem_pre_key=kyber,
        )
        assert plaintext == b"hello, I started too"

    if first == "ours first":
        assert conversation.deliver_to_theirs(ours_first) == b"hello, I started"
        ours_receive()
    else:
        ours_receive()
        assert conversation.deliver_to_theirs(ours_first) == b"hello, I started"
    # Each side now has two states, the current one answering the other's start.  The first
    # reply decrypts in the other's archived state, which is promoted: one pair of states.
    conversation.ping_pong(100, b"converged")
    assert _spqr_epoch(conversation.record) >= 2
    assert not conversation.record.has_unacknowledged_prekey_message()
    stored = SessionRecord.deserialize(conversation.record.serialize(), pq_ratchet_factory=FACTORY)
    assert stored.session_version == 4
