"""Properties of sessions under an adversarial network, checked with hypothesis:

* any delivery order of messages within the limits decrypts every message;
* any single bit flipped anywhere in a SignalMessage or a PreKeySignalMessage is refused with a
  typed error and leaves the record byte-for-byte unchanged (the one exception, the registration
  id that libsignal's format does not authenticate, is pinned by its own test);
* a state machine that sends, drops, reorders, duplicates, persists (serialize, then restore
  from the bytes) and starts new sessions (one side or both at once) for both parties never
  desynchronises an honest pair.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from conftest import DeterministicRng
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from parties import Party, established

from e2e.errors import DuplicateMessageError, E2EError
from e2e.ratchet import Limits
from e2e.session import Ciphertext, SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage

# `make fuzz` raises E2E_FUZZ_SCALE for a long run; `make test` runs the bounded default.
FUZZ_SCALE = int(os.environ.get("E2E_FUZZ_SCALE", "1"))

PROPERTY_SETTINGS = settings(
    max_examples=40 * FUZZ_SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(st.data())
def test_any_delivery_order_within_limits_decrypts(data: st.DataObject) -> None:
    rng = DeterministicRng(b"permutations")
    alice, bob = established(rng)
    records = {"alice": alice, "bob": bob}
    pending: dict[str, list[tuple[Ciphertext, bytes]]] = {"alice": [], "bob": []}
    phases = data.draw(st.lists(st.tuples(st.sampled_from(["alice", "bob"]), st.integers(1, 6)), max_size=4))
    for phase, (sender, count) in enumerate(phases):
        receiver = "bob" if sender == "alice" else "alice"
        for number in range(count):
            plaintext = b"%s %d.%d" % (sender.encode(), phase, number)
            pending[receiver].append((records[sender].encrypt(plaintext, rng), plaintext))
        # The receiver gets some of what is in flight to it, in any order; the rest waits.
        for name in ("alice", "bob"):
            chosen = data.draw(st.permutations(pending[name]))
            delivered = chosen[: data.draw(st.integers(0, len(chosen)))]
            for message, plaintext in delivered:
                assert records[name].decrypt(message.body, rng) == plaintext
                pending[name].remove((message, plaintext))
    for name in ("alice", "bob"):
        for message, plaintext in data.draw(st.permutations(pending[name])):
            assert records[name].decrypt(message.body, rng) == plaintext


def _flip(data: bytes, bit: int) -> bytes:
    return data[: bit // 8] + bytes((data[bit // 8] ^ (1 << (bit % 8)),)) + data[bit // 8 + 1 :]


@PROPERTY_SETTINGS
@given(st.data())
def test_any_bit_flip_in_a_signal_message_is_refused(data: st.DataObject) -> None:
    rng = DeterministicRng(b"bit flips")
    alice, bob = established(rng)
    # Some history, so that skipped keys and several chains exist.
    bob.decrypt(alice.encrypt(b"one", rng).body, rng)
    alice.encrypt(b"skipped", rng)
    sender, receiver = data.draw(st.sampled_from([(alice, bob), (bob, alice)]))
    body = sender.encrypt(b"the message", rng).body
    bit = data.draw(st.integers(0, len(body) * 8 - 1))
    before = receiver.serialize()
    with pytest.raises(E2EError):
        receiver.decrypt(_flip(body, bit), rng)
    assert receiver.serialize() == before
    assert receiver.decrypt(body, rng) == b"the message"


@dataclass
class _Handshake:
    bob_party: Party
    bob: SessionRecord
    first: PreKeySignalMessage
    second: PreKeySignalMessage


def _handshake(bob_has_state: bool) -> _Handshake:
    rng = DeterministicRng(b"prekey bit flips")
    alice_party, bob_party = Party.create(rng, 300), Party.create(rng, 400)
    alice = SessionRecord.initiate(alice_party.identity, 300, bob_party.bundle(rng), rng)
    first = PreKeySignalMessage.deserialize(alice.encrypt(b"first", rng).body)
    second = PreKeySignalMessage.deserialize(alice.encrypt(b"second", rng).body)
    bob = SessionRecord()
    if bob_has_state:
        bob_party.receive(bob, Ciphertext(MessageType.PREKEY, first.serialized), rng)
    return _Handshake(bob_party, bob, first, second)


def _value_bits(message: PreKeySignalMessage, tag: int, with_tag: bool = False) -> range:
    """The bit positions of the value (and with ``with_tag`` the tag too) of the varint field with
    the single-byte ``tag``."""
    data = message.serialized
    inner = data.index(message.message.serialized)
    after = inner + len(message.message.serialized)
    # Fields 1 (before the keys) and 5, 6 (after the inner message) are the varints of the header.
    position = 1 if tag == 0x08 else data.index(bytes((tag,)), after)
    assert data[position] == tag
    length = 1
    while data[position + length] & 0x80:
        length += 1
    return range((position if with_tag else position + 1) * 8, (position + 1 + length) * 8)


@PROPERTY_SETTINGS
@given(st.data())
def test_any_bit_flip_in_a_prekey_message_is_refused(data: st.DataObject) -> None:
    handshake = _handshake(bob_has_state=data.draw(st.booleans()))
    message = handshake.second
    # The registration id is authenticated by nothing (see the next test).  A repeated PreKey
    # message is routed to its state by the base key, and its one-time prekey id is not consulted
    # again: neither its value nor its presence (a changed tag makes it an unknown, skipped field).
    unauthenticated = set(_value_bits(message, 0x28))
    if handshake.bob.has_current_state():
        unauthenticated |= set(_value_bits(message, 0x08, with_tag=True))
    bit = data.draw(
        st.integers(0, len(message.serialized) * 8 - 1).filter(lambda b: b not in unauthenticated)
    )
    rng = DeterministicRng(b"bob")
    before = handshake.bob.serialize()
    flipped = Ciphertext(MessageType.PREKEY, _flip(message.serialized, bit))
    # The client layer looks Bob's prekeys up by the ids in the message: a changed id finds none.
    with pytest.raises((E2EError, KeyError)):
        handshake.bob_party.receive(handshake.bob, flipped, rng)
    assert handshake.bob.serialize() == before
    assert handshake.bob_party.receive(
        handshake.bob, Ciphertext(MessageType.PREKEY, message.serialized), rng
    ) == (b"second")


def test_registration_id_is_not_authenticated_by_the_format() -> None:
    """libsignal's PreKeySignalMessage carries the registration id outside every MAC and KDF, so a
    changed one goes unnoticed: the record stores what arrived.  Pinned here so that it stays a
    known, documented property rather than a surprise."""
    handshake = _handshake(bob_has_state=False)
    message = handshake.first
    bit = _value_bits(message, 0x28)[0]
    flipped = PreKeySignalMessage.deserialize(_flip(message.serialized, bit))
    assert flipped.registration_id != message.registration_id
    rng = DeterministicRng(b"bob")
    handshake.bob_party.receive(handshake.bob, Ciphertext(MessageType.PREKEY, flipped.serialized), rng)
    assert handshake.bob.remote_registration_id == flipped.registration_id


@dataclass
class _InFlight:
    number: int
    receiver: str
    message: Ciphertext
    plaintext: bytes


class HonestPair(RuleBasedStateMachine):
    """Alice and Bob over a network that drops, reorders and duplicates, each persisting at will."""

    @initialize()
    def start(self) -> None:
        self.rng = DeterministicRng(b"state machine")
        # Generous chain and archive limits: this machine checks synchronisation, not eviction.
        limits = Limits(max_receiver_chains=100)
        self.parties = {"alice": Party.create(self.rng, 10), "bob": Party.create(self.rng, 20)}
        alice = SessionRecord.initiate(
            self.parties["alice"].identity, 10, self.parties["bob"].bundle(self.rng), self.rng, limits
        )
        self.records = {"alice": alice, "bob": SessionRecord(limits)}
        self.limits = limits
        self.network: list[_InFlight] = []
        self.delivered: set[int] = set()
        self.sent = 0
        self.restarts = 0

    def _send(self, sender: str) -> None:
        receiver = "bob" if sender == "alice" else "alice"
        plaintext = b"%s says %d" % (sender.encode(), self.sent)
        message = self.records[sender].encrypt(plaintext, self.rng)
        self.network.append(_InFlight(self.sent, receiver, message, plaintext))
        self.sent += 1

    @rule()
    def alice_sends(self) -> None:
        self._send("alice")

    @precondition(lambda self: self.records["bob"].has_current_state())
    @rule()
    def bob_sends(self) -> None:
        self._send("bob")

    @precondition(lambda self: bool(self.network))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Deliver any message in flight (so: in any order); a second copy must be a duplicate."""
        self._deliver(self.network.pop(data.draw(st.integers(0, len(self.network) - 1))))

    def _deliver(self, item: _InFlight) -> None:
        record = self.records[item.receiver]
        if item.number in self.delivered:
            before = record.serialize()
            with pytest.raises(DuplicateMessageError):
                self.parties[item.receiver].receive(record, item.message, self.rng)
            assert record.serialize() == before
        else:
            assert self.parties[item.receiver].receive(record, item.message, self.rng) == item.plaintext
            self.delivered.add(item.number)

    @precondition(lambda self: bool(self.network))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.network.pop(data.draw(st.integers(0, len(self.network) - 1)))

    @precondition(lambda self: bool(self.network))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        self.network.append(self.network[data.draw(st.integers(0, len(self.network) - 1))])

    @precondition(lambda self: self.restarts < 4)
    @rule(name=st.sampled_from(["alice", "bob"]))
    def start_a_new_session(self, name: str) -> None:
        """Either side starts over from the other's bundle (as after a reinstall, or both at once):
        the old state is archived, and messages still in flight for it must still decrypt."""
        other = "bob" if name == "alice" else "alice"
        bundle = self.parties[other].bundle(self.rng, with_one_time=False)
        party = self.parties[name]
        self.records[name].start_session(party.identity, party.registration_id, bundle, self.rng)
        self.restarts += 1

    @rule(name=st.sampled_from(["alice", "bob"]))
    def persist_and_restore(self, name: str) -> None:
        data = self.records[name].serialize()
        self.records[name] = SessionRecord.deserialize(data, self.limits)
        assert self.records[name].serialize() == data

    @invariant()
    def alice_always_has_a_session(self) -> None:
        assert self.records["alice"].has_current_state()

    def teardown(self) -> None:
        """Whatever is still in flight is delivered at last, and all of it still decrypts."""
        if hasattr(self, "network"):
            for item in self.network:
                self._deliver(item)


HonestPair.TestCase.settings = settings(
    max_examples=50 * FUZZ_SCALE,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHonestPair = HonestPair.TestCase
