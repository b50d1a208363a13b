"""e2e-chat in real pseudo-terminals: a relay process and two chat processes, driven by typing."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.demo.relay import RelayProcess

from .helpers import ROOT, Chats, Terminal

SAFETY_NUMBER = r"safety number for you and {}:\n\s*([\d ]+)\n\s*([\d ]+)\n\s*([\d ]+)\n"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _safety_number(terminal: Terminal, peer: str) -> str:
    return " ".join(terminal.expect(SAFETY_NUMBER.format(peer)).groups())


def test_two_people_chat_verify_and_find_their_history_after_a_restart(chats: Chats) -> None:
    bob = chats.start("bob")
    bob.expect("connected to the relay")
    alice = chats.start("alice")
    alice.expect("connected to the relay")

    alice.type("/help")
    alice.expect(r"/verify \[name\] +show the safety number and its QR code")
    alice.type("/nonsense")
    alice.expect("unknown command /nonsense")
    alice.type("/add bob")
    alice.expect(
        r"added bob: fetched bob's prekey bundle from the relay and started an encrypted session "
        r"\(PQXDH v4 \+ SPQR\)"
    )
    alice.type("hello bob, this is alice")
    alice.expect(r"you → bob: hello bob, this is alice  \(queued\)")
    alice.expect(r"✓ sent to relay: \"hello bob, this is alice\"")
    bob.expect(r"\] alice: hello bob, this is alice")
    # A message does not make its sender the recipient of what Bob types: he chooses.
    bob.expect(r"\(to answer alice: /to alice\)")
    bob.type("/to alice")
    bob.expect("talking to alice")

    bob.type("hi alice")
    alice.expect(r"\] bob: hi alice")

    # Both see the same 60 digits, and a QR code of the scannable form.
    alice.type("/verify")
    alice_number = _safety_number(alice, "bob")
    alice.expect("▄")
    bob.type("/verify alice")
    bob_number = _safety_number(bob, "alice")
    assert alice_number == bob_number
    assert re.fullmatch(r"(\d{5} ){11}\d{5}", alice_number)
    alice.type(f"/verified bob {bob_number}")
    alice.expect("bob verified: the safety numbers match")
    bob.type("/verified alice 12345 67890")
    bob.expect("MISMATCH")

    # Explain mode shows the ratchet's steps, secrets only as fingerprints.
    alice.type("/explain")
    alice.expect("explain on")
    alice.type("second message")
    # A version-4 session: SPQR's part of the message comes first (the chunk in field 5).
    alice.expect(r"· SPQR: (chunk of )?field 5")
    alice.expect(r"· Ratchet: KDF_CK on the sending chain CKs: index=\d+, .*chain_key=#[0-9a-f]{8}")
    bob.expect(r"\] alice: second message")

    # Alice leaves; Bob writes; Alice comes back to her history and the message that waited for her.
    alice.type("/quit")
    assert alice.wait_exit() == 0
    bob.type("are you still there?")
    bob.expect(re.escape('sent to relay: "are you still there?"'))
    alice = chats.start("alice")
    alice.expect(r"── history ──\n.*you → bob: hello bob, this is alice  \(sent to relay\)\n.*bob: hi alice")
    alice.expect(r"bob: are you still there\?  \(arrived while you were away\)")
    alice.type("/contacts")
    alice.expect(r"\* bob  key [0-9a-f]{16}…  verified")
    alice.type("/quit")
    assert alice.wait_exit() == 0
    bob.type("/quit")
    assert bob.wait_exit() == 0


def test_clients_reconnect_by_themselves_when_the_relay_comes_back(chats: Chats, relay: RelayProcess) -> None:
    bob = chats.start("bob")
    bob.expect("connected to the relay")
    alice = chats.start("alice", "--to", "bob")
    alice.expect("connected to the relay")
    alice.type("before the outage")
    bob.expect(r"\] alice: before the outage")

    assert relay.url is not None
    relay.port = int(relay.url.rsplit(":", 1)[1])
    relay.stop()
    alice.expect("the relay is unreachable; reconnecting automatically")
    bob.expect("the relay is unreachable; reconnecting automatically")

    # Written while the relay is down: encrypted and kept, sent when it is back.
    alice.type("during the outage")
    alice.expect(r"you → bob: during the outage  \(queued\)")
    relay.start()
    alice.expect("reconnected to the relay")
    alice.expect('✓ sent to relay: "during the outage"')
    bob.expect(r"\] alice: during the outage")

    for terminal in (alice, bob):
        terminal.type("/quit")
        assert terminal.wait_exit() == 0


def test_a_changed_identity_key_is_a_loud_warning_and_waits_for_accept(
    chats: Chats, relay: RelayProcess, tmp_path: Path
) -> None:
    bob = chats.start("bob")
    bob.expect("connected to the relay")
    alice = chats.start("alice", "--to", "bob")
    alice.expect("connected to the relay")
    alice.type("hello bob")
    bob.expect(r"\] alice: hello bob")
    for terminal in (alice, bob):
        terminal.type("/quit")
        assert terminal.wait_exit() == 0

    # The relay loses its data and someone registers "bob" again with a new identity key: what a
    # reinstall looks like, and also what a man in the middle would look like.
    assert relay.url is not None
    relay.port = int(relay.url.rsplit(":", 1)[1])
    relay.stop()
    for path in tmp_path.glob("relay.sqlite3*"):
        path.unlink()
    relay.start()
    alice = chats.start("alice", "--to", "bob")
    alice.expect("connected to the relay")
    new_bob = chats.start("bob", "--state", str(tmp_path / "new-bob.sqlite3"), "--to", "alice")
    new_bob.expect("connected to the relay")
    new_bob.type("it is me, on a new phone")
    new_bob.expect("sent to relay")

    alice.expect(r"WARNING: bob's identity key CHANGED\n!!   trusted: [0-9a-f]{16}   now: [0-9a-f]{16}")
    alice.expect(r"/accept bob")
    alice.type("are you the real bob?")
    alice.expect("WARNING: bob's identity key CHANGED")
    assert "] bob: it is me, on a new phone" not in alice.text
    alice.type("/contacts")
    alice.expect(r"bob  key [0-9a-f]{16}…  IDENTITY KEY CHANGED")
    alice.type("/accept bob")
    alice.expect("accepted bob's new identity key")
    alice.expect(r"\] bob: it is me, on a new phone")
    for terminal in (alice, new_bob):
        terminal.type("/quit")
        assert terminal.wait_exit() == 0


def test_a_name_taken_by_another_identity_is_refused_with_the_reason(chats: Chats, tmp_path: Path) -> None:
    bob = chats.start("bob")
    bob.expect("connected to the relay")
    impostor = chats.start("bob", "--state", str(tmp_path / "impostor.sqlite3"))
    impostor.expect("registered with a different identity key")
    assert impostor.wait_exit() == 1
    bob.type("/quit")
    assert bob.wait_exit() == 0


def test_three_people_in_a_group_with_an_add_and_a_removal(chats: Chats) -> None:
    alice, bob, carol = (chats.start(name) for name in ("alice", "bob", "carol"))
    for terminal in (alice, bob, carol):
        terminal.expect("connected to the relay")
    alice.type("/group new friends bob")
    alice.expect("created the group friends with bob")
    bob.expect(r"-- \S+ \(epoch 0\): alice created the group; members: alice, bob")
    alice.type("hello group")
    alice.expect(r"friends · you: hello group")
    bob.expect(r"\] friends · alice: hello group")

    # Bob (not an admin) cannot add anyone: his client will not sign such a change (nor would the
    # relay take it).
    bob.type("/group friends")
    bob.expect("talking to the group friends")
    bob.type("/group add carol")
    bob.expect("bob is not an admin")
    bob.type("hi from bob")
    alice.expect(r"friends · bob: hi from bob")

    alice.type("/group add carol")
    carol.expect(r"-- \S+ \(epoch 1\): alice added you; members: alice, bob, carol")
    bob.expect(r"alice added carol")
    alice.type("welcome carol")
    carol.expect(r"friends · alice: welcome carol")
    bob.expect(r"friends · alice: welcome carol")
    carol.type("/group members")
    carol.expect(r"friends: 3 members\n\s*alice  admin  key [0-9a-f]{8}\n\s*bob  member")

    alice.type("/group remove bob")
    bob.expect("you are no longer in friends")
    carol.expect(r"bob left or were removed")
    alice.type("after bob")
    carol.expect(r"friends · alice: after bob")
    bob.type("/group list")
    bob.expect(r"friends  id [0-9a-f]{8}  epoch 2  \(you are no longer in it\)")
    bob.type("/group friends")
    bob.type("/group history")
    bob.expect(r"friends · alice: welcome carol")
    assert "after bob" not in bob.text

    alice.type("/group history 2")
    alice.expect(r"friends · you: welcome carol\n.*friends · you: after bob")
    alice.type("/to carol")
    alice.expect("talking to carol")
    alice.type("just for you")
    carol.expect(r"\] alice: just for you")
    for terminal in (alice, bob, carol):
        terminal.type("/quit")
        assert terminal.wait_exit() == 0


def test_a_laptop_is_linked_sees_both_sides_and_is_unlinked(chats: Chats, tmp_path: Path) -> None:
    """e2e-chat --link shows a code; /link CODE on the primary links it; Bob's message reaches both
    of Alice's devices, the laptop's reply shows on the phone; /unlink stops the laptop."""
    phone = chats.start("alice")
    phone.expect("connected to the relay")
    bob = chats.start("bob", "--to", "alice")
    bob.expect("connected to the relay")
    argv_state = str(tmp_path / "alice-laptop.sqlite3")
    assert chats.relay.url is not None
    laptop = Terminal(
        [
            sys.executable,
            "-m",
            "client.chat",
            "alice",
            "--relay",
            chats.relay.url,
            "--state",
            argv_state,
            "--link",
        ],
        chats.env,
        ROOT,
    )
    chats.terminals.append(laptop)
    code = laptop.expect(r"/link (E2ELINK1-[A-Z2-7]+)").group(1)
    phone.type(f"/link {code}")
    phone.expect("linked device 2")
    laptop.expect("linked as alice's device 2")
    laptop.expect("connected to the relay")
    phone.type("/devices")
    phone.expect(r"2  linked")
    bob.type("hello alice, on every device")
    phone.expect("bob: hello alice, on every device")
    laptop.expect("bob: hello alice, on every device")
    laptop.type("/to bob")
    laptop.type("answered from the laptop")
    phone.expect(r"you \(device 2\) → bob: answered from the laptop")
    bob.expect("alice: answered from the laptop")
    phone.type("/unlink 2")
    phone.expect("unlinked device 2")
    # Logged out by the relay (4005); its next attempt to register is refused: it is not linked.
    laptop.expect(r"the relay refused this device: .*\(not_linked\)")
    assert laptop.wait_exit() == 1
