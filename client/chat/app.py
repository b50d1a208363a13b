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
* refusals: a message the relay refused for good is shown as NOT delivered with the relay's
  reason, and ``/history`` marks it so, also after a restart; a line that cannot be sent (too long
  for the relay, text that is not Unicode, a first message while the relay is unreachable) is
  refused with one line and nothing is stored;
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
* Every string that came from outside (bodies, names, the relay's error codes and messages,
  anything the client library logs) passes through :func:`client.inert.inert` before ``write``:
  a contact can put text on the screen, never a control sequence.  History replays the same way.
* The current recipient is only ever someone the user chose: ``--to``, ``/add``, ``/to``, or on a
  restart the last account the user sent to.  A message from someone else never makes its sender
  the recipient of what the user types next.
* The user's own input never stops the application: a line is sent, or refused with one line.

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
from client.chat.business import BusinessDesk
from client.chat.commands import Command, Say, UsageError, help_text, parse
from client.chat.group_chat import GroupChat
from client.chat.history import stored_text
from client.chat.verify import format_safety_number, render_qr
from client.client import Client
from client.errors import ClosedError, IdentityChanged, InvalidInputError
from client.events import GroupMessage, Message, SendFailed, Undecryptable
from client.explain import Explainer
from client.groups import GroupError
from client.inert import inert
from client.pointer import AttachmentPointer, InvalidPointerError
from client.store import StoredMessage, StoreError
from e2e.errors import E2EError, FingerprintMismatchError
from e2e.keys import PublicKey

__all__ = ["AGREEMENT_NAMES", "ChatApp", "ClientLogHandler", "describe_failure", "describe_refusal"]

_DELIVERY_POLL = 0.2

_SEND_TIMEOUT = 30.0
"""Seconds a send may take (a session's first message waits for the contact's prekey bundle)."""

AGREEMENT_NAMES = {"x3dh": "X3DH", "pqxdh": "PQXDH", "pqxdh_v4": "PQXDH v4 + SPQR"}
"""How the key agreements are named on the screen."""

_REFUSALS = {
    "too_large": "the message is larger than the relay accepts",
    "unknown_account": "no such account on the relay",
    "unknown_device": "no such device on the relay",
    "message_id_reused": "the relay saw this message id before, with another message",
}


def describe_refusal(code: str) -> str:
    """The relay's error code for a refused message, with what it means when we know."""
    meaning = _REFUSALS.get(code)
    return f"{_reason(code)}: {meaning}" if meaning else _reason(code)


_MAX_REASON = 200
"""Characters of a reason the relay gave that are shown (a hostile relay may send a megabyte)."""


def _reason(text: str) -> str:
    shown = inert(text)
    return shown if len(shown) <= _MAX_REASON else shown[: _MAX_REASON - 1] + "…"


def describe_failure(error: BaseException) -> str:
    """One readable line for the error that stopped the client (the cause of its ClosedError)."""
    cause = error.__cause__ if isinstance(error, ClosedError) and error.__cause__ is not None else error
    if isinstance(cause, transport.RelayError):
        reason = _reason(cause.message) or _reason(cause.code)
        return f"the relay refused this device: {reason} ({_reason(cause.code)})"
    if isinstance(cause, StoreError):
        return f"the state file cannot be used: {inert(str(cause))}"
    if isinstance(cause, ClosedError):
        return inert(str(cause))
    return f"the client stopped on an unexpected error: {type(cause).__name__}: {inert(str(cause))}"


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


