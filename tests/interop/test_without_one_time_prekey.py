"""Sessions from a bundle without a one-time prekey (X3DH §3.3: DH4 is then left out).

A server that has run out of one-time prekeys hands out bundles without one; libsignal then
leaves ``pre_key_id`` out of the PreKeySignalMessage.  python-axolotl as Alice does that, and our
Bob must accept it.  The other direction shows a limit of python-axolotl, not of the format: its
protobuf 2 reading turns the absent ``pre_key_id`` into 0 and it looks up a prekey 0 that does
not exist, so our correct message is refused there.
"""

from __future__ import annotations

import dataclasses

import pytest
from axolotl.invalidkeyidexception import InvalidKeyIdException

from e2e.keys import Rng
from e2e.wire import PreKeySignalMessage

from .axolotl_peer import AxolotlParty
from .conversation import check_types, run_conversation
from .keys_with_sign_bit import scalar_with_sign_bit
from .our_peer import OurParty

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_axolotl_alice_without_one_time_prekey(rng: Rng, sign_bit: int) -> None:
    bob = OurParty(rng, scalar_with_sign_bit(b"no opk bob", sign_bit))
    alice = AxolotlParty(scalar_with_sign_bit(b"no opk alice", 1 - sign_bit))
    alice.start_session(bob.bundle(one_time_pre_key=False))
    _, first = alice.encrypt(b"no one-time prekey")
    assert PreKeySignalMessage.deserialize(first).pre_key_id is None
    transcript = run_conversation(alice, bob, seed=sign_bit)
    check_types(transcript)


def test_our_alice_without_one_time_prekey_omits_the_field(rng: Rng) -> None:
    bob = AxolotlParty(scalar_with_sign_bit(b"no opk axolotl bob", 1))
    bundle = dataclasses.replace(bob.bundle(), pre_key_id=None, pre_key=None)
    alice = OurParty(rng, scalar_with_sign_bit(b"no opk our alice", 0))
    alice.start_session(bundle)
    message_type, body = alice.encrypt(b"hello")
    message = PreKeySignalMessage.deserialize(body)
    assert message.pre_key_id is None
    # Field 1 (tag 0x08) is absent: the body goes straight to field 2, the base key.
    assert body[1:3] == b"\x12\x21"
    with pytest.raises(InvalidKeyIdException):
        bob.decrypt(message_type, body)
