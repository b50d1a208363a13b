"""A group over a hostile network: senders that rotate, a fan-out that drops, reorders and duplicates.

A hypothesis state machine runs three members, each a sender and a receiver of everyone else: two are
this project's :class:`GroupCipher`, and in :class:`MixedGroup` the third is libsignal itself (the
Node peer).  Distribution messages travel reliably (they would go over the pairwise sessions); group
messages go through a network that may deliver any in-flight message, deliver it again, or lose it.
The model predicts every outcome: a message decrypts exactly once to its plaintext while its chain is
among the receiver's five newest of that sender; a second delivery is a duplicate; a message of a
chain pushed out by five newer ones finds no sender key.  A refused message leaves our stores as
they were.
"""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from e2e.errors import DuplicateMessageError, NoSenderKeyError
from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore, SenderKeyName
from e2e.sender_key_messages import SenderKeyDistributionMessage, SenderKeyFraming, SenderKeyMessage
from e2e.sender_key_state import MAX_SENDER_KEY_STATES

from .node_peer import Address, NodePeer, NodePeerError

pytestmark = pytest.mark.interop

FUZZ_SCALE = int(os.environ.get("E2E_FUZZ_SCALE", "1"))
GROUP = uuid.UUID("3c9a1f64-0b7e-4d2a-9f51-8e6c2d4b7a90")
_party_numbers = itertools.count()


class OurMember:
    """A member running this project's group cipher."""

    def __init__(self, name: str) -> None:
        self.name = SenderKeyName(name, 1, GROUP)
        self.store = InMemorySenderKeyStore()
        self.cipher = GroupCipher(self.store, SenderKeyFraming.LIBSIGNAL)

    def distribution(self) -> bytes:
        return self.cipher.create_distribution_message(self.name, os.urandom).serialize()

    def rotate(self) -> bytes:
        return self.cipher.rotate(self.name, os.urandom).serialize()

    def process(self, sender: SenderKeyName, data: bytes) -> None:
        self.cipher.process_distribution_message(sender, data)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self.cipher.encrypt(self.name, plaintext, os.urandom)

    def decrypt(self, sender: SenderKeyName, data: bytes) -> bytes | str:
        before = self.store.serialized(sender)
        try:
            return self.cipher.decrypt(sender, data)
        except DuplicateMessageError:
            outcome = "duplicate"
        except NoSenderKeyError:
            outcome = "no sender key"
        assert self.store.serialized(sender) == before
        return outcome


class LibsignalMember:
    """A member running libsignal in the shared Node peer, under a party name of its own."""

    def __init__(self, peer: NodePeer, name: str) -> None:
        self.peer = peer
        self.party = f"{name}-{next(_party_numbers)}"
        self.name = SenderKeyName(self.party, 1, GROUP)
        self.address = Address(self.party, 1)
        peer.create_identity(self.party)

    def distribution(self) -> bytes:
        return self.peer.sender_key_distribution_create(self.party, self.address, str(GROUP))

    def rotate(self) -> bytes:
        self.peer.sender_key_record_delete(self.party, self.address, str(GROUP))
        return self.distribution()

    def process(self, sender: SenderKeyName, data: bytes) -> None:
        self.peer.sender_key_distribution_process(
            self.party, Address(sender.sender_name, sender.device_id), data
        )

    def encrypt(self, plaintext: bytes) -> bytes:
        return self.peer.group_encrypt(self.party, self.address, str(GROUP), plaintext)

    def decrypt(self, sender: SenderKeyName, data: bytes) -> bytes | str:
        try:
            return self.peer.group_decrypt(self.party, Address(sender.sender_name, sender.device_id), data)
        except NodePeerError as error:
            if error.code == "DuplicatedMessage":
                return "duplicate"
            if "missing sender key state" in error.message:
                return "no sender key"
            raise


Member = OurMember | LibsignalMember


@dataclass
class InFlight:
    sender: int
    receiver: int
    chain_id: int
    plaintext: bytes
    data: bytes


