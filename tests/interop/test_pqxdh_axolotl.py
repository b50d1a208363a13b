"""What a libsignal version-3 implementation (python-axolotl) makes of our PQXDH messages.

Our PQXDH PreKeySignalMessage is libsignal's v3 message plus fields 7 and 8.  A v3 peer skips the
unknown fields, runs X3DH, derives another key and must reject the message at its MAC rather than
accept anything: this is the "fails loudly" claim of ``docs/pqxdh.md``, checked on a real peer.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from axolotl.ecc.curve import Curve
from axolotl.invalidmessageexception import InvalidMessageException
from axolotl.protocol.prekeywhispermessage import PreKeyWhisperMessage

from e2e.kem import KemKeyPair
from e2e.keys import KeyPair, Rng
from e2e.session import SessionRecord
from e2e.wire import MessageType, PreKeySignalMessage

from .axolotl_peer import PREKEY_TYPE, AxolotlParty

pytestmark = pytest.mark.interop


def test_python_axolotl_parses_our_pqxdh_message_and_rejects_it_at_the_mac(rng: Rng) -> None:
    bob = AxolotlParty()
    bundle = bob.bundle()
    kem_key = KemKeyPair.generate(rng)
    signature = Curve.calculateSignature(
        bob.store.getIdentityKeyPair().getPrivateKey(), kem_key.public_key.serialize()
    )
    pq_bundle = replace(
        bundle, kem_pre_key_id=3, kem_pre_key=kem_key.public_key, kem_pre_key_signature=bytes(signature)
    )
    alice = SessionRecord.initiate(KeyPair.generate(rng), 1, pq_bundle, rng)
    assert alice.agreement == "pqxdh"
    ciphertext = alice.encrypt(b"post-quantum hello", rng)
    assert ciphertext.type == MessageType.PREKEY
    # python-axolotl reads the v3 fields of our message and skips 7 and 8.
    parsed = PreKeyWhisperMessage(serialized=ciphertext.body)
    ours = PreKeySignalMessage.deserialize(ciphertext.body)
    assert bytes(parsed.getBaseKey().serialize()) == ours.base_key.serialize()
    assert parsed.getSignedPreKeyId() == ours.signed_pre_key_id
    # Its X3DH key is not our PQXDH key: the inner MAC fails and nothing is decrypted.
    with pytest.raises(InvalidMessageException, match="Bad Mac"):
        bob.decrypt(PREKEY_TYPE, ciphertext.body)


def test_the_same_bundle_without_the_kem_prekey_still_talks_to_python_axolotl(rng: Rng) -> None:
    bob = AxolotlParty()
    alice = SessionRecord.initiate(KeyPair.generate(rng), 1, bob.bundle(), rng)
    assert alice.agreement == "x3dh"
    ciphertext = alice.encrypt(b"classic hello", rng)
    assert bob.decrypt(PREKEY_TYPE, ciphertext.body) == b"classic hello"
