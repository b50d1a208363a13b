"""e2e-chat sends and receives files: a relay process serving the blob service beside it
(``e2e-relay --blobs``), two chat programs in real pseudo-terminals."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.demo.relay import RelayProcess

from .helpers import Terminal, processes_mentioning, program_environment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    # The demo's relay process serves the blob service too (e2e-relay --blobs DIR).
    process = RelayProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _chat(tmp_path: Path, relay: RelayProcess, name: str) -> Terminal:
    assert relay.url is not None
    folder = tmp_path / name
    folder.mkdir()
    argv = [sys.executable, "-m", "client.chat", name, "--relay", relay.url]
    argv += ["--state", str(folder / f"{name}.sqlite3")]
    env = program_environment(tmp_path, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    return Terminal(argv, env, ROOT)


def test_send_a_file_with_progress_and_receive_it_verified(tmp_path: Path, relay: RelayProcess) -> None:
    picture = tmp_path / "beach at dawn.jpg"
    picture.write_bytes(os.urandom(700_000))
    bob = _chat(tmp_path, relay, "bob")
    alice = _chat(tmp_path, relay, "alice")
    try:
        bob.expect("connected to the relay")
        alice.expect("connected to the relay")
        alice.type("/add bob")
        alice.expect("added bob")
        alice.type("/send /nonexistent/file")
        alice.expect("is not a readable file")
        alice.type(f"/send {picture}")
        alice.expect(r"uploading beach at dawn\.jpg \[#+\.+\] [1-9]0%")
        alice.expect(r"uploading beach at dawn\.jpg \[##########\] 100%")
        alice.expect(r"you → bob: file beach at dawn\.jpg  \(queued\)")
        alice.expect(r"✓ sent to relay: the file beach at dawn\.jpg → bob")
        bob.expect(r"alice sent a file: beach at dawn\.jpg \(700000 bytes, image/jpeg\)")
        bob.expect(r"downloading beach at dawn\.jpg \[##########\] 100%")
        saved = tmp_path / "bob" / "files" / "beach at dawn.jpg"
        bob.expect(r"✓ verified and saved: " + str(saved).replace(".", r"\."))
        assert saved.read_bytes() == picture.read_bytes()
        # The same picture again is saved beside the first, never over it.
        alice.type(f"/send {picture}")
        bob.expect(r"✓ verified and saved: .*beach at dawn \(2\)\.jpg")
        assert (tmp_path / "bob" / "files" / "beach at dawn (2).jpg").read_bytes() == picture.read_bytes()
        # A file does not make its sender Bob's recipient either: he chooses.
        assert "(to answer alice: /to alice)" in bob.text
        bob.type("/to alice")
        bob.expect("talking to alice")
        bob.type("/history")
        bob.expect(r"alice: file beach at dawn\.jpg \(700000 bytes\)")
        # The blob service holds only ciphertext.
        stored = [p for p in (relay.blobs / "blobs").iterdir() if p.suffix != ".json"]
        assert len(stored) == 2 and all(picture.read_bytes()[:100] not in p.read_bytes() for p in stored)
        alice.type("/quit")
        bob.type("/quit")
        assert alice.wait_exit() == 0 and bob.wait_exit() == 0
    finally:
        alice.close()
        bob.close()
    relay.stop()
    assert processes_mentioning(str(tmp_path)) == []


def test_a_file_sent_to_a_group_reaches_every_member_verified(tmp_path: Path, relay: RelayProcess) -> None:
    picture = tmp_path / "team.png"
    picture.write_bytes(os.urandom(50_000))
    terminals = {name: _chat(tmp_path, relay, name) for name in ("bob", "carol", "alice")}
    alice, bob, carol = terminals["alice"], terminals["bob"], terminals["carol"]
    try:
        for terminal in terminals.values():
            terminal.expect("connected to the relay")
        alice.type("/group new crew bob carol")
        alice.expect("created the group crew with bob, carol")
        bob.expect(r"alice created the group")
        carol.expect(r"alice created the group")
        alice.type(f"/send {picture}")
        alice.expect(r"uploading team\.png \[##########\] 100%")
        alice.expect(r"crew · you: file team\.png")
        for name, member in (("bob", bob), ("carol", carol)):
            member.expect(r"crew · alice sent a file: team\.png \(50000 bytes, image/png\)")
            saved = tmp_path / name / "files" / "team.png"
            member.expect(r"✓ verified and saved: " + str(saved).replace(".", r"\."))
            assert saved.read_bytes() == picture.read_bytes()
        # One blob on the blob service for the whole group.
        stored = [p for p in (relay.blobs / "blobs").iterdir() if p.suffix != ".json"]
        assert len(stored) == 1
        bob.type("/group crew")
        bob.expect("talking to the group crew")
        bob.type("/group history")
        bob.expect(r"crew · alice: file team\.png \(50000 bytes\)")
        for terminal in terminals.values():
            terminal.type("/quit")
        assert all(terminal.wait_exit() == 0 for terminal in terminals.values())
    finally:
        for terminal in terminals.values():
            terminal.close()