class ChatApp(GroupChat):
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
        blocked = state_path.with_name(state_path.name + ".blocked.json") if state_path else None
        self.business = BusinessDesk(client, directory_key, blocked, write)
        self.exit_status = 0
        """The program's exit status (docs/running.md); set by whatever ends the session."""
        self.farewell: str | None = None
        """The one line the program prints on standard error as it exits, if any."""

    def end(self, status: int, farewell: str | None) -> None:
        """Leave the prompt loop with ``status``; the first reason given wins."""
        if not self.quit.is_set():
            self.exit_status = status
            self.farewell = farewell
            self.quit.set()

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
        self.write(f"e2e-chat: you are {inert(name)} on {inert(self.client.relay_url)} (type /help)")
        if self.peer is None:
            # Whom the user wrote to last, never whoever wrote last: a stranger's message must not
            # become the default recipient of what the user types next.
            self.peer = self.client.store.last_recipient()
        history = self.client.history(limit=20)
        if history:
            self.write("── history ──")
            self._show_history(history)
            self.write("── end of history ──")
        self._pending = {
            entry.message_id: f"a message to {inert(entry.recipient)}" for entry in self.client.store.outbox()
        }
        self._started_ms = int(time.time() * 1000)
        if self.peer is not None:
            self.write(f"talking to {inert(self.peer)} (switch with /to NAME)")
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
        # A message sent to several devices has one outbox entry per device: "<id>.<n>".
        waiting = {entry.message_id.split(".", 1)[0] for entry in self.client.store.outbox()}
        for message in history:
            if message.peer in self.business.blocked:
                continue
            text = inert(stored_text(message.body))
            when = _clock(message.timestamp)
            peer = inert(message.peer)
            if message.direction == "out":
                if message.failure is not None:
                    state = f"NOT delivered: the relay refused it, {describe_refusal(message.failure)}"
                elif message.message_id in waiting:
                    state = "queued, not yet on the relay"
                else:
                    state = "sent to relay"
                self.write(f"[{when}] you → {peer}: {text}  ({state})")
            else:
                self.write(f"[{when}] {peer}: {text}")

    async def _event_loop(self) -> None:
        try:
            async for event in self.client.events():
                if isinstance(event, Message):
                    # A new sender's business name is checked before its first message is shown.
                    await self.business.prepare(event.sender)
                self.show_event(event)
        except ClosedError as error:
            # Said once, by the program as it exits (the log handler leaves this one out).
            self.failed = True
            self.failure = describe_failure(error)
            self.end(1, self.failure)

    def show_event(self, event: Message | Undecryptable | SendFailed | IdentityChanged) -> None:
        if isinstance(event, GroupMessage) and event.is_attachment:
            self._receive_file(event)
            return
        if self.show_group_event(event):
            return
        if isinstance(event, Message) and self.business.handles(event, _clock):
            # Blocked senders, quick replies and businesses' messages are the desk's to show.
            if self.peer is None and event.sender not in self.business.blocked:
                self.peer = event.sender
                self.write(f"talking to {inert(self.peer)}")
            return
        if isinstance(event, Message) and event.is_attachment:
            self._receive_file(event)
        elif isinstance(event, Message) and event.to is not None:
            # A message one of our other devices sent (linked devices, docs/devices.md).
            self.write(
                f"[{_clock(event.timestamp)}] you (device {event.sender_device}) → {event.to}: {event.text}"
            )
        elif isinstance(event, Message):
            # The relay stamps each message when it accepts it: one it held before we started
            # waited for us while we were offline.
            away = "  (arrived while you were away)" if event.relay_timestamp < self._started_ms else ""
            sender = inert(event.sender)
            self.write(f"[{_clock(event.timestamp)}] {sender}: {inert(event.body)}{away}")
            if self.peer is None:
                self.write(f"   (to answer {sender}: /to {sender})")
        elif isinstance(event, SendFailed):
            # (A copy of a message sent to every device is "<message id>.<n>", client/fanout.py.)
            preview = self._pending.pop(
                event.message_id.partition(".")[0], f"a message to {inert(event.recipient)}"
            )
            self.write(f"!! NOT delivered: the relay refused {preview} ({describe_refusal(event.error)})")
        elif isinstance(event, Undecryptable):
            self.write(
                f"!! a message from {inert(event.sender)} could not be decrypted ({inert(event.error)}); "
                "it was kept aside"
            )
        else:
            self.warn_identity_changed(event)

    def warn_identity_changed(self, event: IdentityChanged) -> None:
        name = inert(event.name)
        self.write("!" * 72)
        self.write(f"!! WARNING: {name}'s identity key CHANGED")
        self.write(
            f"!!   trusted: {event.trusted_key.fingerprint(16)}   now: {event.new_key.fingerprint(16)}"
        )
        self.write(f"!! Either {name} reinstalled, or someone is in the middle.  Nothing is sent to")
        self.write(f"!! {name} and their new messages stay unread until you compare the new safety")
        self.write(f"!! number (/verify {name}) and accept the key with /accept {name}.")
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
                waiting = {entry.message_id.split(".", 1)[0] for entry in self.client.store.outbox()}
                for message_id in [m for m in self._pending if m not in waiting]:
                    preview = self._pending.pop(message_id)
                    self.write(f"  ✓ sent to relay: {preview}")
            await asyncio.sleep(_DELIVERY_POLL)

    def on_client_log(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {record.exc_info[1]}"
        if "the client stopped" in message:
            # The event loop reports it, once, as the reason the program ends.
            return
        if "connection lost" in message or "cannot connect" in message:
            # Said once per outage; the status loop says when the connection is back.
            if not self._said_offline:
                self._said_offline = True
                self.online = False
                self.write("the relay is unreachable; reconnecting automatically…")
            return
        if record.levelno >= logging.WARNING and "refused message" not in message:
            # (A refused message is shown from its SendFailed event, with its text.)
            self.write(f"!! {_reason(message)}")

    # -- what the user types -------------------------------------------------------------------

    async def handle(self, line: str) -> None:
        """Carry out one input line.  Whatever the line holds, this reports and returns."""
        try:
            parsed = parse(line)
        except UsageError as error:
            self.write(inert(str(error)))
            return
        if parsed is None:
            return
        try:
            if isinstance(parsed, Say):
                await self.say(parsed.text)
            else:
                await self.command(parsed)
        except InvalidInputError as error:
            self.write(f"!! {inert(str(error))}")
        except Exception as error:
            # A fault of ours must not end the user's session: say what it was, keep the prompt.
            logging.getLogger("client.chat").debug("command failed", exc_info=True)
            self.write(f"!! that failed: {type(error).__name__}: {inert(str(error))}")

    async def say(self, text: str) -> None:
        if self.group is not None:
            await self.say_group(text)
            return
        if self.peer is None:
            self.write("no contact yet: /add NAME first")
            return
        peer = self.peer
        if peer in self.business.blocked:
            self.write(f"!! not sent: you blocked {inert(peer)} (/unblock {inert(peer)} first)")
            return
        number = self.business.choice(peer, text)
        if number is not None:
            await self._cmd_pick(str(number))
            return
        shown_peer = inert(peer)
        if not self.client.is_connected and not self.client.has_session(peer):
            self.write(
                f"!! not sent: the relay is unreachable, and a first message to {shown_peer} needs "
                f"{shown_peer}'s prekey bundle from it; nothing was queued, try again once connected"
            )
            return
        try:
            # Every device of the contact, and a copy for our own other devices (docs/devices.md).
            message_id = await asyncio.wait_for(self.client.send_all(peer, text), _SEND_TIMEOUT)
        except IdentityChanged as error:
            self.warn_identity_changed(error)
            return
        except InvalidInputError as error:
            self.write(f"!! not sent: {inert(str(error))}; nothing was queued")
            return
        except TimeoutError:
            self.write(
                f"!! not sent: no answer from the relay within {_SEND_TIMEOUT:g} s while starting the "
                f"session with {shown_peer}; nothing was queued"
            )
            return
        except transport.RelayError as error:
            self.write(f"!! not sent to {shown_peer}: {describe_refusal(error.code)}; nothing was queued")
            return
        except ClosedError as error:
            self.write(f"!! not sent: {describe_failure(error)}")
            return
        except (E2EError, transport.TransportError, OSError) as error:
            self.write(f"!! not sent: {type(error).__name__}: {inert(str(error))}; nothing was queued")
            return
        shown = inert(text)
        preview = shown if len(shown) <= 40 else shown[:39] + "…"
        self._pending[message_id] = f'"{preview}" → {shown_peer}'
        self.write(f"[{_clock(int(time.time() * 1000))}] you → {shown_peer}: {shown}  (queued)")

    async def command(self, command: Command) -> None:
        handler = getattr(self, f"_cmd_{command.name}")
        await handler(*command.arguments)

    async def _cmd_help(self) -> None:
        self.write(help_text())

    async def _cmd_add(self, name: str) -> None:
        shown = inert(name)
        if name == self.client.name:
            self.write("that is you")
            return
        if self.client.has_session(name):
            self.peer = name
            self.group = None
            self.write(f"talking to {shown}")
            return
        if not self.client.is_connected:
            self.write(
                f"!! cannot add {shown} now: the relay is unreachable, and adding a contact fetches "
                "their prekey bundle from it; try again once connected"
            )
            return
        try:
            agreement = await asyncio.wait_for(self.client.add_contact(name), _SEND_TIMEOUT)
        except IdentityChanged as error:
            self.warn_identity_changed(error)
            return
        except transport.RelayError as error:
            if error.code in ("unknown_account", "unknown_device", "no_bundle"):
                self.write(f"!! no account named {shown} on the relay; nothing was added")
            else:
                self.write(f"!! cannot add {shown}: {describe_refusal(error.code)}")
            return
        except TimeoutError:
            self.write(f"!! cannot add {shown}: no answer from the relay within {_SEND_TIMEOUT:g} s")
            return
        except (ClosedError, E2EError, transport.TransportError) as error:
            self.write(f"!! cannot add {shown}: {type(error).__name__}: {inert(str(error))}")
            return
        self.peer = name
        self.group = None
        self.write(
            f"added {shown}: fetched {shown}'s prekey bundle from the relay and started an encrypted "
            f"session ({AGREEMENT_NAMES.get(agreement, inert(agreement))}); talking to {shown}"
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
            self.write(f"{marker} {inert(contact.name)}  key {contact.identity_key[1:9].hex()}…  {state}")

    async def _cmd_history(self, count: str = "20") -> None:
        if self.peer is None:
            self.write("no contact yet")
            return
        history = self.client.history(self.peer, limit=int(count))
        if not history:
            self.write(f"no messages with {inert(self.peer)} yet")
        self._show_history(history)

    async def _cmd_verify(self, name: str | None = None) -> None:
        name = name or self.peer
        if name is None:
            self.write("usage: /verify NAME")
            return
        shown = inert(name)
        try:
            fingerprint = self.client.safety_number(name)
        except E2EError as error:
            self.write(f"!! {inert(str(error))}")
            return
        contact = self.client.store.contact(name)
        self.write(f"safety number for you and {shown}:")
        for row in format_safety_number(str(fingerprint.displayable)).splitlines():
            self.write(f"    {row}")
        self.write(render_qr(fingerprint.scannable.serialize()))
        if contact is not None and contact.changed_identity_key is not None:
            self.write(f"!! {shown}'s identity key changed; this number is for the key you trusted before.")
        status = "verified" if contact is not None and contact.verified else "not verified yet"
        self.write(
            f"{shown} is {status}. Compare these digits with what {shown} sees (in person or by a call); "
            f"if equal: /verified {shown} <the digits {shown} reads>"
        )

    async def _cmd_verified(self, name: str, number: str) -> None:
        shown = inert(name)
        try:
            self.client.verify(name, number)
        except FingerprintMismatchError:
            self.write(
                f"!! MISMATCH: that is not your safety number with {shown}. Do not trust this contact."
            )
            return
        except E2EError as error:
            self.write(f"!! {inert(str(error))}")
            return
        self.write(f"✓ {shown} verified: the safety numbers match")

    async def _cmd_accept(self, name: str) -> None:
        shown = inert(name)
        try:
            await self.client.accept_identity(name)
        except ValueError as error:
            self.write(inert(str(error)))
            return
        self.write(
            f"accepted {shown}'s new identity key; their held messages follow (verify it: /verify {shown})"
        )

    # -- files ---------------------------------------------------------------------------------

    def _progress(self, verb: str, name: str) -> Callable[[int, int], None]:
        """A progress bar printed as a line at each tenth of the way."""
        shown = [-1]

        def report(done: int, total: int) -> None:
            step = done * 10 // total if total else 10
            if step != shown[0]:
                shown[0] = step
                self.write(f"  {verb} {inert(name)} [{'#' * step}{'.' * (10 - step)}] {step * 10}%")

        return report

    async def _cmd_send(self, path_text: str) -> None:
        group = self.group
        if self.peer is None and group is None:
            self.write("no contact yet: /add NAME first")
            return
        path = Path(path_text).expanduser()
        if not path.is_file():
            self.write(f"!! not sent: {inert(repr(path_text))} is not a readable file")
            return
        name = safe_file_name(path.name)
        to = self.group_title(group) if group is not None else inert(self.peer or "")
        size = path.stat().st_size
        self.write(f"sending {inert(name)} ({size} bytes) to {to}: encrypted with a fresh key, then uploaded")
        progress = self._progress("uploading", name)
        try:
            if group is not None:
                # One upload; the pointer goes to every member in one Sender Keys message.
                await self.client.send_file_to_group(group, path, progress=progress)
            else:
                assert self.peer is not None
                sent = await self.client.send_file(self.peer, path, progress=progress)
        except IdentityChanged as error:
            self.warn_identity_changed(error)
            return
        except (E2EError, OSError, ClosedError, BlobServiceError, transport.RelayError, GroupError) as error:
            self.write(f"!! not sent: {_reason(str(error))}")
            return
        when = _clock(int(time.time() * 1000))
        if group is not None:
            self.write(f"[{when}] {to} · you: file {inert(name)}")
            return
        self._pending[sent.message_id] = f"the file {inert(name)} → {to}"
        self.write(f"[{when}] you → {to}: file {inert(name)}  (queued)")

    def _receive_file(self, message: Message | GroupMessage) -> None:
        in_group = isinstance(message, GroupMessage)
        sender = inert(message.sender)
        if in_group:
            sender = f"{self.group_title(message.group_id)} · {sender}"
        try:
            pointer = self.client.attachment(message)
        except InvalidPointerError as error:
            self.write(f"!! {sender} sent a file that was refused: {_reason(str(error))}")
            return
        shown = inert(pointer.file_name or "attachment")
        self.write(
            f"[{_clock(message.timestamp)}] {sender} sent a file: {shown} "
            f"({pointer.size} bytes, {inert(pointer.content_type)}); downloading and verifying…"
        )
        if self.peer is None and not in_group:
            self.write(f"   (to answer {sender}: /to {sender})")
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
            self.write(
                f"!! the file {inert(name)} from {inert(sender)} was not saved: "
                f"{type(error).__name__}: {_reason(str(error))}"
            )
            return
        self.write(f"  ✓ verified and saved: {inert(str(saved))}")

    # -- linked devices (docs/devices.md) -------------------------------------------------------

    async def _cmd_link(self, code: str) -> None:
        try:
            device_id = await asyncio.wait_for(self.client.link(code), 30)
        except (E2EError, transport.RelayError, TimeoutError, ClosedError) as error:
            self.write(f"!! not linked: {error}")
            return
        self.write(f"linked device {device_id}: it receives every message from now on")

    async def _cmd_devices(self) -> None:
        try:
            listed = await asyncio.wait_for(self.client.refresh_devices(self.client.name), 30)
        except (E2EError, transport.RelayError, TimeoutError, ClosedError) as error:
            self.write(f"!! cannot read the device list: {error}")
            return
        if listed is None or len(listed.devices) <= 1:
            self.write(f"one device: this one (device {self.client.device_id}); /link adds another")
            return
        self.write(f"device list version {listed.version}:")
        for entry in listed.devices:
            role = "primary" if entry.device_id == 1 else "linked"
            this = "  ← this device" if entry.device_id == self.client.device_id else ""
            self.write(f"  {entry.device_id}  {role:<7}  {entry.identity_key.fingerprint(16)}{this}")

    async def _cmd_unlink(self, device: str) -> None:
        if not device.isdigit() or int(device) < 2:
            self.write("usage: /unlink N, where N is a linked device's number (see /devices)")
            return
        try:
            await asyncio.wait_for(self.client.unlink(int(device)), 30)
        except (E2EError, transport.RelayError, TimeoutError, ClosedError) as error:
            self.write(f"!! not unlinked: {error}")
            return
        self.write(f"unlinked device {device}: the relay logged it out and deleted its queue")

    async def _cmd_explain(self) -> None:
        self.explainer.enabled = not self.explainer.enabled
        state = "on: each protocol step is printed as it happens" if self.explainer.enabled else "off"
        self.write(f"explain {state}")

    async def _cmd_clear(self) -> None:
        if self._clear_screen is not None:
            self._clear_screen()

    async def _cmd_whoami(self) -> None:
        name, url = inert(self.client.name), inert(self.client.relay_url)
        self.write(f"you are {name} (device {self.client.device_id}) on {url}")
        self.write(f"state file: {inert(str(self.state_path))}")
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
        when = _clock(int(time.time() * 1000))
        self.write(f"[{when}] you → {inert(peer)}: picked {number}. {inert(label)}  (queued)")

    async def _cmd_block(self, name: str) -> None:
        self.business.block(name)
        shown = inert(name)
        self.write(f"blocked {shown}: nothing it sends is shown, nothing is sent to it (/unblock {shown})")

    async def _cmd_unblock(self, name: str) -> None:
        if self.business.unblock(name):
            self.write(f"unblocked {inert(name)}")
        else:
            self.write(f"{inert(name)} was not blocked")

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
