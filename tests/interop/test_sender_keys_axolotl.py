"""Sender Keys in the older framing against python-axolotl's group cipher, both ways.

python-axolotl (a port of WhatsApp-era libsignal-protocol-java) frames its group messages without a
distribution uuid ({1 id, 2 iteration, 3 ciphertext}); our :class:`GroupCipher` speaks it when told
``SenderKeyFraming.AXOLOTL``.  Here python-axolotl processes our distribution messages and decrypts
our group messages (signing keys of both Edwards sign bits, out of order, across several chains), and
we do the same with its messages, refusing its tampered messages and replays with the state unchanged.
Both sides also refuse the other framing: a libsignal-framed message is not python-axolotl's.
"""

from __future__ import annotations

import os
import uuid

import pytest
from axolotl.axolotladdress import AxolotlAddress
from axolotl.duplicatemessagexception import DuplicateMessageException
from axolotl.groups.groupcipher import GroupCipher as AxolotlGroupCipher
from axolotl.groups.groupsessionbuilder import GroupSessionBuilder
from axolotl.groups.senderkeyname import SenderKeyName as AxolotlSenderKeyName
from axolotl.invalidmessageexception import InvalidMessageException
from axolotl.protocol.senderkeydistributionmessage import (
    SenderKeyDistributionMessage as AxolotlDistributionMessage,
)
from axolotl.tests.groups.inmemorysenderkeystore import InMemorySenderKeyStore as AxolotlStore

from e2e.errors import DecodeError, DuplicateMessageError, E2EError
from e2e.group_cipher import GroupCipher, InMemorySenderKeyStore, SenderKeyName
from e2e.keys import KeyPair, PrivateKey
from e2e.sender_key_messages import SenderKeyFraming, SenderKeyMessage
from e2e.sender_key_state import SenderChainKey, SenderKeyRecord, SenderKeyState

from .keys_with_sign_bit import scalar_with_sign_bit

pytestmark = pytest.mark.interop

AXOLOTL = SenderKeyFraming.AXOLOTL
# python-axolotl names a group by a string; our store names it by a distribution id we assign.
GROUP_NAME = "reading group"
GROUP = uuid.UUID("5d41402a-bc4b-4a76-b971-9d911017c592")
OURS = SenderKeyName("ours", 1, GROUP)
THEIRS = SenderKeyName("axolotl", 2, GROUP)


class AxolotlMember:
    """One python-axolotl device in the group: its store and builder."""

    def __init__(self) -> None:
        self.store = AxolotlStore()
        self.builder = GroupSessionBuilder(self.store)

    def cipher(self, sender: SenderKeyName) -> AxolotlGroupCipher:
        return AxolotlGroupCipher(self.store, self._name(sender))

    @staticmethod
    def _name(sender: SenderKeyName) -> AxolotlSenderKeyName:
        return AxolotlSenderKeyName(GROUP_NAME, AxolotlAddress(sender.sender_name, sender.device_id))

    def process(self, sender: SenderKeyName, data: bytes) -> None:
        self.builder.process(self._name(sender), AxolotlDistributionMessage(serialized=data))

    def create(self, sender: SenderKeyName) -> bytes:
        return bytes(self.builder.create(self._name(sender)).serialize())


def _our_chain(store: InMemorySenderKeyStore, sign_bit: int, chain_id: int) -> None:
    signing = KeyPair(PrivateKey(scalar_with_sign_bit(b"axolotl-%d" % chain_id, sign_bit)))
    record = store.load_sender_key(OURS) or SenderKeyRecord()
    record.add_state(
        SenderKeyState(AXOLOTL, chain_id, SenderChainKey(0, os.urandom(32)), signing.public_key, signing)
    )
    store.store_sender_key(OURS, record)


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_axolotl_decrypts_ours_out_of_order(sign_bit: int) -> None:
    store = InMemorySenderKeyStore()
    ours = GroupCipher(store, AXOLOTL)
    _our_chain(store, sign_bit, 777)
    member = AxolotlMember()
    member.process(OURS, ours.create_distribution_message(OURS, os.urandom).serialize())
    plaintexts = [b"", b"x", bytes(16), os.urandom(500), b"m4", b"m5"]
    messages = [ours.encrypt(OURS, plaintext, os.urandom) for plaintext in plaintexts]
    cipher = member.cipher(OURS)
    for number in [2, 0, 5, 1, 4, 3]:
        assert bytes(cipher.decrypt(messages[number])) == plaintexts[number]
    with pytest.raises(DuplicateMessageException):
        cipher.decrypt(messages[0])


