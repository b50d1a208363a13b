"""``e2e-chat``: an interactive terminal client (``python -m client.chat``).

Usage::

    e2e-chat alice                       # first run: creates alice's identity and registers her
    e2e-chat bob --relay ws://127.0.0.1:8765 --state ./bob.sqlite3
    e2e-chat alice --explain             # print every protocol step as it happens
    e2e-chat alice --link --state ./laptop.sqlite3   # a linked device of alice: shows a code for
                                         # alice's primary to type after /link (docs/devices.md)

Each user has one state file (default ``$XDG_DATA_HOME/e2e-chat/NAME.sqlite3``, else
``~/.local/share/e2e-chat/NAME.sqlite3``) holding the identity key, prekeys, sessions, contacts and
history.  :mod:`.app` is the application, :mod:`.commands` the slash commands, :mod:`.verify` the
safety number display.  The terminal is handled by prompt_toolkit: the prompt stays at the bottom
and whatever arrives is printed above it.

What this module owns
---------------------
The program around the application: its options, the state file's folder (created 0700; the file
itself is 0600, see :mod:`client.store`), the prompt and its key bindings, signals and the exit
status.

Invariants
----------
* The name and the relay URL are checked (the relay's rules, :mod:`client.names`) before any
  folder or file is made.  A first start that ends before the relay accepted the registration (a
  taken name, a refusal, the relay never reached) removes the state file it made: no half-made
  identity is left behind.
* Every way out closes the client and prints at most one line on standard error, and the exit
  status says which way it was (:data:`EXIT_STATUSES`, docs/running.md).
* One input line costs time and memory linear in its length, and at most
  :attr:`client.Client.max_message_bytes` + 1 characters are kept: the prompt inserts what arrives
  in one read at once (a paste without bracketed paste mode arrives as key presses, one per
  character, and prompt_toolkit would otherwise copy the whole line, and keep a copy for undo,
  for every one of them), and drops the rest of a line that could never be sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.filters import emacs_insert_mode, vi_insert_mode
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import clear

from client.chat.app import ChatApp, ClientLogHandler
from client.client import Client, Settings
from client.devices import offer_qr
from client.errors import AlreadyExistsError, InvalidInputError
from client.explain import SHOW_SECRETS_WARNING, Explainer
from client.fanout import link_companion
from client.inert import inert
from client.names import check_account_name, check_relay_url
from client.store import StoreError
from client.transport import TransportError
from e2e import __version__
from e2e.errors import E2EError
from e2e.linking import LinkOffer

__all__ = ["DEFAULT_RELAY", "EXIT_STATUSES", "default_state_path", "main"]

DEFAULT_RELAY = "ws://127.0.0.1:8765"
"""Where ``e2e-relay`` listens when started without options."""

EXIT_STATUSES = {
    0: "you left: /quit, or Ctrl-D at the prompt",
    1: "the client stopped on an error: the relay refused this device (a taken name), another "
    "e2e-chat of the same device displaced this one, or the state file cannot be used",
    2: "a usage error: bad options, a name or relay URL the relay would refuse, a state file that "
    "belongs to another account",
    129: "the terminal went away (SIGHUP)",
    130: "interrupted: Ctrl-C (SIGINT)",
    143: "terminated: SIGTERM",
}
"""Every exit status of ``e2e-chat`` and what it means (docs/running.md lists the same)."""

_SIGNALS = {
    signal.SIGINT: (130, "interrupted (Ctrl-C)"),
    signal.SIGTERM: (143, "terminated (SIGTERM)"),
    signal.SIGHUP: (129, "the terminal went away (SIGHUP)"),
}

# A chat user waits for the relay to come back, so retry often: at most five seconds apart.
_SETTINGS = Settings(backoff_cap=5.0)


class _Interrupted(Exception):
    """Ctrl-C at the prompt (where the terminal is in raw mode, so no SIGINT is sent)."""


def default_state_path(name: str) -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "e2e-chat" / f"{name}.sqlite3"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-chat",
        description="End-to-end encrypted chat in the terminal.",
        epilog="exit status: "
        + "; ".join(f"{status} {meaning.split(':')[0]}" for status, meaning in EXIT_STATUSES.items()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
        "--link",
        action="store_true",
        help="make this a linked device of NAME: show a QR code and a code to type on NAME's primary",
    )
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        help="TEACHING ONLY: with /explain, print private values (DH outputs, keys) in full",
    )
    return parser


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents, each 0700; returns those created, innermost first."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)
    return missing


def _remove_state(state: Path, folders: list[Path]) -> None:
    """Remove a half-made state file, its SQLite companions, and the folders made for it if empty."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            state.with_name(state.name + suffix).unlink()
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def _key_bindings(limit: int, on_overflow: Callable[[], None]) -> KeyBindings:
    """Ctrl-C leaves cleanly; typed or pasted characters go into the line in bulk, at most ``limit``."""
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        event.app.exit(exception=_Interrupted())

    @bindings.add(Keys.Any, filter=vi_insert_mode | emacs_insert_mode)
    def _insert(event: KeyPressEvent) -> None:
        # Take every plain character already read along with this one: a paste without
        # bracketed paste mode is one read of many key presses, inserted here in one step.
        pieces = [event.data * event.arg]
        queue = event.app.key_processor.input_queue
        while queue and not isinstance(queue[0].key, Keys) and len(queue[0].key) == 1:
            pieces.append(queue.popleft().data)
        data = "".join(pieces)
        buffer = event.current_buffer
        room = limit - len(buffer.text)
        if len(data) > room:
            data = data[: max(room, 0)]
            on_overflow()
        if data:
            buffer.insert_text(data)

    return bindings


