"""The python-axolotl driver on its own: two python-axolotl parties run the whole conversation.

This is the control experiment for the interop tests: when it passes and an interop test fails,
the fault is in our implementation (or in a difference between the two), not in the script or
the driver.
"""

from __future__ import annotations

import pytest

from .axolotl_peer import AxolotlParty
from .conversation import check_types, run_conversation
from .keys_with_sign_bit import scalar_with_sign_bit

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("sign_bit", [0, 1])
def test_axolotl_talks_to_axolotl(sign_bit: int) -> None:
    bob = AxolotlParty(scalar_with_sign_bit(b"axolotl bob", sign_bit), registration_id=11)
    alice = AxolotlParty(scalar_with_sign_bit(b"axolotl alice", 1 - sign_bit), registration_id=12)
    bundle = bob.bundle()
    assert bundle.signed_pre_key_signature[63] >> 7 == sign_bit
    alice.start_session(bundle)
    transcript = run_conversation(alice, bob, seed=sign_bit)
    check_types(transcript)
    assert not bob.has_pre_key()


def test_bundle_signature_verifies_with_our_code() -> None:
    # Our XEdDSA verifier accepts python-axolotl's signatures of either sign bit.
    for sign_bit in (0, 1):
        bundle = AxolotlParty(scalar_with_sign_bit(b"verify", sign_bit)).bundle()
        assert bundle.signed_pre_key_signature[63] >> 7 == sign_bit
        bundle.verify()
