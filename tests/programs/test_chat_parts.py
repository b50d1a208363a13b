"""e2e-chat's pure parts: command parsing, the safety number layout, the QR code of the scannable form."""

from __future__ import annotations

import pytest
import segno

from client.chat.commands import COMMANDS, Command, Say, UsageError, help_text, parse
from client.chat.verify import format_safety_number, render_qr
from e2e.fingerprint import Fingerprint
from e2e.keys import KeyPair


def test_lines_parse_into_messages_and_commands() -> None:
    assert parse("   ") is None
    assert parse("hello there") == Say("hello there")
    assert parse("//slash at the start") == Say("/slash at the start")
    assert parse("/add bob") == Command("add", ("bob",))
    assert parse("/VERIFY") == Command("verify", ())
    assert parse("/history 5") == Command("history", ("5",))
    assert parse("/exit") == Command("quit", ())
    assert parse("/verified bob 12345 67890  11111") == Command("verified", ("bob", "12345 67890 11111"))


@pytest.mark.parametrize(
    "line", ["/", "/nonsense", "/add", "/add a b", "/history zero", "/history 0", "/to", "/verified bob"]
)
def test_malformed_commands_raise_usage_errors(line: str) -> None:
    with pytest.raises(UsageError):
        parse(line)


def test_help_lists_every_command() -> None:
    text = help_text()
    for spec in COMMANDS:
        assert spec.usage in text


def test_both_sides_see_the_same_grouped_safety_number(rng) -> None:
    alice, bob = KeyPair.generate(rng).public_key, KeyPair.generate(rng).public_key
    alice_view = Fingerprint.create(b"alice", alice, b"bob", bob, iterations=2)
    bob_view = Fingerprint.create(b"bob", bob, b"alice", alice, iterations=2)
    shown = format_safety_number(str(alice_view.displayable))
    assert shown == format_safety_number(str(bob_view.displayable))
    rows = shown.splitlines()
    assert len(rows) == 3
    assert all(len(group) == 5 and group.isdigit() for row in rows for group in row.split())
    assert shown.replace("\n", "").replace(" ", "") == str(alice_view.displayable)


def _modules_from_half_blocks(text: str) -> list[list[bool]]:
    """Read a compact terminal QR code back into rows of light (True) / dark (False) modules."""
    upper = {"█": True, "▀": True, "▄": False, " ": False}
    lower = {"█": True, "▀": False, "▄": True, " ": False}
    rows: list[list[bool]] = []
    for line in text.splitlines():
        rows.append([upper[c] for c in line])
        rows.append([lower[c] for c in line])
    return rows


def test_the_qr_code_carries_the_scannable_bytes(rng) -> None:
    alice, bob = KeyPair.generate(rng).public_key, KeyPair.generate(rng).public_key
    scannable = Fingerprint.create(b"alice", alice, b"bob", bob, iterations=2).scannable.serialize()
    drawn = _modules_from_half_blocks(render_qr(scannable))
    expected = segno.make(scannable, micro=False, mode="byte", error="m")
    border = 2
    size = len(expected.matrix)
    # Dark modules are drawn as blanks (the code is meant for a dark terminal background).
    inner = [row[border : border + size] for row in drawn[border : border + size]]
    assert inner == [[not bit for bit in row] for row in expected.matrix]


def test_without_block_characters_the_scannable_bytes_are_printed_as_base64() -> None:
    text = render_qr(bytes(range(74)), encoding="ascii")
    assert text.isascii()
    assert "AAECAwQFBgcICQoL" in text


def test_names_in_commands_follow_the_relays_rules() -> None:
    for line in ["/add ../../x", "/to a\x1bb", "/verify bad name!", "/accept -x", "/verified .. 1234"]:
        with pytest.raises(UsageError) as refused:
            parse(line)
        assert "\x1b" not in str(refused.value)
    with pytest.raises(UsageError):
        parse("/history 99999999999999999999")


def test_what_the_relay_says_is_shown_inert() -> None:
    from client.chat.app import ChatApp, describe_failure, describe_refusal
    from client.errors import ClosedError
    from client.transport import RelayError

    assert describe_refusal("too_large") == "too_large: the message is larger than the relay accepts"
    assert describe_refusal("\x1b]0;x\x07") == "\\x1b]0;x\\x07"
    refusal = RelayError("identity_mismatch", "taken\x1b[2J\r\nforged")
    try:
        raise ClosedError("the client stopped") from refusal
    except ClosedError as error:
        line = describe_failure(error)
    assert line == "the relay refused this device: taken\\x1b[2J\\r\\nforged (identity_mismatch)"

    import logging

    written: list[str] = []
    app = ChatApp(None, None, written.append, None)  # type: ignore[arg-type]
    record = logging.LogRecord("client", logging.WARNING, "", 0, "alice: %s", ("bad\x1b[31m\u202e",), None)
    app.on_client_log(record)
    assert written == ["!! alice: bad\\x1b[31m\\u202e"]


def test_group_text_from_the_network_never_reaches_the_terminal_raw() -> None:
    from client.chat.group_chat import shown

    assert shown("hi \x1b[2J\x07 there") == "hi \\x1b[2J\\x07 there"
    assert shown("evil\u202egnp.exe") == "evil\\u202egnp.exe"
    assert shown("line\nbreak\r") == "line\\nbreak\\r"
    assert shown("x" * 10, limit=4) == "xxxx…"
    assert shown("grüße, 你好") == "grüße, 你好"


def test_the_group_command_parses_its_subcommands() -> None:
    from client.chat.commands import Command, UsageError, parse

    assert parse("/group new friends bob carol") == Command("group", ("new friends bob carol",))
    assert parse("/group list") == Command("group", ("list",))
    with pytest.raises(UsageError):
        parse("/group")