async def _run(args: argparse.Namespace, state: Path) -> int:
    lines: list[str] = []

    def write(line: str) -> None:
        # With patch_stdout active, print() lands above the prompt and the prompt is redrawn.
        print(line, flush=True)
        lines.append(line)

    def say_error(line: str) -> None:
        # (After SIGHUP the terminal may be gone; there is nobody left to tell.)
        with contextlib.suppress(OSError):
            print(f"e2e-chat: {line}", file=sys.stderr, flush=True)

    explainer = Explainer(
        lambda text: write(f"  · {text}"), show_secrets=args.show_secrets, enabled=args.explain
    )
    directory_key = None
    if args.directory_key is not None:
        # Read before any state is made: a mistake here leaves nothing behind.
        from client.directory import DirectoryKeyError, load_directory_public_key

        try:
            directory_key = load_directory_public_key(args.directory_key)
        except DirectoryKeyError as error:
            say_error(f"--directory-key: {inert(str(error))}")
            return 2
    linked: Client | None = None
    if args.link and not state.exists():
        # Linked devices (docs/devices.md): this machine becomes a companion of NAME's primary.
        link_folders = _make_folders(state.parent)
        linked = await _link_this_device(args, state, explainer)
        if linked is None:
            _remove_state(state, link_folders)
            return 1
    created = not state.exists()
    folders: list[Path] = []
    try:
        if linked is not None:
            client = linked
        elif not created:
            client = Client.open(state, args.relay, trace=explainer, settings=_SETTINGS)
            if client.name != args.name:
                await client.close()
                say_error(f"{inert(str(state))} belongs to {inert(client.name)}, not {inert(args.name)}")
                return 2
        else:
            folders = _make_folders(state.parent)
            client = Client.create(state, args.relay, args.name, trace=explainer, settings=_SETTINGS)
    except (AlreadyExistsError, InvalidInputError, StoreError, OSError) as error:
        say_error(inert(str(error)))
        if created:
            _remove_state(state, folders)
        return 2
    app = ChatApp(
        client, explainer, write, state, peer=args.peer, clear_screen=clear, directory_key=directory_key
    )
    handler = ClientLogHandler(app)
    client_logger = logging.getLogger("client")
    client_logger.addHandler(handler)
    client_logger.setLevel(logging.INFO)
    client_logger.propagate = False
    loop = asyncio.get_running_loop()
    for signum, (status, reason) in _SIGNALS.items():
        loop.add_signal_handler(signum, app.end, status, f"{reason}; closed")
    overflowed = False

    def overflow() -> None:
        # Said once per line, above the prompt (a line this long leaves no room for the toolbar).
        nonlocal overflowed
        if not overflowed:
            overflowed = True
            write(
                f"!! the line is longer than the largest message ({client.max_message_bytes:,} bytes); "
                "the rest of it was dropped, and Enter will refuse it"
            )

    def toolbar() -> str:
        peer = inert(app.peer) if app.peer else "nobody yet"
        connection = "connected" if app.online else "offline, retrying"
        pending = app.waiting_for_relay
        waiting = f" · {pending} waiting for the relay" if pending else ""
        explain = " · explain on" if explainer.enabled else ""
        return f" {inert(client.name)} → {peer} · {connection}{waiting}{explain} · /help"

    session: PromptSession[str] = PromptSession(
        bottom_toolbar=toolbar,
        refresh_interval=1.0,
        key_bindings=_key_bindings(client.max_message_bytes + 1, overflow),
    )
    # Redraw at most ten times a second: drawing a long line costs time linear in its length, and a
    # paste arrives in many small reads, each of which would otherwise be followed by a redraw.
    session.app.min_redraw_interval = 0.1
    registered = False
    try:
        with patch_stdout(raw=False):
            if args.show_secrets:
                write(SHOW_SECRETS_WARNING)
            await app.start()
            while not app.quit.is_set():
                overflowed = False
                prompt = asyncio.create_task(
                    session.prompt_async(lambda: f"{inert(app.peer) if app.peer else ''}> ")
                )
                quit_wait = asyncio.create_task(app.quit.wait())
                done, _ = await asyncio.wait({prompt, quit_wait}, return_when=asyncio.FIRST_COMPLETED)
                quit_wait.cancel()
                if prompt not in done:
                    prompt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await prompt
                    break
                try:
                    line = prompt.result()
                except EOFError:
                    app.end(0, None)
                    break
                except _Interrupted:
                    status, reason = _SIGNALS[signal.SIGINT]
                    app.end(status, f"{reason}; closed")
                    break
                # A command may wait for the relay (up to its timeout); a signal meanwhile ends it.
                handling = asyncio.create_task(app.handle(line))
                quit_wait = asyncio.create_task(app.quit.wait())
                await asyncio.wait({handling, quit_wait}, return_when=asyncio.FIRST_COMPLETED)
                quit_wait.cancel()
                if not handling.done():
                    handling.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await handling
    finally:
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)
        with contextlib.suppress(StoreError, Exception):
            account = client.store.account()
            registered = account is not None and account.registered
        await app.stop()
        client_logger.removeHandler(handler)
        if created and not registered:
            # The relay never accepted this identity: the file would only fail the same way again.
            _remove_state(state, folders)
    if app.farewell:
        say_error(app.farewell)
    return app.exit_status


