"""Differential test: random delivery schedules, ours against python-axolotl's own behaviour.

Hypothesis draws a schedule: who sends next, which message in flight is delivered next (in any
order, some only after several DH ratchet steps), and immediate exchanges that drive the DH
ratchet forward.  The same schedule is played three times: our Alice with python-axolotl's Bob,
python-axolotl's Alice with our Bob, and python-axolotl on both sides.  Every delivery's outcome
(decrypted, or refused as invalid, duplicate or too far ahead) and every message's type and
header must be the same in all three runs: whatever python-axolotl accepts we accept, whatever it
refuses we refuse, and what we send looks the same.

One difference is by design and allowed, nothing else: libsignal keeps the keys of skipped
messages inside their receiving chain and drops them when the chain is dropped (more than five
DH ratchet steps later), while our record keeps up to ``Limits.max_stored_skipped_keys`` of them
across chains (oldest evicted first).  A late message whose chain libsignal has dropped is
therefore refused by python-axolotl and may still decrypt with us.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from axolotl.duplicatemessagexception import DuplicateMessageException
from axolotl.invalidmessageexception import InvalidMessageException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.errors import DuplicateMessageError, InvalidMessageError, TooManySkippedMessagesError
from e2e.keys import Rng
from e2e.wire import PreKeySignalMessage, SignalMessage

from .axolotl_peer import PREKEY_TYPE, AxolotlParty
from .keys_with_sign_bit import scalar_with_sign_bit
from .our_peer import OurParty

pytestmark = pytest.mark.interop

Device = AxolotlParty | OurParty
Step = tuple[str, int]
Event = tuple[object, ...]

# libsignal's MAX_RECEIVER_CHAINS, which python-axolotl shares.
RECEIVER_CHAINS = 5

STEPS = st.lists(
    st.tuples(st.sampled_from(["alice", "bob", "deliver", "deliver", "exchange"]), st.integers(0, 1000)),
    min_size=1,
    max_size=50,
)


def _outcome(receiver: Device, message_type: int, body: bytes, plaintext: bytes) -> str:
    try:
        received = receiver.decrypt(message_type, body)
    except (DuplicateMessageError, DuplicateMessageException):
        return "duplicate"
    except TooManySkippedMessagesError:
        return "too far ahead"
    except (InvalidMessageError, InvalidMessageException):
        return "invalid"
    assert received == plaintext
    return "ok"


def _signal_message(message_type: int, body: bytes) -> SignalMessage:
    if message_type == PREKEY_TYPE:
        return PreKeySignalMessage.deserialize(body).message
    return SignalMessage.deserialize(body)


def play(alice: Device, bob: Device, steps: list[Step]) -> list[Event]:
    """Run ``steps``; return what happened, in a form comparable across implementations.

    A delivery's event says whether the message's chain is one the receiver has already dropped
    under libsignal's rule (its ratchet key was received before but is not among the last
    ``RECEIVER_CHAINS`` received), which is where the allowed difference can show.
    """
    alice.start_session(bob.bundle())
    parties = {"alice": alice, "bob": bob}
    in_flight: list[tuple[str, int, bytes, bytes]] = []
    chains: dict[str, list[bytes]] = {"alice": [], "bob": []}
    log: list[Event] = []

    def bob_can_send() -> bool:
        return bool(chains["bob"])

    def send(sender: str, number: int, length: int) -> None:
        plaintext = hashlib.sha256(number.to_bytes(4, "big")).digest()[:length]
        message_type, body = parties[sender].encrypt(plaintext)
        in_flight.append((sender, message_type, body, plaintext))
        message = _signal_message(message_type, body)
        log.append(("send", sender, message_type, message.counter, message.previous_counter))

    def deliver(position: int) -> None:
        sender, message_type, body, plaintext = in_flight.pop(position)
        receiver = "bob" if sender == "alice" else "alice"
        ratchet_key = _signal_message(message_type, body).ratchet_key.raw
        seen = chains[receiver]
        dropped = ratchet_key in seen and ratchet_key not in seen[-RECEIVER_CHAINS:]
        outcome = _outcome(parties[receiver], message_type, body, plaintext)
        if outcome == "ok" and ratchet_key not in seen:
            seen.append(ratchet_key)
        log.append(("deliver", sender, outcome, dropped))

    for number, (action, choice) in enumerate(steps):
        if action == "deliver":
            if in_flight:
                deliver(choice % len(in_flight))
        elif action == "exchange":
            send("alice", number, choice % 40)
            deliver(len(in_flight) - 1)
            if bob_can_send():
                send("bob", number, choice % 40)
                deliver(len(in_flight) - 1)
        else:
            send("bob" if action == "bob" and bob_can_send() else "alice", number, choice % 40)
    while in_flight:
        deliver(0)
    return log


def assert_same(ours: list[Event], reference: list[Event]) -> None:
    assert len(ours) == len(reference)
    for event, expected in zip(ours, reference, strict=True):
        allowed = expected[0] == "deliver" and expected[3] and expected[2] == "invalid"
        if allowed and event == ("deliver", expected[1], "ok", True):
            continue
        assert event == expected


@settings(
    max_examples=30 * int(os.environ.get("E2E_FUZZ_SCALE", "1")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS)
def test_random_schedules_match_axolotl(rng: Rng, steps: list[Step]) -> None:
    alice_scalar = scalar_with_sign_bit(b"differential alice", 0)
    bob_scalar = scalar_with_sign_bit(b"differential bob", 1)
    reference = play(AxolotlParty(alice_scalar), AxolotlParty(bob_scalar), steps)
    assert_same(play(OurParty(rng, alice_scalar), AxolotlParty(bob_scalar), steps), reference)
    assert_same(play(AxolotlParty(alice_scalar), OurParty(rng, bob_scalar), steps), reference)


def test_late_message_after_its_chain_was_dropped(rng: Rng) -> None:
    # Alice's first message is held while the DH ratchet turns six times: python-axolotl has
    # dropped the chain (and the skipped key) by then; we still hold the key.
    steps: list[Step] = [("alice", 5), ("alice", 5), ("deliver", 1)] + [("exchange", 7)] * 6
    alice_scalar = scalar_with_sign_bit(b"late alice", 1)
    bob_scalar = scalar_with_sign_bit(b"late bob", 0)
    reference = play(AxolotlParty(alice_scalar), AxolotlParty(bob_scalar), steps)
    assert reference[-1] == ("deliver", "alice", "invalid", True)
    ours = play(AxolotlParty(alice_scalar), OurParty(rng, bob_scalar), steps)
    assert ours[-1] == ("deliver", "alice", "ok", True)
    assert_same(ours, reference)
