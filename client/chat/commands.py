"""What the user types into e2e-chat: slash commands and messages, parsed into values.

What this module owns
---------------------
:func:`parse`, which turns one input line into a :class:`Command` or a :class:`Say` (text to send
to the current contact), the table of commands with their help text (:data:`COMMANDS`), and
:func:`help_text`.  Parsing is pure, so it is tested without a terminal.

Invariants
----------
* A line that starts with ``/`` is always a command; ``//`` escapes a message that starts with a
  slash.  An unknown command or wrong arguments raise :class:`UsageError` with the usage line, and
  nothing is sent.
* Blank lines parse to ``None`` (nothing to do).
* Every ``name`` argument follows the relay's account name rules (:mod:`client.names`), so a
  command never carries a name that could not exist on the relay; ``/history`` takes at most
  :data:`MAX_HISTORY` messages.

What it does not know
---------------------
What the commands do: the chat application carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.errors import InvalidNameError
from client.names import check_account_name

__all__ = ["COMMANDS", "MAX_HISTORY", "Command", "Say", "UsageError", "help_text", "parse"]

MAX_HISTORY = 10_000
"""The most messages one ``/history`` shows."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its name, argument names and one line of help.

    An argument name ending in ``?`` is optional; one ending in ``...`` takes the rest of the line
    (it must come last, and is required).
    """

    name: str
    arguments: tuple[str, ...]
    help: str

    @property
    def usage(self) -> str:
        shown = [
            f"[{a.rstrip('?')}]" if a.endswith("?") else f"<{a.removesuffix('...')}>" for a in self.arguments
        ]
        return " ".join([f"/{self.name}", *shown])


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("help", (), "show this list"),
    CommandSpec("add", ("name",), "add a contact (checked with the relay) and start talking to them"),
    CommandSpec("to", ("name",), "talk to another contact"),
    CommandSpec("contacts", (), "list contacts, their verification and identity state"),
    CommandSpec("history", ("count?",), "show the last messages with the current contact (default 20)"),
    CommandSpec("verify", ("name?",), "show the safety number and its QR code (default: current contact)"),
    CommandSpec(
        "verified", ("name", "number..."), "type the 60 digits NAME reads to you; marks NAME verified"
    ),
    CommandSpec("accept", ("name",), "accept a contact's new identity key after it changed"),
    CommandSpec("send", ("path...",), "send a file to the current contact (encrypted before upload)"),
    CommandSpec(
        "group",
        ("what...",),
        "groups: /group new NAME a b | add a | remove a | leave | members | history [N] | list | NAME",
    ),
    CommandSpec("pick", ("number",), "answer the current contact's quick replies with option NUMBER"),
    CommandSpec("business", ("name?",), "check a business's verified name (needs --directory-key)"),
    CommandSpec("block", ("name",), "hide everything NAME sends and send it nothing"),
    CommandSpec("unblock", ("name",), "undo /block NAME"),
    CommandSpec(
        "link", ("code",), "on your primary device: link the new device showing CODE (e2e-chat --link)"
    ),
    CommandSpec("devices", (), "list your account's devices (the signed device list)"),
    CommandSpec("unlink", ("device",), "on your primary device: remove a linked device (it is logged out)"),
    CommandSpec("explain", (), "turn the protocol-step explanations on or off"),
    CommandSpec("clear", (), "clear the screen"),
    CommandSpec("whoami", (), "show your name, relay, state file and identity key"),
    CommandSpec("quit", (), "leave (messages keep queueing at the relay)"),
)
"""Every command, in the order /help lists them."""

_BY_NAME = {spec.name: spec for spec in COMMANDS}
_ALIASES = {"exit": "quit", "q": "quit", "?": "help"}


class UsageError(ValueError):
    """A line that looks like a command but is not a valid one."""


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed slash command and its arguments."""

    name: str
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Say:
    """Text to send to the current contact."""

    text: str


def parse(line: str) -> Command | Say | None:
    """Parse one line of input; raises :class:`UsageError` for a malformed command."""
    stripped = line.strip()
    if not stripped:
        return None
    if stripped.startswith("//"):
        return Say(stripped[1:])
    if not stripped.startswith("/"):
        return Say(stripped)
    words = stripped[1:].split()
    if not words:
        raise UsageError("type /help for the list of commands")
    name = _ALIASES.get(words[0].lower(), words[0].lower())
    spec = _BY_NAME.get(name)
    if spec is None:
        raise UsageError(f"unknown command /{words[0]}; type /help for the list")
    arguments = tuple(words[1:])
    if spec.arguments and spec.arguments[-1].endswith("..."):
        # The last argument takes the rest of the line, spaces and all.
        fixed = len(spec.arguments) - 1
        if len(arguments) <= fixed:
            raise UsageError(f"usage: {spec.usage}")
        arguments = (*arguments[:fixed], " ".join(arguments[fixed:]))
    required = sum(1 for argument in spec.arguments if not argument.endswith("?"))
    if not required <= len(arguments) <= len(spec.arguments):
        raise UsageError(f"usage: {spec.usage}")
    if (
        name == "history"
        and arguments
        and not (arguments[0].isascii() and arguments[0].isdigit() and 0 < int(arguments[0]) <= MAX_HISTORY)
    ):
        raise UsageError(f"usage: {spec.usage} (a number from 1 to {MAX_HISTORY:,})")
    for argument, value in zip(spec.arguments, arguments, strict=False):
        if argument.rstrip("?") == "name":
            try:
                check_account_name(value)
            except InvalidNameError as error:
                raise UsageError(f"{error}; usage: {spec.usage}") from None
    return Command(name, arguments)


def help_text() -> str:
    """The text /help prints."""
    width = max(len(spec.usage) for spec in COMMANDS)
    lines = [f"  {spec.usage.ljust(width)}  {spec.help}" for spec in COMMANDS]
    lines.append("  anything else is sent to the current contact (start with // to send a leading /)")
    return "\n".join(["commands:", *lines])