async def _link_this_device(args: argparse.Namespace, state: Path, explainer: Explainer) -> Client | None:
    """Show the link offer, wait for the primary's ``/link``, register; None (and a message) if not."""

    def show(offer: LinkOffer) -> None:
        print(offer_qr(offer), flush=True)
        print(f"On {args.name}'s primary device, type:\n\n  /link {offer.to_code()}\n", flush=True)
        print("waiting for the primary (5 minutes)…", flush=True)

    try:
        client = await link_companion(state, args.relay, on_offer=show, trace=explainer, settings=_SETTINGS)
    except (E2EError, TransportError, TimeoutError, OSError) as error:
        print(f"e2e-chat: not linked: {error}", file=sys.stderr)
        return None
    if client.name != args.name:
        print(
            f"e2e-chat: the primary that linked this device is {client.name}, not {args.name}",
            file=sys.stderr,
        )
        await client.close()
        state.unlink()
        return None
    print(f"linked as {client.name}'s device {client.device_id}", flush=True)
    return client


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        check_account_name(args.name)
        check_relay_url(args.relay)
        if args.peer is not None:
            check_account_name(args.peer)
    except InvalidInputError as error:
        print(f"e2e-chat: {error}", file=sys.stderr)
        return 2
    state = args.state if args.state is not None else default_state_path(args.name)
    try:
        return asyncio.run(_run(args, state))
    except KeyboardInterrupt:
        # Ctrl-C before the prompt was up (the application had not started): nothing to close.
        print("e2e-chat: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
