"""e2e-chat with businesses, in a real pseudo-terminal: a relay process, the parcel bot in an e2e-bot
process with a certificate from a directory, a chat configured with the directory key.

The chat shows the bot's verified name, its quick replies numbered, sends the structured reply when
the user types the number, shows the later notification, and hides everything after /block.  A bot
whose certificate another key signed is flagged as unverified and never shown under its claim."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.demo.relay import RelayProcess

from .helpers import Terminal, processes_mentioning, program_environment

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        env=program_environment(tmp_path),
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


class Bots:
    def __init__(self, tmp_path: Path, relay_url: str) -> None:
        self.tmp_path = tmp_path
        self.relay_url = relay_url
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, account: str, directory_key: str, name: str) -> None:
        data = self.tmp_path / account
        common = ["--account", account, "--data", str(data), "--relay", self.relay_url]
        identity = _run(self.tmp_path, "client.bot", "x.py", *common, "--print-identity")
        certificate = self.tmp_path / f"{account}.cert"
        _run(
            self.tmp_path,
            "client.directory",
            "issue",
            "--key",
            directory_key,
            "--account",
            account,
            "--identity-key",
            identity,
            "--name",
            name,
            "--out",
            str(certificate),
        )
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "client.bot", str(ROOT / "client" / "examples" / "parcel_bot.py")),
                *common,
                *("--certificate", str(certificate), "--set", "step=1"),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=program_environment(self.tmp_path),
            cwd=self.tmp_path,
        )
        self.processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"e2e-bot: {account} ready"

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            assert process.wait(timeout=30) == 0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[RelayProcess, Bots]]:
    relay = RelayProcess(tmp_path)
    relay.start()
    assert relay.url is not None
    bots = Bots(tmp_path, relay.url)
    try:
        yield relay, bots
    finally:
        for process in bots.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        relay.stop()


def test_the_chat_shows_a_verified_business_its_quick_replies_and_blocks_it(
    tmp_path: Path, world: tuple[RelayProcess, Bots]
) -> None:
    relay, bots = world
    directory = _run(tmp_path, "client.directory", "keygen", "--key", "dir.key")
    forger = _run(tmp_path, "client.directory", "keygen", "--key", "forger.key")
    assert directory != forger
    bots.start("parcels", "dir.key", "Parcel Depot")
    bots.start("parcel-depot", "forger.key", "Parcel Depot")

    env = program_environment(tmp_path, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    argv = [sys.executable, "-m", "client.chat", "alice", "--relay", str(relay.url)]
    argv += ["--state", str(tmp_path / "alice.sqlite3"), "--directory-key", str(tmp_path / "dir.key.pub")]
    alice = Terminal(argv, env, ROOT)
    try:
        alice.expect("connected to the relay")
        alice.type("/add parcels")
        alice.expect("added parcels")
        alice.type("where is PD123456?")
        alice.expect(r'✓ parcels ✓ "Parcel Depot" is a verified business')
        alice.expect(r'parcels ✓ "Parcel Depot": Parcel PD123456 is at the sorting centre\.')
        alice.expect(r'parcels ✓ "Parcel Depot": Shall I tell you when parcel PD123456 moves\?')
        alice.expect(r"1\. Notify me of updates")
        alice.expect(r"2\. No, thanks")
        alice.type("1")
        alice.expect(r"you → parcels: picked 1\. Notify me of updates")
        alice.expect(r'parcels ✓ "Parcel Depot": Done: you will get a message when parcel PD123456 moves')
        alice.expect(r'parcels ✓ "Parcel Depot": Update: parcel PD123456 has left the depot\.')
        alice.type("/block parcels")
        alice.expect("blocked parcels")
        alice.type("anything")
        alice.expect(r"not sent: you blocked parcels")
        # The feed moves the parcel on every second: its next update arrives, and is not shown.
        time.sleep(2.5)
        alice.type("/contacts")
        alice.expect(r"parcels +key")
        assert "out for delivery" not in alice.text.split("blocked parcels", 1)[1]

        # The impostor signed by another key: flagged, and shown by its account name only.
        alice.type("/add parcel-depot")
        alice.type("PD123456")
        alice.expect(
            r"!! parcel-depot has no verified business name: "
            r"certificate refused \(CertificateSignatureError\)"
        )
        alice.expect(r"\] parcel-depot: Parcel PD123456 is at the sorting centre\.")
        alice.expect(r"\] parcel-depot: Shall I tell you")
        alice.type("/business parcel-depot")
        alice.expect(r"!! parcel-depot has no verified business name")
        # Blocked for good: the blocked parcels bot's next update never shows, even after a restart.
        alice.type("/quit")
        assert alice.wait_exit(30) == 0
        alice = Terminal(argv, env, ROOT)
        alice.expect("connected to the relay")
        alice.type("/to parcels")
        alice.type("hello")
        alice.expect("not sent: you blocked parcels")
        # Nor does the history show what the blocked account sent.
        assert "out for delivery" not in alice.text and "Parcel Depot" not in alice.text
        alice.type("/unblock parcels")
        alice.expect("unblocked parcels")
        alice.type("/quit")
        assert alice.wait_exit(30) == 0
    finally:
        alice.close()
    bots.stop()
    assert processes_mentioning(str(tmp_path / "alice.sqlite3")) == []


def test_the_desk_shows_hostile_business_content_inert_and_keeps_a_versioned_block_list(
    tmp_path: Path,
) -> None:
    import json

    from client import envelope
    from client.chat.business import BusinessDesk
    from client.events import Message
    from client.structured import QuickReplies, QuickReplyOption, encode_offer

    lines: list[str] = []
    blocked = tmp_path / "alice.sqlite3.blocked.json"
    desk = BusinessDesk(None, None, blocked, lines.append)  # type: ignore[arg-type]

    def message(sender: str, body: bytes, content_type: int = envelope.CONTENT_TEXT) -> Message:
        return Message(sender, 1, "00" * 16, 0, 0, body, content_type)

    offer = QuickReplies(bytes(8), "Pick\x1b[2J one\u202e", (QuickReplyOption("a", "First"),))
    assert desk.handles(message("shop", encode_offer(offer), envelope.CONTENT_QUICK_REPLIES), str)
    assert "\x1b" not in "\n".join(lines) and "\u202e" not in "\n".join(lines)
    assert "      1. First" in lines
    # Once a contact made offers, its text is shown by the desk, inert too.
    assert desk.handles(message("shop", b"bye\x1b]0;owned\x07"), str)
    assert "\x1b" not in lines[-1] and "\x07" not in lines[-1]
    assert desk.choice("shop", "1") == 1 and desk.choice("shop", "2") is None
    bad = envelope.with_fallback("x", b"\x01")
    assert desk.handles(message("shop", bad, envelope.CONTENT_QUICK_REPLIES), str)
    assert "sent quick replies that were refused" in lines[-1]
    # Ordinary contacts are the application's to show.
    assert not desk.handles(message("bob", b"hi"), str)

    desk.block("shop")
    shown = len(lines)
    assert desk.handles(message("shop", b"unseen"), str) and len(lines) == shown
    assert json.loads(blocked.read_text()) == {
        "format": "e2e-chat-blocked",
        "version": 1,
        "accounts": ["shop"],
    }
    assert BusinessDesk(None, None, blocked, lines.append).blocked == {"shop"}  # type: ignore[arg-type]
    blocked.write_text(json.dumps({"format": "e2e-chat-blocked", "version": 2, "accounts": ["x"]}))
    again = BusinessDesk(None, None, blocked, lines.append)  # type: ignore[arg-type]
    assert again.blocked == set() and "not a version-1 block list" in lines[-1]
