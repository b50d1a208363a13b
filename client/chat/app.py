"""The e2e-chat application: one person's terminal conversation, on top of :class:`client.client.Client`.

What this module owns
---------------------
:class:`ChatApp`, which connects the user's keyboard and screen to a running client:

* a prompt (prompt_toolkit) that stays usable while messages arrive; everything the application
  prints appears above it;
* incoming events (messages, refused ciphertexts, changed identity keys) printed as they happen,
  the history printed on start, and messages that waited at the relay while the user was away
  marked as such;
* the delivery state of each sent message: "queued" when it is encrypted and committed locally,
  then "sent to relay" when the relay acknowledged storing it (the relay offers no more: it does
  not tell a sender when the recipient fetched a message);
* the connection state: the client reconnects by itself with backoff; the application reports
  when the relay went away and when it is back;
* the slash commands of :mod:`client.chat.commands`, including ``/verify`` (safety number and QR
  code), ``/accept`` after a contact's identity key changed, and ``/explain``;
* files: ``/send PATH`` encrypts and uploads with a progress bar, then sends the pointer; a file
  that arrives is downloaded, verified and saved under ``files/`` beside the state file (its name
  made safe by :func:`client.attachments.safe_file_name`, never overwriting), with a progress bar.

Invariants
----------
* Nothing is shown as sent before the client committed it, and nothing as "sent to relay" before
  the relay acknowledged it.
* A changed identity key is always shown as a warning, and nothing is sent to or shown from that
  contact until the user accepts the new key with ``/accept``.
* Secrets are never printed, except by the explainer when the user started with ``--show-secrets``.

What it does not know
---------------------
Protocol details (the client and the core do the work) and the terminal itself: output goes
through ``write``, input comes from the prompt session the caller runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from client import transport
from client.attachments import safe_file_name
from client.blobs import BlobServiceError
from client.chat.business import BusinessDesk, history_text
from client.chat.commands import Command, Say, UsageError, help_text, parse
from client.chat.verify import format_safety_number, render_qr
from client.client import Client
from client.errors import ClosedError, IdentityChanged
from client.events import Message, SendFailed, Undecryptable
from client.explain import Explainer
from client.pointer import AttachmentPointer, InvalidPointerError, decode_pointer
from client.store import StoredMessage
from e2e.errors import E2EError, FingerprintMismatchError
from e2e.keys import PublicKey

__all__ = ["ChatApp", "ClientLogHandler"]

_DELIVERY_POLL = 0.2


def _clock(timestamp_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(timestamp_ms / 1000))


class ClientLogHandler(logging.Handler):
    """Shows what the client library logs (lost connections, refused messages) as status lines."""

    def __init__(self, app: ChatApp) -> None:
        super().__init__(logging.INFO)
        self._app = app

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._app.on_client_log(record)


class ChatApp:
    """One user's chat session.  ``write`` prints a line above the prompt."""

    def __init__(
        self,
        client: Client,
        explainer: Explainer,
        write: Callable[[str], None],
        state_path: Path,
        peer: str | None = None,
        clear_screen: Callable[[], None] | None = None,
        directory_key: PublicKey | None = None,
    ) -> None:
        self.client = client
        self.explainer = explainer
        self.write = write
        self.state_path = state_path
        self.peer = peer
        self._clear_screen = clear_screen
        self.online = False
        self._said_offline = False
        self.failed = False
        """Set when the client stopped on an error (the program then exits with status 1)."""
        self.failure = ""
        self._started_ms = 0
        self._seen_connections = 0
        self._pending: dict[str, str] = {}
        """Sent messages the relay has not acknowledged yet: message id → a short preview."""
        self._tasks: list[asyncio.Task[None]] = []
        self._downloads: set[asyncio.Task[None]] = set()
        # Files arriving at once are fetched two at a time: a contact sending many cannot make us
        # open connections and temporary files without bound.
        self._download_slots = asyncio.Semaphore(2)
        self.quit = asyncio.Event()
        # Businesses (client/chat/business.py): verified names, quick replies, blocked accounts.
        self.business = BusinessDesk(
            client, directory_key, state_path.with_name(state_path.name + ".blocked.json"), write
        )

    @property
    def files_folder(self) -> Path:
        """Where received files are saved: ``files/`` beside the state file."""
        return self.state_path.parent / "files"

    @property
    def waiting_for_relay(self) -> int:
        """How many sent messages the relay has not acknowledged yet."""
        return len(self._pending)

    # -- start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        """Show the history, start the client and the background tasks."""
        name = self.client.name
        self.write(f"e2e-chat: you are {name} on {self.client.relay_url} (type /help)")
        if self.peer is None:
            history = self.client.history(limit=1)
            self.peer = history[-1].peer if history else None
        history = self.client.history(limit=20)
        if history:
            self.write("── history ──")
            self._show_history(history)
            self.write("── end of history ──")
        self._pending = {
            entry.message_id: f"a message to {entry.recipient}" for entry in self.client.store.outbox()
        }
        self._started_ms = int(time.time() * 1000)
        if self.peer is not None:
            self.write(f"talking to {self.peer} (switch with /to NAME)")
        else:
            self.write("add a contact with /add NAME")
        await self.client.start()
        self._tasks = [
            asyncio.create_task(self._event_loop(), name="chat events"),
            asyncio.create_task(self._status_loop(), name="chat status"),
        ]

    async def stop(self) -> None:
        await self.business.close()
        for task in [*self._tasks, *self._downloads]:
            task.cancel()
        for task in [*self._tasks, *self._downloads]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()

    # -- what arrives --------------------------------------------------------------------------

    def _show_history(self, history: list[StoredMessage]) -> None:
        """Print stored messages; a sent one says whether the relay has acknowledged it."""
        waiting = {entry.message_id for entry in self.client.store.outbox()}
        for message in history:
            if message.peer in self.business.blocked:
                continue
            text = _history_text(message.body)
            when = _clock(message.timestamp)
            if message.direction == "out":
                state = "queued, not yet on the relay" if message.message_id in waiting else "sent to relay"
                self.write(f"[{when}] you → {message.peer}: {text}  ({state})")
            else:
                self.write(f"[{when}] {message.peer}: {text}")

    async def _event_loop(self) -> None:
        try:
            async for event in self.client.events():
                if isinstance(event, Message):
                    # A new sender's business name is checked before its first message is shown.
                    await self.business.prepare(event.sender)
                self.show_event(event)
        except ClosedError as error:
            self.write(f"!! the client stopped: {error}")
            self.failed = True
            self.failure = str(error)
            self.quit.set()

    def show_event(self, event: Message | Undecryptable | SendFailed | IdentityChanged) -> None:
        if isinstance(event, Message) and self.business.handles(event, _clock):
            # Blocked senders, quick replies and businesses' messages are the desk's to show.
            if self.peer is None and event.sender not in self.business.blocked:
                self.peer = event.sender
                self.write(f"talking to {self.peer}")
            return
        if isinstance(event, Message) and event.is_attachment:
            self._receive_file(event)
        elif isinstance(event, Message):
            # The relay stamps each message when it accepts it: one it held before we started
            # waited for us while we were offline.
            away = "  (arrived while you were away)" if event.relay_timestamp < self._started_ms else ""
            self.write(f"[{_clock(event.timestamp)}] {event.sender}: {event.text}{away}")
            if self.peer is None:
                self.peer = event.sender
                self.write(f"talking to {self.peer}")
        elif isinstance(event, SendFailed):
            preview = self._pending.pop(event.message_id, f"a message to {event.recipient}")
            self.write(f"!! NOT delivered: the relay refused {preview} ({event.error})")
        elif isinstance(event, Undecryptable):
            self.write(
                f"!! a message from {event.sender} could not be decrypted ({event.error}); it was kept aside"
            )
        else:
            self.warn_identity_changed(event)

    def warn_identity_changed(self, event: IdentityChanged) -> None:
        self.write("!" * 72)
        self.write(f"!! WARNING: {event.name}'s identity key CHANGED")
        self.write(
            f"!!   trusted: {event.trusted_key.fingerprint(16)}   now: {event.new_key.fingerprint(16)}"
        )
        self.write(f"!! Either {event.name} reinstalled, or someone is in the middle.  Nothing is sent to")
        self.write(f"!! {event.name} and their new messages stay unread until you compare the new safety")
        self.write(f"!! number (/verify {event.name}) and accept the key with /accept {event.name}.")
        self.write("!" * 72)

    # -- background: delivery and connection state ---------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            if self.client.connections != self._seen_connections:
                first = self._seen_connections == 0
                self._seen_connections = self.client.connections
                self.online = True
                self._said_offline = False
                self.write("connected to the relay" if first else "reconnected to the relay")
            if self._pending:
                waiting = {entry.message_id for entry in self.client.store.outbox()}
                for message_id in [m for m in self._pending if m not in waiting]:
                    preview = self._pending.pop(message_id)
                    self.write(f"  ✓ sent to relay: {preview}")
            await asyncio.sleep(_DELIVERY_POLL)

    def on_client_log(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {record.exc_info[1]}"
        if "connection lost" in message or "cannot connect" in message:
            # Said once per outage; the status loop says when the connection is back.
            if not self._said_offline:
                self._said_offline = True
                self.online = False
                self.write("the relay is unreachable; reconnecting automatically…")
            return
        if record.levelno >= logging.WARNING and "refused message" not in message:
            # (A refused message is shown from its SendFailed event, with its text.)
            self.write(f"!! {message}")

    # -- what the user types -------------------------------------------------------------------

    async def handle(self, line: str) -> None:
        try:
            parsed = parse(line)
        except UsageError as error:
            self.write(str(error))
            return
        if parsed is None:
            return
        if isinstance(parsed, Say):
            await self.say(parsed.text)
            return
        await self.command(parsed)

    async def say(self, text: str) -> None:
        if self.peer is None:
            self.write("no contact yet: /add NAME first")
            return
        peer = self.peer
        if peer in self.business.blocked:
            self.write(f"!! not sent: you blocked {peer} (/unblock {peer} first)")
            return
        number = self.business.choice(peer, text)
        if number is not None:
            await self._cmd_pick(str(number))
            return
        try:
            message_id = await asyncio.wait_for(self.client.send(peer, text), 30)
        except IdentityChanged as error:
            self.warn_identity_changed(error)
            return
        except (E2EError, OSError, TimeoutError, ClosedError) as error:
            self.write(f"!! not sent: {error}")
            return
        except transport.RelayError as error:
            self.write(f"!! not sent: {error}")
            return
        preview = text if len(text) <= 40 else text[:39] + "…"
        self._pending[message_id] = f'"{preview}" → {peer}'
        self.write(f"[{_clock(int(time.time() * 1000))}] you → {peer}: {text}  (queued)")

    async def command(self, command: Command) -> None:
        handler = getattr(self, f"_cmd_{command.name}")
        await handler(*command.arguments)

    async def _cmd_help(self) -> None:
        self.write(help_text())

    async def _cmd_add(self, name: str) -> None:
        if name == self.client.name:
            self.write("that is you")
            return
        self.peer = name
        known = self.client.store.contact(name) is not None
        if known:
            self.write(f"talking to {name}")
        else:
            self.write(
                f"added {name}: your first message fetches {name}'s prekey bundle from the relay and "
                "starts an encrypted session (X3DH)"
            )

    async def _cmd_to(self, name: str) -> None:
        await self._cmd_add(name)

    async def _cmd_contacts(self) -> None:
        contacts = self.client.store.contacts()
        if not contacts:
            self.write("no contacts yet (a contact is known after the first message either way)")
        for contact in contacts:
            state = "verified" if contact.verified else "not verified"
            if contact.changed_identity_key is not None:
                state = "IDENTITY KEY CHANGED: /verify then /accept"
            marker = "*" if contact.name == self.peer else " "
            self.write(f"{marker} {contact.name}  key {contact.identity_key[1:9].hex()}…  {state}")

    async def _cmd_history(self, count: str = "20") -> None:
        if self.peer is None:
            self.write("no contact yet")
            return
        history = self.client.history(self.peer, limit=int(count))
        if not history:
            self.write(f"no messages with {self.peer} yet")
        self._show_history(history)

    async def _cmd_verify(self, name: str | None = None) -> None:
        name = name or self.peer
        if name is None:
            self.write("usage: /verify NAME")
            return
        try:
            fingerprint = self.client.safety_number(name)
        except E2EError as error:
            self.write(f"!! {error}")
            return
        contact = self.client.store.contact(name)
        self.write(f"safety number for you and {name}:")
        for row in format_safety_number(str(fingerprint.displayable)).splitlines():
            self.write(f"    {row}")
        self.write(render_qr(fingerprint.scannable.serialize()))
        if contact is not None and contact.changed_identity_key is not None:
            self.write(f"!! {name}'s identity key changed; this number is for the key you trusted before.")
        status = "verified" if contact is not None and contact.verified else "not verified yet"
        self.write(
            f"{name} is {status}. Compare these digits with what {name} sees (in person or by a call); "
            f"if equal: /verified {name} <the digits {name} reads>"
        )

    async def _cmd_verified(self, name: str, number: str) -> None:
        try:
            self.client.verify(name, number)
        except FingerprintMismatchError:
            self.write(f"!! MISMATCH: that is not your safety number with {name}. Do not trust this contact.")
            return
        except E2EError as error:
            self.write(f"!! {error}")
            return
        self.write(f"✓ {name} verified: the safety numbers match")

    async def _cmd_accept(self, name: str) -> None:
        try:
            await self.client.accept_identity(name)
        except ValueError as error:
            self.write(str(error))
            return
        self.write(
            f"accepted {name}'s new identity key; their held messages follow (verify it: /verify {name})"
        )

    # -- files ---------------------------------------------------------------------------------

    def _progress(self, verb: str, name: str) -> Callable[[int, int], None]:
        """A progress bar printed as a line at each tenth of the way."""
        shown = [-1]

        def report(done: int, total: int) -> None:
            step = done * 10 // total if total else 10
            if step != shown[0]:
                shown[0] = step
                self.write(f"  {verb} {name} [{'#' * step}{'.' * (10 - step)}] {step * 10}%")

        return report

    async def _cmd_send(self, path_text: str) -> None:
        if self.peer is None:
            self.write("no contact yet: /add NAME first")
            return
        path = Path(path_text).expanduser()
        if not path.is_file():
            self.write(f"!! not sent: {path_text!r} is not a readable file")
            return
        peer, name = self.peer, safe_file_name(path.name)
        size = path.stat().st_size
        self.write(f"sending {name} ({size} bytes) to {peer}: encrypted with a fresh key, then uploaded")
        try:
            sent = await self.client.send_file(peer, path, progress=self._progress("uploading", name))
        except IdentityChanged as error:
            self.warn_identity_changed(error)
            return
        except (E2EError, OSError, ClosedError, BlobServiceError, transport.RelayError) as error:
            self.write(f"!! not sent: {error}")
            return
        self._pending[sent.message_id] = f"the file {name} → {peer}"
        self.write(f"[{_clock(int(time.time() * 1000))}] you → {peer}: file {name}  (queued)")

    def _receive_file(self, message: Message) -> None:
        try:
            pointer = self.client.attachment(message)
        except InvalidPointerError as error:
            self.write(f"!! {message.sender} sent a file that was refused: {error}")
            return
        shown = pointer.file_name or "attachment"
        self.write(
            f"[{_clock(message.timestamp)}] {message.sender} sent a file: {shown} "
            f"({pointer.size} bytes, {pointer.content_type}); downloading and verifying…"
        )
        if self.peer is None:
            self.peer = message.sender
            self.write(f"talking to {self.peer}")
        task = asyncio.create_task(self._download(message.sender, pointer))
        self._downloads.add(task)
        task.add_done_callback(self._downloads.discard)

    async def _download(self, sender: str, pointer: AttachmentPointer) -> None:
        name = safe_file_name(pointer.file_name)
        try:
            async with self._download_slots:
                saved = await self.client.download(
                    pointer, self.files_folder, progress=self._progress("downloading", name)
                )
        except (E2EError, OSError, ClosedError, BlobServiceError, transport.RelayError) as error:
            self.write(f"!! the file {name} from {sender} was not saved: {type(error).__name__}: {error}")
            return
        self.write(f"  ✓ verified and saved: {saved}")

    async def _cmd_explain(self) -> None:
        self.explainer.enabled = not self.explainer.enabled
        state = "on: each protocol step is printed as it happens" if self.explainer.enabled else "off"
        self.write(f"explain {state}")

    async def _cmd_clear(self) -> None:
        if self._clear_screen is not None:
            self._clear_screen()

    async def _cmd_whoami(self) -> None:
        self.write(f"you are {self.client.name} (device {self.client.device_id}) on {self.client.relay_url}")
        self.write(f"state file: {self.state_path}")
        self.write(f"identity key: {self.client.identity_key.serialize().hex()}")

    # -- businesses (client/chat/business.py) --------------------------------------------------

    async def _cmd_pick(self, number: str) -> None:
        peer = self.peer
        if peer is None or peer not in self.business.offers:
            self.write("no quick replies to answer here")
            return
        offer = self.business.offers[peer]
        if not number.isdigit() or not 1 <= int(number) <= len(offer.options):
            self.write(f"usage: /pick N (1 to {len(offer.options)})")
            return
        try:
            label = await asyncio.wait_for(self.business.pick(peer, int(number)), 30)
        except (E2EError, OSError, TimeoutError, ClosedError, transport.RelayError) as error:
            self.write(f"!! not sent: {error}")
            return
        self.write(f"[{_clock(int(time.time() * 1000))}] you → {peer}: picked {number}. {label}  (queued)")

    async def _cmd_block(self, name: str) -> None:
        self.business.block(name)
        self.write(f"blocked {name}: nothing it sends is shown, nothing is sent to it (/unblock {name})")

    async def _cmd_unblock(self, name: str) -> None:
        if self.business.unblock(name):
            self.write(f"unblocked {name}")
        else:
            self.write(f"{name} was not blocked")

    async def _cmd_business(self, name: str | None = None) -> None:
        name = name or self.peer
        if name is None:
            self.write("usage: /business NAME")
            return
        if self.business.directory_key is None:
            self.write("no directory key configured (e2e-chat --directory-key): no name can be verified")
            return
        await self.business.look_up(name, tell=True)

    async def _cmd_quit(self) -> None:
        self.quit.set()


def _history_text(body: bytes) -> str:
    """A stored message as history shows it: its text, or the file an attachment pointer names.

    The history does not record the content type; a pointer is recognised by decoding strictly
    (text is UTF-8, a pointer's key bytes almost never are).
    """
    structured = history_text(body)
    if structured is not None:
        return structured
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        pointer = decode_pointer(body)
    except InvalidPointerError:
        return body.decode("utf-8", errors="replace")
    return f"file {pointer.file_name or 'attachment'} ({pointer.size} bytes)"
