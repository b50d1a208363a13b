"""``make demo``: Alice and Bob talk through a real relay, shown side by side as Alice | relay | Bob.

What this module owns
---------------------
The scripted conversation and its presentation.  :func:`main` makes a temporary directory, starts
a relay process on an ephemeral port with its SQLite file there, and drives two real clients
(:class:`client.client.Client`, each with its own SQLite store) through it:

1. Bob registers, publishes his prekey bundle and goes offline.
2. Alice fetches the bundle, starts a session (Signal's PQXDH with Kyber1024, message version 4,
   and SPQR, since the bundle carries a Kyber prekey; the project's PQXDH or X3DH only for a peer
   that publishes none) and sends two messages, which wait at the relay.
3. Bob comes online and receives them; then they reply back and forth, every change of speaker a
   Double Ratchet DH step.
4. Alice sends four messages and the network hands the first two to Bob after the others
   (:mod:`.network`): Bob stores two skipped message keys and uses them when the late messages
   arrive.
5. They compare safety numbers, both forms.
6. A long back and forth, with explain mode showing only SPQR's steps: every session is version
   4 with SPQR (the Triple Ratchet), whose chunks ride in every message and whose epoch moves
   about every 87 messages of ping-pong; it runs until both sides have seen two new epochs.
7. Alice sends Bob a picture the demo draws: encrypted on her side while it uploads to the blob
   service, a pointer in a message; the middle column shows the blob as the service stores it
   (random bytes, its size bucket); Bob verifies it whole before decrypting and opens it; he
   forwards it to Carol, which reuses the blob.
8. Alice makes a group of the three (a membership change signed by her identity key) and sends
   one group message: one upload, one stored copy per member device, each acknowledged by its
   recipient; then she removes Carol: Bob makes a new sender key, and what he sends next is
   queued for Alice alone and never readable by Carol.
9. Alice asks the parcel bot (:mod:`client.demo.business`): a business whose name a directory key
   vouches for, answering with text and quick replies, and notifying her later.
10. Alice links her laptop (``docs/devices.md``): Bob's next message reaches her phone and her
   laptop, each over its own session, and the laptop's reply appears on her phone.

The left and right columns show what each person's client did (plaintext exists only there); the
middle column shows what the relay holds, read from the relay's own database opened read-only
(:mod:`.relay`): ids, types, sizes and ciphertext prefixes.  A message that the recipient is
online for is read from the database in the instant between the recipient's commit and its
acknowledgement, while the relay still holds it.

Invariants
----------
* The demo ends on its own.  Every wait has a timeout; whatever happens, the clients are closed
  and the relay process is stopped before :func:`main` returns.  Exit status 0 means every step
  succeeded, including the final check that no plaintext appears anywhere in the relay's files.
* Without ``--show-secrets`` no secret value is printed, not even in ``--explain`` mode (only
  :func:`e2e.explain.fingerprint` digests).

What it does not know
---------------------
How the relay or the clients work inside: it uses their public interfaces and reads the relay's
database like any other observer with access to the server's disk.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import shutil
import struct
import sys
import tempfile
import textwrap
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from client.chat.verify import format_safety_number
from client.client import Client, Hooks, Settings
from client.demo.business import business_step
from client.demo.layout import Columns
from client.demo.network import ReorderingClient
from client.demo.relay import RelayDatabase, RelayProcess, RelayStartError, StoredRow
from client.events import GroupMessage, MembershipChanged, Message
from client.explain import SHOW_SECRETS_WARNING, Explainer
from client.fanout import link_companion
from client.inert import inert
from e2e import __version__
from e2e.attachment import blob_size, padded_size
from e2e.explain import Event
from e2e.linking import LinkOffer
from e2e.wire import MessageType

__all__ = ["OFFLINE", "BACK_AND_FORTH", "REORDERED", "DemoFailed", "Options", "main", "run"]

OFFLINE = ("Hi Bob! This is Alice.", "Are you there? Nobody else can read this.")
"""What Alice sends while Bob is offline."""
BACK_AND_FORTH = (
    ("bob", "Hi Alice! Got both of them."),
    ("alice", "Every reply brings new ratchet keys."),
    ("bob", "So a key stolen today opens no old message."),
)
"""The replies, each with its sender."""
REORDERED = ("One (sent first).", "Two (sent second).", "Three (sent third).", "Four (sent fourth).")
"""Alice's four messages; the network delivers the first two after the last two."""
_LATE = 2

_SPQR_TARGET_EPOCH = 3
"""Step 6 runs until both sides' SPQR states reached this epoch (they start at 1)."""
_SPQR_MAX_MESSAGES = 400
"""…and gives up (the demo fails) after this many messages."""

_TYPE_NAMES = {
    int(MessageType.PREKEY): "PreKeySignalMessage",
    int(MessageType.WHISPER): "SignalMessage",
    7: "SenderKeyMessage",
    250: "membership change",
}
GROUP_TEXTS = ("Hello, both of you!", "Carol is out; she cannot read this.")
"""Alice's group message to Bob and Carol, and Bob's after Carol's removal."""


