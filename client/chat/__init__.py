"""``e2e-chat``: an interactive terminal client (``python -m client.chat``).

Usage::

    e2e-chat alice                       # first run: creates alice's identity and registers her
    e2e-chat bob --relay ws://127.0.0.1:8765 --state ./bob.sqlite3
    e2e-chat alice --explain             # print every protocol step as it happens

Each user has one state file (default ``$XDG_DATA_HOME/e2e-chat/NAME.sqlite3``, else
``~/.local/share/e2e-chat/NAME.sqlite3``) holding the identity key, prekeys, sessions, contacts and
history.  :mod:`.app` is the application, :mod:`.commands` the slash commands, :mod:`.verify` the
safety number display.  The terminal is handled by prompt_toolkit: the prompt stays at the bottom
and whatever arrives is printed above it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import clear

from client.chat.app import ChatApp, ClientLogHandler
from client.client import Client, Settings
from client.errors import AlreadyExistsError
from client.explain import SHOW_SECRETS_WARNING, Explainer

__all__ = ["DEFAULT_RELAY", "default_state_path", "main"]

DEFAULT_RELAY = "ws://127.0.0.1:8765"
"""Where ``e2e-relay`` listens when started without options."""

# A chat user waits for the relay to come back, so retry often: at most five seconds apart.
_SETTINGS = Settings(backoff_cap=5.0)


def default_state_path(name: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "e2e-chat" / f"{name}.sqlite3"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-chat", description="End-to-end encrypted chat in the terminal."
    )
    parser.add_argument("name", help="your account name on the relay")
    parser.add_argument("--relay", default=DEFAULT_RELAY, help="relay URL (default: %(default)s)")
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="state file (default: $XDG_DATA_HOME/e2e-chat/NAME.sqlite3, "
        "else ~/.local/share/e2e-chat/NAME.sqlite3)",
    )
    parser.add_argument("--to", dest="peer", default=None, help="start talking to this contact")
    parser.add_argument("--explain", action="store_true", help="print each protocol step as it happens")
    parser.add_argument(
        "--directory-key",
        default=None,
        metavar="HEX|FILE",
        help="the directory public key that vouches for business names (docs/business.md)",
    )
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        help="TEACHING ONLY: with /explain, print private values (DH outputs, keys) in full",
    )
    return parser


async def _run(args: argparse.Namespace, state: Path) -> int:
    lines: list[str] = []

    def write(line: str) -> None:
        # With patch_stdout active, print() lands above the prompt and the prompt is redrawn.
        print(line, flush=True)
        lines.append(line)

    explainer = Explainer(
        lambda text: write(f"  · {text}"), show_secrets=args.show_secrets, enabled=args.explain
    )
    if state.exists():
        client = Client.open(state, args.relay, trace=explainer, settings=_SETTINGS)
        if client.name != args.name:
            await client.close()
            print(f"{state} belongs to {client.name}, not {args.name}", file=sys.stderr)
            return 2
    else:
        state.parent.mkdir(parents=True, exist_ok=True)
        try:
            client = Client.create(state, args.relay, args.name, trace=explainer, settings=_SETTINGS)
        except AlreadyExistsError as error:
            print(error, file=sys.stderr)
            return 2
    directory_key = None
    if args.directory_key is not None:
        from client.directory import DirectoryKeyError, load_directory_public_key

        try:
            directory_key = load_directory_public_key(args.directory_key)
        except DirectoryKeyError as error:
            await client.close()
            print(f"e2e-chat: --directory-key: {error}", file=sys.stderr)
            return 2
    app = ChatApp(
        client, explainer, write, state, peer=args.peer, clear_screen=clear, directory_key=directory_key
    )
    handler = ClientLogHandler(app)
    client_logger = logging.getLogger("client")
    client_logger.addHandler(handler)
    client_logger.setLevel(logging.INFO)
    client_logger.propagate = False

    def toolbar() -> str:
        peer = app.peer or "nobody yet"
        connection = "connected" if app.online else "offline, retrying"
        pending = app.waiting_for_relay
        waiting = f" · {pending} waiting for the relay" if pending else ""
        explain = " · explain on" if explainer.enabled else ""
        return f" {client.name} → {peer} · {connection}{waiting}{explain} · /help"

    session: PromptSession[str] = PromptSession(bottom_toolbar=toolbar, refresh_interval=1.0)
    with patch_stdout(raw=True):
        if args.show_secrets:
            write(SHOW_SECRETS_WARNING)
        await app.start()
        try:
            while not app.quit.is_set():
                prompt = asyncio.create_task(session.prompt_async(lambda: f"{app.peer or ''}> "))
                quit_wait = asyncio.create_task(app.quit.wait())
                done, _ = await asyncio.wait({prompt, quit_wait}, return_when=asyncio.FIRST_COMPLETED)
                if prompt not in done:
                    prompt.cancel()
                    break
                quit_wait.cancel()
                try:
                    line = prompt.result()
                except (EOFError, KeyboardInterrupt):
                    break
                await app.handle(line)
        finally:
            await app.stop()
            client_logger.removeHandler(handler)
    if app.failed:
        print(f"e2e-chat: {app.failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    state = args.state if args.state is not None else default_state_path(args.name)
    try:
        return asyncio.run(_run(args, state))
    except KeyboardInterrupt:
        return 0