@dataclass
class Model:
    """What each receiver has of each sender: the chain ids it keeps, newest first, and what it read."""

    chains: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    read: set[tuple[int, bytes]] = field(default_factory=set)


class GroupMachine(RuleBasedStateMachine):
    """Three members; subclasses say which implementations they are."""

    peer: NodePeer | None = None

    def make_members(self) -> list[Member]:
        return [OurMember("a"), OurMember("b"), OurMember("c")]

    @initialize()
    def start(self) -> None:
        self.members = self.make_members()
        self.model = Model()
        self.network: list[InFlight] = []
        self.sent = 0
        for sender in range(len(self.members)):
            self._distribute(sender, self.members[sender].distribution())

    def _distribute(self, sender: int, data: bytes) -> None:
        chain_id = SenderKeyDistributionMessage.deserialize(data, SenderKeyFraming.LIBSIGNAL).chain_id
        for receiver, member in enumerate(self.members):
            if receiver == sender:
                continue
            member.process(self.members[sender].name, data)
            chains = self.model.chains.setdefault((receiver, sender), [])
            if chain_id in chains:
                chains.remove(chain_id)
            chains.insert(0, chain_id)
            del chains[MAX_SENDER_KEY_STATES:]

    @rule(sender=st.integers(0, 2), padding=st.integers(0, 100))
    def send(self, sender: int, padding: int) -> None:
        plaintext = b"message %d from %d " % (self.sent, sender) + bytes(padding)
        self.sent += 1
        data = self.members[sender].encrypt(plaintext)
        chain_id = SenderKeyMessage.deserialize(data, SenderKeyFraming.LIBSIGNAL).chain_id
        for receiver in range(len(self.members)):
            if receiver != sender:
                self.network.append(InFlight(sender, receiver, chain_id, plaintext, data))

    @rule(sender=st.integers(0, 2))
    def rotate(self, sender: int) -> None:
        self._distribute(sender, self.members[sender].rotate())

    @precondition(lambda self: self.network)
    @rule(choice=st.integers(0, 10_000), again=st.booleans())
    def deliver(self, choice: int, again: bool) -> None:
        message = self.network[choice % len(self.network)]
        if not again:
            self.network.remove(message)
        receiver = self.members[message.receiver]
        outcome = receiver.decrypt(self.members[message.sender].name, message.data)
        kept = message.chain_id in self.model.chains[(message.receiver, message.sender)]
        key = (message.receiver, message.data)
        if not kept:
            expected: bytes | str = "no sender key"
        elif key in self.model.read:
            expected = "duplicate"
        else:
            expected = message.plaintext
        assert outcome == expected
        if isinstance(outcome, bytes):
            self.model.read.add(key)

    @precondition(lambda self: self.network)
    @rule(choice=st.integers(0, 10_000))
    def lose(self, choice: int) -> None:
        del self.network[choice % len(self.network)]

    @invariant()
    def bounded(self) -> None:
        for chains in self.model.chains.values():
            assert len(chains) <= MAX_SENDER_KEY_STATES


class OursGroup(GroupMachine):
    pass


class MixedGroup(GroupMachine):
    def make_members(self) -> list[Member]:
        assert self.peer is not None
        return [OurMember("a"), LibsignalMember(self.peer, "libsignal"), OurMember("c")]


_SETTINGS = settings(
    max_examples=25 * FUZZ_SCALE,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_our_members_over_a_hostile_network() -> None:
    OursGroup.TestCase.settings = _SETTINGS
    OursGroup.TestCase().runTest()


def test_libsignal_among_our_members_over_a_hostile_network() -> None:
    with NodePeer() as peer:
        MixedGroup.peer = peer
        try:
            MixedGroup.TestCase.settings = settings(_SETTINGS, max_examples=15 * FUZZ_SCALE)
            MixedGroup.TestCase().runTest()
        finally:
            MixedGroup.peer = None