def draw_picture(width: int = 160, height: int = 120) -> bytes:
    """A PNG picture (a colour gradient with a sun), written with zlib alone."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            inside = (x - 110) ** 2 + (y - 35) ** 2 < 18**2
            red, green, blue = (255, 220, 60) if inside else (40 + x, 90 + y, 200 - y)
            rows += bytes((red & 0xFF, green & 0xFF, blue & 0xFF))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    image = zlib.compress(bytes(rows), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", image) + chunk(b"IEND", b"")


def _bucket_floor(size: int) -> int:
    """The smallest plaintext size in the same size bucket as ``size``."""
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        if padded_size(middle) == padded_size(size):
            high = middle
        else:
            low = middle + 1
    return low


def png_size(data: bytes) -> tuple[int, int]:
    """The width and height a PNG file says it has (what "opening" it means here)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise DemoFailed("the received picture is not a PNG file")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# A small prekey stock keeps start-up quick; the relay and the client work the same with 100.
_SETTINGS = Settings(pre_key_batch=10, pre_key_target=10, pre_key_low_water=3)


class DemoFailed(Exception):
    """A step of the demo did not happen as it should (the message says which)."""


@dataclass(frozen=True, slots=True)
class Options:
    explain: bool = False
    show_secrets: bool = False
    width: int | None = None
    keep: bool = False
    timeout: float = 20.0


@dataclass(slots=True)
class _Person:
    """One side of the conversation: a name, a column, a client, and the core's recent events."""

    name: str
    column: int
    client: Client | None = None
    steps: list[Event] = field(default_factory=list)
    steps_by_message: dict[str, list[Event]] = field(default_factory=dict)

    def take_steps(self) -> list[Event]:
        steps, self.steps = self.steps, []
        return steps

    @property
    def running(self) -> Client:
        if self.client is None:
            raise DemoFailed(f"{self.name} is offline")
        return self.client


@dataclass(slots=True)
class _Tally:
    """What the summary reports; every number is counted from what really happened."""

    agreement: str = "none"
    sent: int = 0
    received: int = 0
    queued_offline: int = 0
    out_of_order: int = 0
    dh_steps: int = 0
    skipped_stored: int = 0
    skipped_used: int = 0
    plaintexts: list[bytes] = field(default_factory=list)
    files: int = 0
    blob_reused: bool = False
    spqr_chunks_sent: int = 0
    spqr_chunks_received: int = 0
    spqr_keys_mixed: int = 0
    spqr_epoch_changes: int = 0
    spqr_epoch: int = 0
    group_copies: int = 0
    rotated: bool = False
    removed_read: int = -1


_AGREEMENT_NOTES = {
    "X3DH": "X3DH",
    "PQXDH": "PQXDH (ML-KEM-1024)",
    "PQXDH_V4": "PQXDH v4 (Kyber1024) + SPQR",
}
_AGREEMENT_SUMMARIES = {
    "X3DH": "X3DH (four X25519 DH values, libsignal v3 KDF)",
    "PQXDH": (
        "the project's PQXDH (X3DH plus ML-KEM-1024, the KEM secret bound into the KDF; message version 3)"
    ),
    "PQXDH_V4": (
        "Signal's PQXDH with Kyber-1024 (X3DH plus a Kyber1024 secret, KDF info "
        "WhisperText_X25519_SHA-256_CRYSTALS-KYBER-1024), message version 4, then the Triple Ratchet "
        "(Double Ratchet + SPQR), as libsignal speaks it"
    ),
}


def _agreement(event: Event) -> str:
    """Which key agreement a ``*.kdf`` event belongs to: X3DH, PQXDH (ML-KEM) or PQXDH_V4 (Kyber)."""
    if event.step == "x3dh.kdf":
        return "X3DH"
    return "PQXDH_V4" if "KYBER" in str(event.public.get("info", "")) else "PQXDH"


def _short_hex(data: bytes, head: int = 8, tail: int = 4) -> str:
    """``33 0a 21 05 … 85 5a 9a cd``: enough to tell ciphertexts apart, short enough for a column."""
    if len(data) <= head + tail:
        return data.hex(" ")
    return f"{data[:head].hex(' ')} … {data[-tail:].hex(' ')}" if tail else f"{data[:head].hex(' ')} …"


def _relay_cell(row: StoredRow | None, note: str = "") -> str:
    if row is None:
        return note or "(already deleted)"
    kind = _TYPE_NAMES.get(row.type, f"type {row.type}")
    lines = [
        f"#{row.server_id} {inert(row.sender)}→{inert(row.recipient)} {kind}",
        f"{len(row.body):,} B  id {inert(row.client_id[:8])}…",
        _short_hex(row.body),
    ]
    if note:
        lines.append(note)
    return "\n".join(lines)


