"""e2e-chat against hostile contacts, careless input and rude endings, in real pseudo-terminals.

A real relay process on loopback, e2e-chat processes driven by typing, and, where a contact must
send what no e2e-chat would (escape sequences in a body), a library client in this process speaking
to the same relay.  Where the relay itself is the attacker (hostile error reasons), a WebSocket
server on loopback plays it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from client import Client, Settings
from client.demo.relay import RelayProcess

from .helpers import Chats, Terminal

SETTINGS = Settings(pre_key_batch=10, pre_key_target=10, pre_key_low_water=3)

HOSTILE = (
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]0;pwned-title\x07"  # retitle the window
    "\x1b[31mred\x1b[0m"  # colour
    "\r\n[16:30] bob: forged line from bob"  # a fake line from another contact
    "\x9b2J"  # CSI as one C1 character
    " \u202etxt.exe\u202c \u2066isolated\u2069"  # bidi override and isolate
)
"""A message body no honest client sends: every way of reaching the terminal at once."""

FORBIDDEN_RAW = [
    "\x1b]0;pwned",
    "\x1b[2J\x1b[H",
    "\x1b[31mred",
    "\x9b",
    "\u202e",
    "\u2066",
    "\r\n[16:30] bob",
]
"""What must never appear in what e2e-chat writes to its terminal."""


def library_client(url: str, path: Path, name: str, work: Callable[[Client], Awaitable[None]]) -> None:
    """Run ``work`` with a connected library client (created on first use), then close it."""

    async def run() -> None:
        if path.exists():
            client = Client.open(path, url, settings=work_settings.get(name, SETTINGS))
        else:
            client = Client.create(path, url, name, settings=work_settings.get(name, SETTINGS))
        try:
            await client.start()
            await client.wait_connected(20)
            await work(client)
        finally:
            await client.close()

    asyncio.run(run())


work_settings: dict[str, Settings] = {}


async def registered(client: Client) -> None:
    """Nothing more than registering (``wait_connected`` already did)."""


def send(recipient: str, body: bytes | str) -> Callable[[Client], Awaitable[None]]:
    async def work(client: Client) -> None:
        await client.send(recipient, body)
        await client.flush(20)

    return work


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path, options=["--max-body-bytes", "3000"])
    process.start()
    try:
        yield process
    finally:
        process.stop()


def assert_inert(terminal: Terminal) -> None:
    for forbidden in FORBIDDEN_RAW:
        assert forbidden not in terminal.raw, f"{forbidden!r} reached the terminal"


def test_a_hostile_contacts_text_reaches_the_terminal_inert_live_and_in_history(
    chats: Chats, tmp_path: Path
) -> None:
    alice = chats.start("alice")
    alice.expect("connected to the relay")
    library_client(chats.url, tmp_path / "mallory.db", "mallory", send("alice", HOSTILE))
    shown = re.escape(
        r"\x1b[2J\x1b[H\x1b]0;pwned-title\x07\x1b[31mred\x1b[0m\r\n[16:30] bob: forged line from bob"
        r"\x9b2J \u202etxt.exe\u202c \u2066isolated\u2069"
    )
    alice.expect(r"\] mallory: " + shown + "\n")
    # The message did not make mallory the recipient of what alice types next.
    alice.expect(r"\(to answer mallory: /to mallory\)")
    alice.type("/contacts")
    alice.expect(r"  mallory  key [0-9a-f]{16}…  not verified")
    alice.type("/quit")
    assert alice.wait_exit() == 0
    assert_inert(alice)

    # The history replays it, inert again.
    alice = chats.start("alice")
    alice.expect(r"── history ──\n.*\] mallory: " + shown)
    alice.expect("add a contact with /add NAME")
    alice.type("/quit")
    assert alice.wait_exit() == 0
    assert_inert(alice)


def test_pasted_bytes_that_are_not_text_are_refused_in_one_line_and_the_chat_goes_on(
    chats: Chats, tmp_path: Path
) -> None:
    library_client(chats.url, tmp_path / "bob.db", "bob", registered)
    alice = chats.start("alice")
    alice.expect("connected to the relay")
    alice.type("/add bob")
    alice.expect("added bob")
    alice.type_bytes(b"binary \xff\xfe\x80 paste\r")
    alice.expect(r"!! not sent: the text holds a character that is not valid Unicode text at position 7")
    alice.type_bytes(b"/add \xffbob\r")
    alice.expect(r"is not an account name")
    alice.type("still here")
    alice.expect(r'✓ sent to relay: "still here"')
    alice.type("/quit")
    assert alice.wait_exit() == 0
    assert "Traceback" not in alice.text
    assert "\udcff" not in alice.raw


def test_a_message_too_large_is_refused_before_encryption_and_one_the_relay_refuses_is_marked_failed(
    chats: Chats, tmp_path: Path
) -> None:
    library_client(chats.url, tmp_path / "bob.db", "bob", registered)
    alice = chats.start("alice")
    alice.expect("connected to the relay")
    alice.type("/add bob")
    alice.expect("added bob")

    # This relay runs with --max-body-bytes 3000, below the client's 96 KiB: it refuses for good.
    alice.type("x" * 3500)
    alice.expect(r"\(queued\)")
    alice.expect(r"!! NOT delivered: the relay refused \"x{39}…\" → bob \(too_large: the message is larger")
    alice.type("/history")
    alice.expect(r"you → bob: x{3500}  \(NOT delivered: the relay refused it, too_large")
    alice.type("/quit")
    assert alice.wait_exit() == 0

    # It stays marked after a restart.  A 120,000-character paste (no bracketed paste: one key
    # press per character) is cut at the largest message and refused on Enter, at once.
    alice = chats.start("alice")
    alice.expect(r"you → bob: x{3500}  \(NOT delivered: the relay refused it, too_large")
    alice.expect("talking to bob")
    alice.paste("y" * 120_000)
    alice.expect(r"!! the line is longer than the largest message \(96,256 bytes\)", timeout=60)
    alice.type("")
    alice.expect(
        r"!! not sent: the message is 96,257 bytes; the largest the relay accepts is 96,256 bytes; "
        r"nothing was queued",
        timeout=60,
    )
    alice.type("short again")
    alice.expect(r'✓ sent to relay: "short again"')
    alice.type("/quit")
    assert alice.wait_exit() == 0


def test_state_files_are_private_and_bad_names_or_urls_create_nothing(chats: Chats, tmp_path: Path) -> None:
    data = tmp_path / "data"
    chats.env["XDG_DATA_HOME"] = str(data)
    bad_name = chats.start("../../x y", state=False)
    assert bad_name.wait_exit() == 2
    assert "is not an account name" in bad_name.text
    bad_url = chats.start("alice", state=False, relay="http://127.0.0.1:1")
    assert bad_url.wait_exit() == 2
    assert "is not a relay URL" in bad_url.text
    assert not data.exists() and not (tmp_path.parent / "x y.sqlite3").exists()

    alice = chats.start("alice", state=False)
    alice.expect("connected to the relay")
    folder = data / "e2e-chat"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["alice.sqlite3", "alice.sqlite3-shm", "alice.sqlite3-wal"]
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    alice.type("/quit")
    assert alice.wait_exit() == 0

    # A name taken by another identity: refused by the relay, and no half-made state file stays.
    impostor = chats.start("alice", "--state", str(tmp_path / "impostor" / "alice.sqlite3"), state=False)
    impostor.expect("registered with a different identity key")
    assert impostor.wait_exit() == 1
    assert impostor.text.count("registered with a different identity key") == 1
    assert not (tmp_path / "impostor").exists()


def test_ctrl_c_sigterm_and_being_displaced_each_end_in_one_line_and_a_clean_close(
    chats: Chats, relay: RelayProcess
) -> None:
    alice = chats.start("alice")
    alice.expect("connected to the relay")
    alice.child.send("\x03")
    assert alice.wait_exit() == 130
    assert "e2e-chat: interrupted (Ctrl-C); closed" in alice.text
    assert "Traceback" not in alice.text and "never retrieved" not in alice.text

    alice = chats.start("alice")
    alice.expect("connected to the relay")
    alice.child.kill(signal.SIGTERM)
    assert alice.wait_exit() == 143
    assert alice.text.count("e2e-chat: terminated (SIGTERM); closed") == 1
    assert "Traceback" not in alice.text

    alice = chats.start("alice")
    alice.expect("connected to the relay")
    alice.child.kill(signal.SIGHUP)
    assert alice.wait_exit() == 129
    assert "Traceback" not in alice.text

    # All three closed their connection properly (1000), not by dying (1006).
    codes = re.findall(r"disconnected .*device=alice\S* code=(\d+)", relay.log.read_text())
    assert codes == ["1000", "1000", "1000"]

    # The same device started twice: the newer connection displaces the older one.
    first = chats.start("alice")
    first.expect("connected to the relay")
    second = chats.start("alice")
    second.expect("connected to the relay")
    assert first.wait_exit() == 1
    assert first.text.count("displaced") == 1
    assert "e2e-chat: another connection of this device displaced this one" in first.text
    assert "Traceback" not in first.text
    second.type("/quit")
    assert second.wait_exit() == 0


def test_a_first_message_with_no_relay_is_refused_at_once_with_the_reason(
    chats: Chats, relay: RelayProcess, tmp_path: Path
) -> None:
    library_client(chats.url, tmp_path / "bob.db", "bob", registered)
    alice = chats.start("alice", "--to", "bob")
    alice.expect("connected to the relay")
    relay.port = int(chats.url.rsplit(":", 1)[1])
    relay.stop()
    alice.expect("the relay is unreachable")
    alice.type("hello bob")
    alice.expect(
        r"!! not sent: the relay is unreachable, and a first message to bob needs bob's prekey bundle "
        r"from it; nothing was queued",
        timeout=5,
    )
    alice.type("/add carol")
    alice.expect(r"!! cannot add carol now: the relay is unreachable", timeout=5)
    alice.type("/quit")
    assert alice.wait_exit() == 0


def test_add_checks_the_account_names_the_agreement_and_a_stranger_never_becomes_the_recipient(
    chats: Chats, tmp_path: Path
) -> None:
    work_settings["carol"] = Settings(
        pre_key_batch=10,
        pre_key_target=10,
        pre_key_low_water=3,
        publish_kem_pre_keys=False,
        publish_kyber_pre_keys=False,
    )
    try:
        library_client(chats.url, tmp_path / "bob.db", "bob", registered)
        library_client(chats.url, tmp_path / "carol.db", "carol", registered)
    finally:
        del work_settings["carol"]
    alice = chats.start("alice")
    alice.expect("connected to the relay")
    alice.type("/add nobody")
    alice.expect("!! no account named nobody on the relay; nothing was added")
    alice.type("hello?")
    alice.expect("no contact yet: /add NAME first")
    alice.type("/add carol")
    alice.expect(r"started an encrypted session \(X3DH\); talking to carol")
    alice.type("/add bob")
    alice.expect(r"started an encrypted session \(PQXDH v4 \+ SPQR\); talking to bob")
    alice.type("hello bob")
    alice.expect(r'✓ sent to relay: "hello bob"')
    alice.type("/quit")
    assert alice.wait_exit() == 0

    # Mallory writes last; after a restart alice still talks to bob, whom she wrote to last.
    library_client(chats.url, tmp_path / "mallory.db", "mallory", send("alice", "it's me, talk to me"))
    alice = chats.start("alice")
    alice.expect("talking to bob")
    alice.expect(r"mallory: it's me, talk to me  \(arrived while you were away\)")
    alice.expect(r"\(to answer mallory: /to mallory\)|")
    alice.type("/contacts")
    alice.expect(r"\* bob  key")
    alice.type("/quit")
    assert alice.wait_exit() == 0


class HostileRelay:
    """A WebSocket server on loopback that plays a relay refusing everything with hostile reasons.

    It runs its own event loop in a thread, so the test can drive a pty meanwhile.
    """

    CODE = "bad_proof\x1b]0;pwned-title\x07"
    MESSAGE = "\x1b[2J\x1b[Hyour account is \u202edeleted\r\n[16:30] bob: forged"

    def __init__(self) -> None:
        import threading

        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        import base64
        import json
        import os

        from websockets.asyncio.server import serve

        async def handle(ws) -> None:
            challenge = base64.b64encode(os.urandom(32)).decode()
            await ws.send(json.dumps({"v": 1, "push": "challenge", "challenge": challenge, "origin": "x"}))
            async for frame in ws:
                request = json.loads(frame)
                error = {"code": self.CODE, "message": self.MESSAGE}
                await ws.send(json.dumps({"v": 1, "id": request.get("id"), "ok": False, "error": error}))

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(handle, "127.0.0.1", 0) as server:
            self.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> HostileRelay:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_a_hostile_relays_error_reasons_reach_the_terminal_inert(chats: Chats, tmp_path: Path) -> None:
    with HostileRelay() as hostile:
        alice = chats.start("alice", relay=hostile.url)
        alice.expect(r"e2e-chat: the relay refused this device: ")
        assert alice.wait_exit() == 1
    assert_inert(alice)
    assert "\\x1b[2J\\x1b[Hyour account is \\u202edeleted\\r\\n[16:30] bob: forged" in alice.text
    assert "(bad_proof\\x1b]0;pwned-title\\x07)" in alice.text
    # The first start never registered: no state file is left behind.
    assert not (tmp_path / "alice.sqlite3").exists()