def test_axolotl_follows_our_chains() -> None:
    store = InMemorySenderKeyStore()
    ours = GroupCipher(store, AXOLOTL)
    member = AxolotlMember()
    held = []
    for round_number in range(3):
        _our_chain(store, round_number % 2, 500 + round_number)
        member.process(OURS, ours.create_distribution_message(OURS, os.urandom).serialize())
        held.append(ours.encrypt(OURS, b"chain %d" % round_number, os.urandom))
    cipher = member.cipher(OURS)
    for round_number, message in reversed(list(enumerate(held))):
        assert bytes(cipher.decrypt(message)) == b"chain %d" % round_number


def test_axolotl_refuses_our_tampered_messages() -> None:
    ours = GroupCipher(InMemorySenderKeyStore(), AXOLOTL)
    member = AxolotlMember()
    member.process(OURS, ours.create_distribution_message(OURS, os.urandom).serialize())
    message = ours.encrypt(OURS, b"the real one", os.urandom)
    cipher = member.cipher(OURS)
    for position in (1, 10, len(message) - 64, len(message) - 1):
        tampered = bytearray(message)
        tampered[position] ^= 0x20
        with pytest.raises(InvalidMessageException):
            cipher.decrypt(bytes(tampered))
    assert bytes(cipher.decrypt(message)) == b"the real one"


def test_we_decrypt_axolotl_out_of_order() -> None:
    member = AxolotlMember()
    store = InMemorySenderKeyStore()
    ours = GroupCipher(store, AXOLOTL)
    offer = ours.process_distribution_message(THEIRS, member.create(THEIRS))
    assert offer.distribution_id is None
    cipher = member.cipher(THEIRS)
    plaintexts = [b"", b"a", bytes(32), os.urandom(300), b"e", b"f", b"g"]
    messages = [bytes(cipher.encrypt(plaintext)) for plaintext in plaintexts]
    for number in [6, 0, 3, 1, 2, 5, 4]:
        assert ours.decrypt(THEIRS, messages[number]) == plaintexts[number]
    for replay in (messages[0], messages[6]):
        before = store.serialized(THEIRS)
        with pytest.raises(DuplicateMessageError):
            ours.decrypt(THEIRS, replay)
        assert store.serialized(THEIRS) == before


def test_we_keep_several_axolotl_chains() -> None:
    store = InMemorySenderKeyStore()
    ours = GroupCipher(store, AXOLOTL)
    held = []
    for round_number in range(3):
        # python-axolotl makes a new chain when its record is new: a fresh device store each time.
        member = AxolotlMember()
        ours.process_distribution_message(THEIRS, member.create(THEIRS))
        held.append((bytes(member.cipher(THEIRS).encrypt(b"chain %d" % round_number)), round_number))
    for message, round_number in reversed(held):
        assert ours.decrypt(THEIRS, message) == b"chain %d" % round_number
    record = store.load_sender_key(THEIRS)
    assert record is not None and len(record.states) == 3


def test_we_refuse_axolotls_tampered_messages_without_a_trace() -> None:
    member = AxolotlMember()
    store = InMemorySenderKeyStore()
    ours = GroupCipher(store, AXOLOTL)
    ours.process_distribution_message(THEIRS, member.create(THEIRS))
    message = bytes(member.cipher(THEIRS).encrypt(b"from axolotl"))
    for position in range(len(message)):
        tampered = bytearray(message)
        tampered[position] ^= 0x01
        before = store.serialized(THEIRS)
        with pytest.raises(E2EError):
            ours.decrypt(THEIRS, bytes(tampered))
        assert store.serialized(THEIRS) == before
    assert ours.decrypt(THEIRS, message) == b"from axolotl"


def test_the_framings_are_not_interchangeable() -> None:
    member = AxolotlMember()
    libsignal_framed = GroupCipher(InMemorySenderKeyStore(), SenderKeyFraming.LIBSIGNAL)
    with pytest.raises(DecodeError):
        libsignal_framed.process_distribution_message(THEIRS, member.create(THEIRS))
    new_offer = libsignal_framed.create_distribution_message(OURS, os.urandom).serialize()
    with pytest.raises(InvalidMessageException):
        member.process(OURS, new_offer)
    old = GroupCipher(InMemorySenderKeyStore(), AXOLOTL)
    old.process_distribution_message(THEIRS, member.create(THEIRS))
    message = bytes(member.cipher(THEIRS).encrypt(b"old framing"))
    with pytest.raises(DecodeError):
        SenderKeyMessage.deserialize(message, SenderKeyFraming.LIBSIGNAL)
    assert old.decrypt(THEIRS, message) == b"old framing"