class _Demo:
    def __init__(self, options: Options, out: TextIO, directory: Path) -> None:
        self.options = options
        self.out = out
        self.directory = directory
        self.columns = Columns(self._print, width=options.width, encoding=getattr(out, "encoding", None))
        fancy = self.columns.rule != "|"
        self.send_arrow = "→" if fancy else "->"
        self.receive_arrow = "←" if fancy else "<-"
        self.tick = "✓" if fancy else "ok"
        self.alice = _Person("alice", 0)
        self.bob = _Person("bob", 2)
        self.carol = _Person("carol", 2)
        self.tally = _Tally()
        self.relay = RelayProcess(directory)
        self.database: RelayDatabase | None = None
        self.captured: dict[str, StoredRow | None] = {}
        self.url = ""
        self.step = "starting"
        # During step 6 explain mode shows SPQR's epoch changes only (hundreds of messages).
        self.spqr_only = False
        self.chunk_pending = False
        self.laptop: Client | None = None

    # -- output --------------------------------------------------------------------------------

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def _explain_line(self, label: str, text: str) -> None:
        prefix = f"    [{label}] "
        for line in textwrap.wrap(
            text, self.columns.width, initial_indent=prefix, subsequent_indent=" " * (len(prefix) + 2)
        ):
            self._print(line)

    def _heading(self, text: str) -> None:
        self.step = text
        self.columns.heading(text)

    def _cells(self, person: _Person, text: str, middle: str = "", other: str = "") -> None:
        cells = ["", middle, ""]
        cells[person.column] = text
        cells[2 - person.column] = other
        self.columns.row(*cells)

    # -- the parts -----------------------------------------------------------------------------

    def _trace_for(self, person: _Person) -> Callable[[Event], None]:
        label = person.name.capitalize()
        explainer = Explainer(
            lambda text: self._explain_line(label, text),
            show_secrets=self.options.show_secrets,
            enabled=self.options.explain,
        )

        def trace(event: Event) -> None:
            person.steps.append(event)
            self._count_spqr(event)
            if not self.spqr_only or event.step == "ratchet.pq_epoch":
                explainer(event)

        return trace

    def _hooks_for(self, person: _Person) -> Hooks:
        def after_receive_commit(sender: str, message_id: str) -> None:
            # The recipient has committed the message and not yet acknowledged it, so the relay
            # still holds it: this is the moment to read what the relay stored.
            assert self.database is not None
            self.captured[message_id] = self.database.message(sender, message_id)
            person.steps_by_message[message_id] = person.take_steps()

        return Hooks(after_receive_commit=after_receive_commit)

    async def _online(self, person: _Person, create: bool) -> Client:
        path = self.directory / f"{person.name}.sqlite3"
        options: dict[str, Any] = {
            "trace": self._trace_for(person),
            "hooks": self._hooks_for(person),
            "settings": _SETTINGS,
        }
        if create:
            client: Client = ReorderingClient.create(path, self.url, person.name, **options)
        else:
            client = ReorderingClient.open(path, self.url, **options)
        person.client = client
        await client.start()
        await client.wait_connected(self.options.timeout)
        return client

    async def _offline(self, person: _Person) -> None:
        client, person.client = person.client, None
        if client is not None:
            await client.close()

    def _describe_sent(self, steps: list[Event]) -> list[str]:
        notes: list[str] = []
        for event in steps:
            if event.step in ("x3dh.kdf", "pqxdh.kdf"):
                self.tally.agreement = _agreement(event)
                notes.append(f"{_AGREEMENT_NOTES[self.tally.agreement]}: new session from Bob's bundle")
            elif event.step == "ratchet.dh_step" and event.public.get("direction") == "sending":
                notes.append(f"new ratchet key {event.public.get('our_ratchet_key')} (DH step)")
            elif event.step == "ratchet.chain_step" and event.public.get("chain") == "sending":
                notes.append(f"sending chain, message #{event.public.get('index')}")
        return notes

    def _describe_received(self, steps: list[Event]) -> list[str]:
        notes: list[str] = []
        for event in steps:
            if event.step in ("x3dh.kdf", "pqxdh.kdf"):
                notes.append(f"{_AGREEMENT_NOTES[_agreement(event)]}: session from the first message")
            elif event.step == "ratchet.pq_epoch":
                notes.append(f"SPQR: epoch {event.public.get('from')} → {event.public.get('to')}")
            elif event.step == "ratchet.dh_step" and event.public.get("direction") == "receiving":
                self.tally.dh_steps += 1
                notes.append(f"their new ratchet key {event.public.get('their_ratchet_key')}: DH step")
            elif event.step == "ratchet.skipped_keys_stored":
                stored = int(event.public.get("stored", 0))
                self.tally.skipped_stored += stored
                notes.append(f"{stored} skipped message key{'s' if stored != 1 else ''} stored")
            elif event.step == "ratchet.skipped_key_used":
                self.tally.skipped_used += 1
                notes.append(f"late: stored key for #{event.public.get('counter')} used, deleted")
            elif event.step == "ratchet.mac" and event.public.get("ok") is True:
                notes.append(f"MAC {self.tick}")
        return notes

    def _count_spqr(self, event: Event) -> None:
        """Count SPQR's steps for the summary (every message's, whether explained or not)."""
        tally = self.tally
        if event.step == "ratchet.pq_key":
            if "spqr_chunk" in event.public:
                if event.public.get("direction") == "encrypt":
                    tally.spqr_chunks_sent += 1
                else:
                    # Counted once the message's MAC checks: a state tried and set aside (an
                    # archived one) also runs SPQR on its copy first.
                    self.chunk_pending = True
            if event.public.get("pq_key_mixed") is True:
                tally.spqr_keys_mixed += 1
            epoch = event.public.get("our_spqr_epoch")
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                tally.spqr_epoch = max(tally.spqr_epoch, epoch)
        elif event.step == "ratchet.pq_epoch":
            tally.spqr_epoch_changes += 1
        elif event.step == "ratchet.mac":
            if self.chunk_pending and event.public.get("ok") is True:
                tally.spqr_chunks_received += 1
            self.chunk_pending = False

    async def _send(self, sender: _Person, recipient: _Person, text: str) -> tuple[str, str]:
        """Send ``text`` and wait for the relay's ack; returns the sender's cell and the message id."""
        client = sender.running
        sender.take_steps()
        message_id = await client.send(recipient.name, text)
        notes = self._describe_sent(sender.take_steps())
        await client.flush(self.options.timeout)
        self.tally.sent += 1
        self.tally.plaintexts.append(text.encode())
        return "\n".join([f'{self.send_arrow} "{text}"', *notes]), message_id

    async def _receive(self, person: _Person) -> tuple[Message, list[str]]:
        event = await person.running.receive(self.options.timeout)
        if not isinstance(event, Message):
            raise DemoFailed(f"{person.name} got {inert(repr(event))} instead of a message")
        self.tally.received += 1
        notes = self._describe_received(person.steps_by_message.pop(event.message_id, []))
        # (A state tried and set aside can repeat a step's note; say each once.)
        return event, list(dict.fromkeys(notes))

    def _received_cell(self, message: Message, notes: list[str], extra: str = "") -> str:
        lines = [f'{self.receive_arrow} "{inert(message.body)}"' + (f" {extra}" if extra else ""), *notes]
        return "\n".join(lines)

    async def _exchange(self, sender: _Person, recipient: _Person, text: str) -> None:
        """One message to an online recipient, shown on one row once it arrived."""
        sent_cell, message_id = await self._send(sender, recipient, text)
        message, notes = await self._receive(recipient)
        if message.message_id != message_id:
            raise DemoFailed(f"{recipient.name} received {inert(message.message_id)}, expected {message_id}")
        await self._wait_deleted(sender.name, message_id)
        relay = _relay_cell(self.captured.get(message_id), "deleted after the ack")
        self._cells(sender, sent_cell, relay, self._received_cell(message, notes))

    # -- the script ----------------------------------------------------------------------------

    async def run(self) -> None:
        columns = self.columns
        if self.options.show_secrets:
            self._print(SHOW_SECRETS_WARNING)
        self._heading("1. A relay starts: its own process, SQLite file and ephemeral port")
        self.url = self.relay.start()
        self.database = RelayDatabase(self.relay.database)
        columns.header()
        columns.row("", f"listening on {self.url}\ndatabase {self.relay.database.name} (read-only here)", "")

        self._heading("2. Bob registers, publishes his prekey bundle, goes offline")
        await self._online(self.bob, create=True)
        stock = await self._wait_for_stock("bob")
        identity = self.database.identity_key("bob") or b""
        kem = f"\n{stock.one_time_kem} one-time ML-KEM prekeys" if stock.one_time_kem else ""
        if stock.one_time_kyber:
            kem += f"\n{stock.one_time_kyber} one-time Kyber1024 prekeys (v4)"
        columns.row(
            "",
            f"bob's identity key {_short_hex(identity, 8, 0)}\n"
            f"signed prekey #{stock.signed_pre_key_ids[-1]} (signature checked)\n"
            f"{stock.one_time_ec} one-time prekeys{kem}",
            "registered, bundle uploaded\n(keys generated here; private halves never leave)",
        )
        await self._offline(self.bob)
        columns.row("", "", "offline")

        self._heading("3. Alice fetches Bob's bundle and sends while Bob is offline")
        await self._online(self.alice, create=True)
        for text in OFFLINE:
            sent_cell, message_id = await self._send(self.alice, self.bob, text)
            row = self.database.message("alice", message_id)
            if row is None:
                raise DemoFailed("the relay acknowledged a message it does not hold")
            self.tally.queued_offline += 1
            columns.row(sent_cell, _relay_cell(row, "queued: bob is offline"), "")
        left = self.database.pre_key_stock("bob").one_time_ec
        columns.row("", f"bob's one-time prekeys: {left} (the fetch claimed one, once)", "")

        self._heading("4. Bob comes online: the relay pushes his queue")
        await self._online(self.bob, create=False)
        for _ in range(2):
            message, notes = await self._receive(self.bob)
            await self._wait_deleted("alice", message.message_id)
            server_id = self._server_id(message.message_id)
            columns.row(
                "", f"#{server_id} pushed to bob, acknowledged, deleted", self._received_cell(message, notes)
            )
        columns.row("", f"queue for bob: {len(self.database.queue('bob'))} messages", "")

        self._heading("5. Back and forth: each change of speaker is a DH ratchet step")
        for sender_name, text in BACK_AND_FORTH:
            sender, recipient = (self.alice, self.bob) if sender_name == "alice" else (self.bob, self.alice)
            await self._exchange(sender, recipient, text)

        self._heading("6. Alice sends four; the network delivers the first two last")
        bob_client = self.bob.running
        assert isinstance(bob_client, ReorderingClient)
        bob_client.reorder.hold_next(_LATE, release_after=len(REORDERED) - _LATE)
        texts = REORDERED
        sent: dict[str, str] = {}
        for text in texts:
            cell, message_id = await self._send(self.alice, self.bob, text)
            sent[message_id] = cell
        arrived: list[str] = []
        for position in range(len(texts)):
            message, notes = await self._receive(self.bob)
            arrived.append(message.message_id)
            order = ["1st", "2nd", "3rd", "4th"][position]
            relay = _relay_cell(self.captured.get(message.message_id))
            columns.row(
                sent.get(message.message_id, "?"),
                relay,
                self._received_cell(message, notes, f"(arrived {order})"),
            )
        if arrived == list(sent):
            raise DemoFailed("the messages arrived in order; the network did not reorder them")
        self.tally.out_of_order = len(bob_client.reorder.held_back)

        self._heading("7. They compare safety numbers (read out, or scanned as a QR code)")
        alice_view = self.alice.running.safety_number("bob")
        bob_view = self.bob.running.safety_number("alice")
        columns.row(
            format_safety_number(str(alice_view.displayable)),
            "the relay never sees these: each side computes them from both identity keys",
            format_safety_number(str(bob_view.displayable)),
        )
        self.alice.running.verify("bob", str(bob_view.displayable))
        self.bob.running.verify_scanned("alice", alice_view.scannable.serialize())
        columns.row(
            f"{self.tick} same 60 digits: bob verified", "", f"{self.tick} scanned Alice's code: verified"
        )

        await self._spqr_epochs()
        await self._picture()
        await self._group()
        # A business on the same relay (client/demo/business.py).
        await business_step(self)
        await self._laptop()

    async def _spqr_epochs(self) -> None:
        """Step 6: ping-pong until both SPQR states reached :data:`_SPQR_TARGET_EPOCH`."""
        columns = self.columns
        self._heading("8. A long back and forth: SPQR's epochs (the Triple Ratchet's third ratchet)")
        columns.row(
            "every message carries a 32-byte SPQR chunk in field 5 (pq_ratchet)",
            "the relay sees the chunks: public, like ratchet keys",
            "chunks rebuild an ML-KEM-768 key and ciphertext: a new epoch's secret",
        )
        if self.options.explain:
            self._print("    (explain mode shows only SPQR's epoch changes in this step)")
        self.spqr_only = True
        epochs = {"alice": 1, "bob": 1}
        sent = 0
        try:
            while min(epochs.values()) < _SPQR_TARGET_EPOCH:
                if sent >= _SPQR_MAX_MESSAGES:
                    raise DemoFailed(f"SPQR did not reach epoch {_SPQR_TARGET_EPOCH} in {sent} messages")
                sender, recipient = (self.alice, self.bob) if sent % 2 == 0 else (self.bob, self.alice)
                text = f"ping {sent // 2 + 1}" if sender is self.alice else f"pong {sent // 2 + 1}"
                await sender.running.send(recipient.name, text)
                self.tally.sent += 1
                self.tally.plaintexts.append(text.encode())
                sent += 1
                message, notes = await self._receive(recipient)
                if message.text != text:
                    raise DemoFailed(f"{recipient.name} received {message.text!r}, expected {text!r}")
                for note in notes:
                    if note.startswith("SPQR: epoch"):
                        epochs[recipient.name] = int(note.rsplit(" ", 1)[1])
                        self._cells(
                            sender,
                            f'{self.send_arrow} "{text}" (message {sent} of this step)',
                            "",
                            self._received_cell(message, [note + ": a fresh ML-KEM-768 secret"]),
                        )
        finally:
            self.spqr_only = False
        await sender.running.flush(self.options.timeout)
        columns.row(
            f"{sent} messages, both sides at epoch {min(epochs.values())}",
            f"{self.tally.spqr_chunks_sent} chunks sent so far",
            f"SPQR's key mixed into {self.tally.spqr_keys_mixed} message-key derivations",
        )

    async def _picture(self) -> None:
        columns = self.columns
        self._heading("9. Alice sends Bob a picture; Bob forwards it to Carol (the blob is reused)")
        picture = self.directory / "sunrise.png"
        picture.write_bytes(draw_picture())
        size = picture.stat().st_size
        sent = await self.alice.running.send_file("bob", picture)
        await self.alice.running.flush(self.options.timeout)
        self.tally.plaintexts.append(picture.read_bytes()[:64])
        self.tally.plaintexts.append(picture.read_bytes()[-64:])
        stored = self.relay.blobs / "blobs" / sent.pointer.blob_id
        blob = stored.read_bytes()
        if len(blob) != blob_size(size):
            raise DemoFailed("the blob service holds a blob of another size")
        event = await self.bob.running.receive(self.options.timeout)
        if not isinstance(event, Message) or not event.is_attachment:
            raise DemoFailed(f"bob got {inert(repr(event))} instead of the picture")
        pointer = self.bob.running.attachment(event)
        saved = await self.bob.running.download(pointer, self.directory / "bob-files")
        width, height = png_size(saved.read_bytes())
        if saved.read_bytes() != picture.read_bytes():
            raise DemoFailed("bob's picture differs from alice's")
        self.tally.files += 1
        columns.row(
            f"{self.send_arrow} {picture.name} ({size:,} B)\nencrypted with a fresh key while it uploads;"
            " the key and digest go in a message",
            f"blob {inert(pointer.blob_id[:10])}… {len(blob):,} B\n(size bucket: files of "
            f"{_bucket_floor(size):,}–{padded_size(size):,} B look alike)\n{_short_hex(blob)}",
            f"{self.receive_arrow} {inert(saved.name)}: length, digest and MAC\nverified before decrypting;"
            f" opened: PNG {width}×{height}",
        )
        await self._online(self.carol, create=True)
        blobs_before = sorted(p.name for p in (self.relay.blobs / "blobs").iterdir())
        await self.bob.running.forward_file("carol", pointer)
        forwarded = await self.carol.running.receive(self.options.timeout)
        if not isinstance(forwarded, Message) or not forwarded.is_attachment:
            raise DemoFailed(f"carol got {inert(repr(forwarded))} instead of the picture")
        carol_pointer = self.carol.running.attachment(forwarded)
        carol_file = await self.carol.running.download(carol_pointer, self.directory / "carol-files")
        blobs_after = sorted(p.name for p in (self.relay.blobs / "blobs").iterdir())
        self.tally.blob_reused = carol_pointer.blob_id == pointer.blob_id and blobs_before == blobs_after
        if not self.tally.blob_reused or carol_file.read_bytes() != picture.read_bytes():
            raise DemoFailed("the forward to carol did not reuse the blob")
        self.tally.files += 1
        columns.row(
            "",
            f"same blob {inert(pointer.blob_id[:10])}…: no new upload\n({len(blobs_after) // 2} blob stored)",
            f"{self.send_arrow} forwarded to carol (the pointer only)\ncarol: {self.receive_arrow} "
            f"{inert(carol_file.name)} verified, PNG {width}×{height}",
        )
        await self._offline(self.carol)

    async def _next(self, person: _Person, kind: type, where: Callable[[Any], bool] = lambda e: True) -> Any:
        async def wait() -> Any:
            while True:
                event = await person.running.receive()
                if isinstance(event, kind) and where(event):
                    return event

        return await asyncio.wait_for(wait(), self.options.timeout)

    async def _group(self) -> None:
        columns = self.columns
        assert self.database is not None
        self._heading("10. A group: one upload at the relay, one delivery per member")
        await self._online(self.carol, create=False)
        alice, bob, carol = self.alice.running, self.bob.running, self.carol.running
        group = await alice.create_group("demo group", ["bob", "carol"])
        change = self.database.copies("alice", f"membership:{group.hex()}:0")
        for person in (self.bob, self.carol):
            await self._next(person, MembershipChanged)
        columns.row(
            f"{self.send_arrow} new group: alice (admin), bob, carol\nsigned by alice's identity key",
            f"membership change, epoch 0, {len(change[0].body) if change else 0} B\n"
            f"checked and queued for {len(change)} devices",
            "bob and carol verify the signature\nand the hash chain before trusting it",
        )
        await self._offline(self.bob)
        await self._offline(self.carol)
        message_id = await alice.send_group(group, GROUP_TEXTS[0])
        await alice.flush_groups(self.options.timeout)
        self.tally.plaintexts.append(GROUP_TEXTS[0].encode())
        self.tally.sent += 1
        copies = self.database.copies("alice", message_id)
        self.tally.group_copies = len(copies)
        if len(copies) != 2 or len({row.body for row in copies}) != 1:
            raise DemoFailed(f"the group message is stored {len(copies)} times, not once per member device")
        columns.row(
            f'{self.send_arrow} "{GROUP_TEXTS[0]}"\none Sender Keys encryption and signature,\none upload',
            "\n".join(_relay_cell(row) for row in copies),
            "(bob and carol are offline: one copy\nwaits for each)",
        )
        for person in (self.bob, self.carol):
            await self._online(person, create=False)
            event = await self._next(person, GroupMessage)
            await self._wait_copy_deleted("alice", message_id, person.name)
            self.tally.received += 1
            columns.row(
                "",
                f"{person.name}'s copy acknowledged and deleted",
                f'{person.name} {self.receive_arrow} "{event.text}" (group)',
            )

        self._heading("11. Alice removes Carol: every remaining member makes a new sender key")
        bob, carol = self.bob.running, self.carol.running
        before = bob._groups.sender_key(bob._our_name(group))
        await alice.remove_members(group, ["carol"])
        await self._next(self.bob, MembershipChanged, lambda e: e.removed == ("carol",))
        await self._next(self.carol, MembershipChanged, lambda e: e.we_left)
        await self._offline(self.alice)
        message_id = await bob.send_group(group, GROUP_TEXTS[1])
        await bob.flush_groups(self.options.timeout)
        after = bob._groups.sender_key(bob._our_name(group))
        self.tally.rotated = before is not None and after is not None and before != after
        copies = self.database.copies("bob", message_id)
        if [row.recipient for row in copies] != ["alice"]:
            raise DemoFailed(f"bob's message after the removal is queued for {[r.recipient for r in copies]}")
        self.tally.plaintexts.append(GROUP_TEXTS[1].encode())
        self.tally.sent += 1
        columns.row(
            "(alice is offline for a moment)",
            "epoch 1 without carol: the one copy\n" + "\n".join(_relay_cell(row) for row in copies),
            f'bob: new sender chain, given to alice only\n{self.send_arrow} "{GROUP_TEXTS[1]}"',
        )
        await self._online(self.alice, create=False)
        event = await self._next(self.alice, GroupMessage)
        self.tally.received += 1
        await asyncio.sleep(0.3)
        self.tally.removed_read = sum(
            1 for e in carol.group_history(group) if e.body == GROUP_TEXTS[1].encode()
        )
        if not self.tally.rotated or self.tally.removed_read:
            raise DemoFailed("the removal did not rotate bob's sender key, or carol read the next message")
        columns.row(
            f'{self.receive_arrow} bob: "{event.text}"',
            "alice's copy acknowledged and deleted",
            "carol: removed; her old copy of bob's chain\nopens nothing sent on the new one",
        )
        await self._offline(self.carol)

    async def _wait_copy_deleted(self, sender: str, message_id: str, recipient: str) -> None:
        assert self.database is not None
        deadline = asyncio.get_running_loop().time() + self.options.timeout
        while any(row.recipient == recipient for row in self.database.copies(sender, message_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise DemoFailed(f"the relay kept {recipient}'s copy after its acknowledgement")
            await asyncio.sleep(0.01)

    async def _laptop(self) -> None:
        """Alice links a laptop (docs/devices.md); Bob's message reaches both of her devices, and
        the laptop's reply shows on her phone."""
        columns = self.columns
        for person in (self.alice, self.bob):
            if person.client is None:
                await self._online(person, create=False)
        self._heading("13. Alice links her laptop: every message reaches both of her devices")
        offers: asyncio.Queue[LinkOffer] = asyncio.Queue()
        linking = asyncio.ensure_future(
            link_companion(
                self.directory / "alice-laptop.sqlite3",
                self.url,
                on_offer=offers.put_nowait,
                timeout=self.options.timeout,
                settings=_SETTINGS,
            )
        )
        offer = await asyncio.wait_for(offers.get(), self.options.timeout)
        code = offer.to_code()
        device_id = await self.alice.running.link(code)
        laptop = await asyncio.wait_for(linking, self.options.timeout)
        self.laptop = laptop
        await laptop.start()
        await laptop.wait_connected(self.options.timeout)
        listed = self.alice.running.known_devices("alice")
        columns.row(
            f"the laptop shows a QR code and\n{code[:22]}…\nthe phone types /link CODE",
            f"signed device list: alice/{', alice/'.join(map(str, listed))}\n(the linking payload is "
            "sealed with a secret the relay never saw)",
            "",
        )
        columns.row(f"laptop: linked as device {device_id}, its own identity key", "", "")
        text = "Hello to both of your devices."
        await self.bob.running.send_all("alice", text)
        await self.bob.running.flush(self.options.timeout)
        self.tally.sent += 1
        self.tally.plaintexts.append(text.encode())
        on_phone = await self._next(self.alice, Message, lambda e: e.text == text)
        self.tally.received += 1
        on_laptop = await laptop.receive(self.options.timeout)
        if not isinstance(on_laptop, Message) or on_laptop.message_id != on_phone.message_id:
            raise DemoFailed(f"alice's laptop got {on_laptop!r} instead of bob's message")
        self.tally.received += 1
        columns.row(
            f'{self.receive_arrow} "{on_phone.text}" (phone)\n{self.receive_arrow} "{on_laptop.text}" '
            "(laptop, its own session)",
            "two copies: alice/1 and alice/2",
            f'{self.send_arrow} "{text}"\nto every device on alice\'s signed list',
        )
        reply = "Answered from my laptop."
        await laptop.send_all("bob", reply)
        await laptop.flush(self.options.timeout)
        self.tally.sent += 1
        self.tally.plaintexts.append(reply.encode())
        at_bob = await self._next(self.bob, Message, lambda e: e.text == reply)
        self.tally.received += 1
        copy = await self._next(self.alice, Message, lambda e: e.to is not None)
        if not isinstance(copy, Message) or copy.to != "bob" or copy.text != reply:
            raise DemoFailed(f"alice's phone got {copy!r} instead of the laptop's copy")
        columns.row(
            f'laptop {self.send_arrow} "{reply}"\nphone shows: you (device {copy.sender_device}) → bob: '
            f'"{copy.text}"',
            "two copies: bob/1 and alice/1",
            f'{self.receive_arrow} "{at_bob.text}" (from alice/{at_bob.sender_device})',
        )

    def _server_id(self, message_id: str) -> str:
        row = self.captured.get(message_id)
        return str(row.server_id) if row is not None else "?"

    async def _wait_deleted(self, sender: str, message_id: str) -> None:
        """Wait until the relay deleted an acknowledged message (its commit follows the ack)."""
        assert self.database is not None
        deadline = asyncio.get_running_loop().time() + self.options.timeout
        while self.database.message(sender, message_id) is not None:
            if asyncio.get_running_loop().time() > deadline:
                raise DemoFailed(f"the relay kept message {message_id} after its acknowledgement")
            await asyncio.sleep(0.01)

    async def _wait_for_stock(self, account: str) -> Any:
        assert self.database is not None
        deadline = asyncio.get_running_loop().time() + self.options.timeout
        while True:
            stock = self.database.pre_key_stock(account)
            kyber_ready = stock.one_time_kyber >= _SETTINGS.kyber_pre_key_target or not (
                _SETTINGS.publish_kyber_pre_keys
            )
            if stock.signed_pre_key_ids and stock.one_time_ec >= _SETTINGS.pre_key_target and kyber_ready:
                return stock
            if asyncio.get_running_loop().time() > deadline:
                raise DemoFailed(f"{account}'s prekeys never reached the relay")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self.laptop is not None:
            await self.laptop.close()
            self.laptop = None
        for person in (self.alice, self.bob, self.carol):
            await self._offline(person)
        if self.database is not None:
            self.database.close()
            self.database = None

    def relay_files_contain(self, needles: Sequence[bytes]) -> list[bytes]:
        """Plaintexts found in any of the relay's files (database, WAL, log, stored blobs)."""
        found: list[bytes] = []
        paths = [*self.directory.glob("relay.*"), *self.relay.blobs.rglob("*")]
        contents = [path.read_bytes() for path in paths if path.is_file()]
        for needle in needles:
            if any(needle in content for content in contents):
                found.append(needle)
        return found

    def summary(self, relay_status: int) -> None:
        tally = self.tally
        found = self.relay_files_contain(tally.plaintexts)
        self.columns.heading("Summary")
        agreement = _AGREEMENT_SUMMARIES.get(tally.agreement, tally.agreement)
        spqr = (
            f"{tally.spqr_epoch_changes} epoch changes seen (both sides reached epoch {tally.spqr_epoch}); "
            f"{tally.spqr_chunks_sent} chunks sent and {tally.spqr_chunks_received} received; SPQR's key "
            f"mixed into {tally.spqr_keys_mixed} message-key derivations (senders' and receivers')"
            if tally.agreement == "PQXDH_V4"
            else "not running (no version-4 session)"
        )
        lines = [
            f"key agreement:   {agreement}",
            f"SPQR:            {spqr}",
            f"messages:        {tally.sent} sent, {tally.received} received and decrypted; "
            f"{tally.queued_offline} waited at the relay while Bob was offline; "
            f"{tally.out_of_order} overtaken by later ones and still decrypted",
            f"double ratchet:  {tally.dh_steps} DH ratchet steps seen by receivers; "
            f"{tally.skipped_stored} skipped message key{'s' if tally.skipped_stored != 1 else ''} stored, "
            f"{tally.skipped_used} used",
            f"relay database:  {'NO' if not found else 'FOUND'} plaintext in the relay's files "
            f"and blobs (all {len(tally.plaintexts)} messages and picture parts searched byte for byte)",
            f"attachments:     {tally.files} files verified before decryption; the forward "
            f"{'reused' if tally.blob_reused else 'did NOT reuse'} the blob",
            f"groups:          one upload stored as {tally.group_copies} copies, one per member device; "
            f"the removal {'rotated' if tally.rotated else 'did NOT rotate'} the sender key; "
            f"the removed member read {tally.removed_read} later messages",
            "safety numbers:  equal on both sides, verified both ways",
            f"relay:           stopped, exit status {relay_status}",
        ]
        if self.options.keep:
            lines.append(f"kept:            {self.directory}")
        for line in lines:
            for wrapped in textwrap.wrap(
                line, self.columns.width, initial_indent="  ", subsequent_indent=" " * 19
            ):
                self._print(wrapped)
        if found:
            raise DemoFailed("plaintext found in the relay's files")
        if relay_status != 0:
            raise DemoFailed(f"the relay exited with status {relay_status}")
        if self.options.show_secrets:
            self._print(SHOW_SECRETS_WARNING)


async def run(options: Options, out: TextIO, directory: Path) -> None:
    """Run the whole demo in ``directory``; raises :class:`DemoFailed` (or the underlying error)."""
    demo = _Demo(options, out, directory)
    try:
        await demo.run()
    except (TimeoutError, DemoFailed, RelayStartError, OSError) as error:
        reason = str(error) or f"a step took longer than {options.timeout:g} s ({type(error).__name__})"
        raise DemoFailed(f"in step “{demo.step}”: {reason}") from error
    finally:
        await demo.close()
        status = demo.relay.stop()
    demo.summary(status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-demo",
        description="Alice and Bob talk end to end encrypted through a real relay, shown side by side.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--explain", action="store_true", help="print every protocol step (keys as short fingerprints)"
    )
    parser.add_argument(
        "--show-secrets",
        action="store_true",
        help="TEACHING ONLY: print private values (DH outputs, root/chain/message keys) in full",
    )
    parser.add_argument("--width", type=int, default=None, help="output width (default: the terminal's)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory with both databases"
    )
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds any one step may take")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = Options(
        explain=args.explain or args.show_secrets,
        show_secrets=args.show_secrets,
        width=args.width,
        keep=args.keep,
        timeout=args.timeout,
    )
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A terminal that cannot show a character gets a replacement, not a crash mid-demo.
        sys.stdout.reconfigure(errors="replace")
    directory = Path(tempfile.mkdtemp(prefix="e2e-demo-"))
    try:
        asyncio.run(run(options, sys.stdout, directory))
    except (TimeoutError, DemoFailed, RelayStartError, OSError) as error:
        # The reason may quote the relay's log or what the relay sent: shown inert, line by line.
        shown = "\n".join(inert(line) for line in str(error).splitlines())
        print(f"\ndemo failed: {shown}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the relay was stopped", file=sys.stderr)
        return 130
    finally:
        if not options.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return 0
