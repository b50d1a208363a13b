"""The asyncio client: one device's keys, sessions and conversations, kept in step with a relay.

What this module owns
---------------------
:class:`Client`, the object an application holds for one device.  It

* creates the device's identity (identity key pair and registration id) and registers it;
* keeps the relay stocked with one-time prekeys (tops them up on connect and whenever the relay says
  the stock is low) and rotates the signed prekey, keeping retired ones for a grace period so that
  late PreKey messages built on them still decrypt;
* fetches bundles, starts sessions (by default a version-4 session, Signal's PQXDH with Kyber1024 and
  then SPQR, when the bundle carries a Kyber prekey; the project's PQXDH with an ML-KEM prekey, or
  X3DH, only for a device that publishes none; never down from version 4 once a session with the
  device was version 4), encrypts, sends, receives, decrypts, and removes duplicates by message id;
* reconnects with capped, jittered exponential backoff and resends what the relay had not
  acknowledged;
* tracks contacts by identity key: trust on first use, verification by safety number, and an
  explicit :meth:`Client.accept_identity` when a contact's key changes.

One message's path
------------------
Sending: ``send`` → (``SessionBuilder`` with a fetched bundle) → ``SessionCipher.encrypt`` →
commit {new session state, outbox entry, history} → relay ``send`` → relay's ack → remove the
outbox entry.  Receiving: relay push → already processed? (then ack only) →
``SessionCipher.decrypt`` → commit {new session state, used one-time prekey removed, contact,
history, processed id} → relay ack → event to the application.  The cipher runs over the SQLite
store through :mod:`client.protocol_store`, inside the transaction that commits.  Messages
that arrive together are committed in one transaction and acknowledged together.

Crash safety (the argument is spelled out in docs/client.md)
------------------------------------------------------------
* Nothing is acknowledged to the relay before the transaction that records its effect has
  committed, so a crash before the commit makes the relay deliver the message again, to a store
  that never saw it; a crash after the commit makes it deliver again a message whose id is already
  processed, which is acknowledged without being decrypted.  Either way the message is in the
  history exactly once and the stored ratchet state is the one that decrypted it.
* An encrypted message is in the outbox, together with the session state that produced it, before
  its frame is written, so a message key is never used for two different plaintexts: after a crash
  the same ciphertext is sent again under the same client message id, which the relay dedupes.
* The in-memory session cache is dropped for a peer whenever a commit for that peer fails, so
  memory never runs ahead of the file.

What it does not know
---------------------
Frame formats and authentication (:mod:`client.transport`), SQL (:mod:`client.store`) and its
adaptation to the core's store protocols (:mod:`client.protocol_store`), which prekeys to make
and when to upload them (:mod:`client.prekeys`) and the protocol's mathematics (:mod:`e2e`).
Randomness (``rng``, default :func:`os.urandom`), the clock (``clock``, seconds) and sleeping
(``sleep``) are injected, so tests control all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client import envelope, transport
from client.attachments import SentFile, download_file, upload_file
from client.backoff import Backoff
from client.blobs import BlobClient, Progress
from client.errors import (
    AlreadyExistsError,
    ClosedError,
    IdentityChanged,
    MessageTooLargeError,
    NotRegisteredError,
    TextEncodingError,
)
from client.events import Event, GroupMessage, Message, SendFailed, Undecryptable
from client.fanout import FanOut
from client.groups import GroupsMixin
from client.names import check_account_name, check_device_id, check_relay_url
from client.pointer import AttachmentPointer, InvalidPointerError, decode_pointer, encode_pointer
from client.prekeys import PreKeys
from client.protocol_store import SqliteProtocolStore
from client.settings import Settings
from client.store import HeldMessage, OutboxEntry, Store, StoredMessage
from e2e import records
from e2e.address import ProtocolAddress
from e2e.errors import DecodeError, DuplicateMessageError, E2EError, NoSessionError, UntrustedIdentityError
from e2e.explain import Trace
from e2e.fingerprint import Fingerprint
from e2e.keys import KeyPair, PublicKey, Rng
from e2e.ratchet import Limits
from e2e.session_cipher import SessionBuilder, SessionCipher
from e2e.x3dh import PreKeyBundle

__all__ = ["Settings", "Hooks", "Client"]

logger = logging.getLogger("client")

_MAX_REGISTRATION_ID = 16380
"""libsignal's ``KeyHelper.generateRegistrationId`` range is 1..16380."""

_DISPLACED = 4003
"""The relay's close code for a connection displaced by a newer one of the same device."""

_MAX_ACK_IDS = 100
"""Server ids per acknowledgement (the relay's limit)."""

_BUNDLE_ATTEMPTS = 4
"""Bundle fetches tried when the relay answers ``rate_limited`` (waiting as it says in between)."""

_MAX_BATCH = 100
"""Incoming messages committed in one transaction at most."""

_TRANSIENT_REFUSALS = frozenset({"queue_full", "rate_limited", "internal_error"})
"""Relay error codes after which a message is kept in the outbox and sent again after a delay."""

_CIPHERTEXT_OVERHEAD = 2048
"""More than the ciphertext of a message can exceed its body by, so that a body of at most
``max_body_bytes - _CIPHERTEXT_OVERHEAD`` bytes always fits the relay's limit.  The largest case is
a session's first message under PQXDH: the 25-byte envelope, up to 16 bytes of CBC padding, the
8-byte MAC, the version byte, the protobuf fields of the SignalMessage (a 33-byte ratchet key, two
counters) and of the PreKeySignalMessage around it (two 33-byte keys, four ids, the registration
id) and the 1,569-byte ML-KEM-1024 ciphertext: about 1,800 bytes in all
(``tests/client/test_client_limits.py`` measures the largest one against the bound)."""

_MAX_FAILURE_LENGTH = 64
"""Characters of a relay's error code kept with a refused message."""

_HELD_IDENTITY = "identity_changed"
_HELD_UNDECRYPTABLE = "undecryptable"


@dataclass(slots=True)
class Hooks:
    """Fault-injection points (tests use them to crash the process at an exact instant).

    ``after_receive_commit(sender, message_id)`` runs after an incoming message's transaction
    committed and before the relay is acknowledged; ``after_send_commit(message_id)`` after an
    outgoing message is in the outbox and before its frame is written.
    """

    after_receive_commit: Callable[[str, str], None] | None = None
    after_send_commit: Callable[[str], None] | None = None


@dataclass(slots=True)
class _Connected:
    """The live relay connection and what belongs to it alone."""

    connection: transport.Connection
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


_CLOSED = object()


class Client(FanOut, GroupsMixin):
    """One device.  Make one with :meth:`create` (new identity) or :meth:`open` (existing store).

    Use it as an async context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        store: Store,
        relay_url: str,
        *,
        rng: Rng = os.urandom,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        trace: Trace | None = None,
        limits: Limits | None = None,
        settings: Settings | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        account = store.account()
        if account is None:
            raise NotRegisteredError(f"{store.path} holds no account; use Client.create")
        self._store = store
        self.relay_url = check_relay_url(relay_url)
        self.name = account.name
        self.device_id = account.device_id
        self._identity_key, self.registration_id = records.deserialize_identity(account.identity)
        self._rng = rng
        self._clock = clock
        self._sleep = sleep
        self._trace = trace
        self._limits = limits if limits is not None else Limits()
        self.settings = settings if settings is not None else Settings()
        self._hooks = hooks if hooks is not None else Hooks()
        self._backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap, jitter)
        self._pre_keys = PreKeys(store, self._identity_key, self.settings, rng, self._now_ms, self.name)
        self._protocol = SqliteProtocolStore(
            store, self._identity_key, self.registration_id, now_ms=self._now_ms, limits=self._limits
        )
        self._session_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._connected: _Connected | None = None
        self._connected_event = asyncio.Event()
        self._drained_event = asyncio.Event()
        self._outbox_changed = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._pre_key_check = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._ack_tasks: set[asyncio.Future[None]] = set()
        self._acked: list[str] = []
        self._to_ack: list[int] = []
        self._closed = False
        self._blobs: BlobClient | None = None
        self._blob_url: str | None = None
        self.connections = 0
        """How many times a connection to the relay was established (for tests and diagnostics)."""
        self._init_groups()
        # Linked devices: the device lists verified so far (client/fanout.py).
        self._init_devices()

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        relay_url: str,
        name: str,
        device_id: int = 1,
        *,
        rng: Rng = os.urandom,
        **options: Any,
    ) -> Client:
        """A new device: generate its identity key pair and registration id in a new store file.

        The relay learns of it on the first connection (see :meth:`start`), which registers the
        device and uploads its first signed prekey and one-time prekeys.  The name, the device id
        and the relay URL are checked against the relay's rules first
        (:class:`client.errors.InvalidInputError`): a refused one creates no file.
        """
        check_account_name(name)
        check_device_id(device_id)
        check_relay_url(relay_url)
        store = Store(path)
        if store.account() is not None:
            store.close()
            raise AlreadyExistsError(f"{path} already belongs to an account; use Client.open")
        identity_key = KeyPair.generate(rng)
        registration_id = int.from_bytes(rng(4), "big") % _MAX_REGISTRATION_ID + 1
        store.create_account(name, device_id, records.serialize_identity(identity_key, registration_id))
        return cls(store, relay_url, rng=rng, **options)

    @classmethod
    def open(cls, path: str | Path, relay_url: str, **options: Any) -> Client:
        """The device whose store is ``path`` (made earlier by :meth:`create`)."""
        check_relay_url(relay_url)
        if not Path(path).is_file():
            raise NotRegisteredError(f"{path} does not exist; use Client.create")
        store = Store(path)
        try:
            return cls(store, relay_url, **options)
        except BaseException:
            store.close()
            raise

    @property
    def identity_key(self) -> PublicKey:
        """This device's public identity key."""
        return self._identity_key.public_key

    @property
    def max_message_bytes(self) -> int:
        """The largest message body :meth:`send` accepts: one whose ciphertext fits the relay's
        ``max_body_bytes`` (``settings.max_body_bytes``) in every case."""
        return self.settings.max_body_bytes - _CIPHERTEXT_OVERHEAD

    @property
    def is_connected(self) -> bool:
        """Whether a connection to the relay is authenticated and set up right now."""
        return self._connected is not None and self._connected_event.is_set()

    def has_session(self, name: str, device_id: int = 1) -> bool:
        """Whether a message to ``name``/``device_id`` can be encrypted without the relay."""
        return self._cipher(ProtocolAddress(name, device_id)).has_session()

    @property
    def store(self) -> Store:
        """The local store (read it for history, contacts, outbox; do not write to it)."""
        return self._store

    def __repr__(self) -> str:
        return f"Client(name={self.name!r}, device_id={self.device_id}, relay_url={self.relay_url!r})"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the connection loop (it connects, registers if needed, and keeps reconnecting)."""
        if self._closed:
            raise ClosedError("the client is closed")
        if self._run_task is None:
            self._run_task = asyncio.create_task(self._run(), name=f"client {self.name}/{self.device_id}")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until a connection to the relay is authenticated and set up."""
        await asyncio.wait_for(self._wait_ready(), timeout)

    async def wait_drained(self, timeout: float | None = None) -> None:
        """Wait until the relay said the queue is empty on the current connection."""
        await asyncio.wait_for(self._drained_event.wait(), timeout)

    async def close(self) -> None:
        """Stop the connection loop and close the store; committed state is already on disk."""
        if self._closed:
            return
        self._closed = True
        if self._run_task is not None:
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        await self._disconnect()
        for task in list(self._group_tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._acked:
            # Acknowledged by the relay, not yet removed: remove them now rather than resend them.
            acked, self._acked = self._acked, []
            self._store.remove_outbox(acked)
        self._events.put_nowait(_CLOSED)
        # Wake whoever waits for a connection or for the outbox: they find the client closed.
        self._connected_event.set()
        self._outbox_empty.set()
        if self._blobs is not None:
            await self._blobs.close()
        self._store.close()

    # -- the application's side: events --------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event (:class:`Message`, :class:`Undecryptable`, :class:`IdentityChanged`) in order.

        Ends when the client is closed; raises the error that stopped the client, if one did.
        """
        while True:
            try:
                yield await self.receive()
            except ClosedError:
                if self._fatal is not None:
                    raise
                return

    async def messages(self) -> AsyncIterator[Message]:
        """The decrypted messages only (the other events are in the store for later inspection)."""
        async for event in self.events():
            if isinstance(event, Message):
                yield event

    async def receive(self, timeout: float | None = None) -> Event:
        """The next event; :class:`ClosedError` once the client is closed or stopped on an error."""
        item = await asyncio.wait_for(self._events.get(), timeout)
        if item is _CLOSED:
            # Leave the marker for every other reader.
            self._events.put_nowait(_CLOSED)
            self._check_running()
        assert isinstance(item, Event)
        return item

    # -- the application's side: sending -------------------------------------------------------

    async def send(
        self, name: str, body: bytes | str, device_id: int = 1, *, content_type: int = envelope.CONTENT_TEXT
    ) -> str:
        """Encrypt ``body`` for ``name``/``device_id`` and queue it; returns the message id.

        When this returns, the message is committed to the local outbox and will reach the relay,
        across reconnections, exactly once (use :meth:`flush` to wait for the relay's ack).  Starts
        a session first when there is none, which needs a connection.  Raises
        :class:`IdentityChanged` when the contact's identity key changed, and the relay's error
        when the recipient does not exist.  Input that cannot be sent is refused before anything
        is encrypted or stored: :class:`client.errors.TextEncodingError` for text that is not
        Unicode text (a lone surrogate), :class:`client.errors.MessageTooLargeError` for a body
        longer than :attr:`max_message_bytes`.
        """
        body = self._checked_body(body)
        self._check_running()
        address = (name, device_id)
        async with self._lock(address):
            self._check_identity_unchanged(name, device_id)
            peer = ProtocolAddress(name, device_id)
            cipher = self._cipher(peer)
            bundle = None if cipher.has_session() else await self._fetch_bundle(name, device_id)
            # The bundle fetch awaited: a message from the contact may have changed things since.
            self._check_identity_unchanged(name, device_id)
            message_id = self._rng(envelope.MESSAGE_ID_LENGTH)
            timestamp = self._now_ms()
            plaintext = envelope.encode(envelope.Envelope(message_id, timestamp, body, content_type))
            client_id = message_id.hex()
            try:
                # One transaction: the new session (if any), the advanced state, outbox and history.
                with self._committing(name):
                    if bundle is not None:
                        self._start_session(peer, cipher, bundle)
                    ciphertext = cipher.encrypt(plaintext, self._rng, trace=self._trace)
                    self._store.add_outbox(
                        name, device_id, client_id, int(ciphertext.type), ciphertext.body, timestamp
                    )
                    self._store.add_message("out", name, device_id, client_id, timestamp, body)
            except UntrustedIdentityError as error:
                # Rolled back; what is kept is the new key, waiting for the user's decision.
                raise self._untrusted(name, device_id, error) from error
        if self._hooks.after_send_commit is not None:
            self._hooks.after_send_commit(client_id)
        self._outbox_empty.clear()
        self._outbox_changed.set()
        return client_id

    async def add_contact(self, name: str, device_id: int = 1) -> str:
        """Start a session with ``name``/``device_id`` now; returns the key agreement: ``"pqxdh_v4"``
        (Signal's PQXDH and SPQR, the default with a contact who publishes Kyber prekeys),
        ``"pqxdh"`` or ``"x3dh"``.

        Fetches the contact's prekey bundle (which proves the account exists: the relay's
        ``unknown_account`` or ``unknown_device`` is raised as :class:`client.transport.RelayError`
        otherwise, and nothing is stored), runs X3DH or PQXDH and commits the new session with the
        contact's identity key (trust on first use).  The first message then travels as a PreKey
        message without another fetch.  A contact with a session already is left as it is.  Needs
        a connection; raises :class:`IdentityChanged` when the bundle's identity key is not the
        one trusted for ``name``.
        """
        check_account_name(name)
        check_device_id(device_id)
        self._check_running()
        address = (name, device_id)
        async with self._lock(address):
            self._check_identity_unchanged(name, device_id)
            peer = ProtocolAddress(name, device_id)
            cipher = self._cipher(peer)
            if not cipher.has_session():
                bundle = await self._fetch_bundle(name, device_id)
                self._check_identity_unchanged(name, device_id)
                try:
                    with self._committing(name):
                        self._start_session(peer, cipher, bundle)
                except UntrustedIdentityError as error:
                    raise self._untrusted(name, device_id, error) from error
            record = self._protocol.load_session(peer)
        agreement = None if record is None else record.agreement
        assert agreement is not None
        return agreement

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the relay has acknowledged every message in the outbox."""

        async def drained() -> None:
            while True:
                self._check_running()
                if not self._store.outbox_size():
                    return
                self._outbox_empty.clear()
                await self._outbox_empty.wait()

        await asyncio.wait_for(drained(), timeout)

    # -- the application's side: contacts and history ------------------------------------------

    def safety_number(self, name: str, *, changed: bool = False) -> Fingerprint:
        """The safety number of our identity and ``name``'s trusted identity (libsignal's format).

        With ``changed=True``, the number for the new identity key that waits for
        :meth:`accept_identity`: the one to compare before accepting it.
        """
        contact = self._store.contact(name)
        if contact is None:
            raise NoSessionError(f"no identity key known for {name}; exchange a message first")
        their_key = contact.identity_key
        if changed:
            if contact.changed_identity_key is None:
                raise ValueError(f"no changed identity key is waiting for {name}")
            their_key = contact.changed_identity_key
        return Fingerprint.create(
            self.name.encode("utf-8"),
            self.identity_key,
            name.encode("utf-8"),
            PublicKey.deserialize(their_key),
        )

    def verify(self, name: str, their_safety_number: str) -> None:
        """Compare the 60 digits ``name`` reads out; mark the contact verified when they match.

        Raises :class:`e2e.errors.FingerprintMismatchError` (and changes nothing) when they do not.
        """
        self.safety_number(name).displayable.compare(their_safety_number)
        self._store.set_verified(name, True)

    def verify_scanned(self, name: str, scanned: bytes) -> None:
        """Like :meth:`verify`, with the bytes of ``name``'s scanned QR code."""
        self.safety_number(name).scannable.compare(scanned)
        self._store.set_verified(name, True)

    def is_verified(self, name: str) -> bool:
        contact = self._store.contact(name)
        return contact is not None and contact.verified

    async def accept_identity(self, name: str) -> None:
        """Trust ``name``'s new identity key (after checking its new safety number).

        The old sessions with the account are dropped, and the messages held since the change are
        processed now: their events follow in :meth:`events`.
        """
        contact = self._store.contact(name)
        if contact is None or contact.changed_identity_key is None:
            raise ValueError(f"no changed identity key is waiting for {name}")
        with self._store.transaction():
            self._store.replace_identity(name, contact.changed_identity_key, self._now_ms())
            self._protocol.remove_sessions(name)
            # Lists signed by the old primary key no longer say anything (client/fanout.py).
            self._forget_devices(name)
        for held in self._store.held(_HELD_IDENTITY, name):
            event = self._process(_Incoming.from_held(held), held_seq=held.seq)
            if event is not None:
                self._events.put_nowait(event)

    def history(self, peer: str | None = None, limit: int | None = None) -> list[StoredMessage]:
        """Messages sent and received, oldest first."""
        return self._store.history(peer, limit)

    def quarantined(self) -> list[HeldMessage]:
        """Ciphertexts that were refused (acknowledged to the relay, kept here with the error)."""
        return self._store.held(_HELD_UNDECRYPTABLE)

    # -- prekeys -------------------------------------------------------------------------------

    async def replenish_pre_keys(self) -> int:
        """Top up the relay's one-time prekeys to the target; returns how many were uploaded."""
        connection = await self._connection()
        return await self._pre_keys.replenish(connection, top_up=True)

    async def rotate_signed_pre_key(self) -> int:
        """Make, upload and switch to a new signed prekey; returns its id.

        The previous one stays in the store for ``settings.signed_pre_key_grace`` seconds.
        """
        connection = await self._connection()
        return await self._pre_keys.rotate(connection)

    async def _maintain_pre_keys(self, connection: transport.Connection) -> None:
        """Check the prekeys again whenever the relay reports a low stock."""
        while True:
            await self._pre_key_check.wait()
            self._pre_key_check.clear()
            await self._pre_keys.check(connection, top_up=True)

    # -- sessions ------------------------------------------------------------------------------

    def _lock(self, address: tuple[str, int]) -> asyncio.Lock:
        lock = self._session_locks.get(address)
        if lock is None:
            lock = self._session_locks[address] = asyncio.Lock()
        return lock

    def _cipher(self, peer: ProtocolAddress) -> SessionCipher:
        return SessionCipher(
            self._protocol,
            peer,
            limits=self._limits,
            require_pqxdh=self.settings.require_pqxdh,
            pq_ratchet_factory=self._protocol.pq_ratchet_factory,
        )

    def _check_identity_unchanged(self, name: str, device_id: int) -> None:
        contact = self._store.contact(name)
        if contact is not None and contact.changed_identity_key is not None:
            raise self._identity_changed(name, device_id, contact.identity_key, contact.changed_identity_key)

    def _start_session(self, peer: ProtocolAddress, cipher: SessionCipher, bundle: PreKeyBundle) -> None:
        """Start a session from ``bundle`` (X3DH, or PQXDH when it has a KEM prekey), uncommitted.

        :meth:`send` calls this inside the transaction that commits the first message with it.
        """
        if cipher.has_session():
            # While the bundle was on its way, the contact's own PreKey message started a session
            # (the receive path does not take the send lock): use it, and let the claimed one-time
            # prekey go unused rather than archive a state the contact is already using.
            return
        # The builder verifies the bundle, checks the identity (trust on first use records it),
        # and refuses X3DH with a device that used PQXDH before; archived states stay.
        # A bundle with a Kyber prekey starts a version-4 session with SPQR; once a session with
        # this device is version 4, the core refuses a bundle without one (DowngradeError).
        builder = SessionBuilder(
            self._protocol, peer, limits=self._limits, pq_ratchet_factory=self._protocol.pq_ratchet_factory
        )
        builder.process_pre_key_bundle(bundle, self._rng, trace=self._trace)

    async def _fetch_bundle(self, name: str, device_id: int) -> PreKeyBundle:
        """Claim a bundle, waiting as the relay asks when this device fetches too often."""
        for attempt in itertools.count(1):
            connection = await self._connection()
            try:
                return await connection.fetch_bundle(name, device_id, kyber=self.settings.start_v4_sessions)
            except transport.RelayError as error:
                if error.code != "rate_limited" or attempt == _BUNDLE_ATTEMPTS:
                    raise
                retry_after = error.details.get("retry_after", 1.0)
                await self._sleep(min(float(retry_after), self.settings.backoff_cap))
        raise AssertionError("unreachable")

    def _identity_changed(self, name: str, device_id: int, trusted: bytes, new: bytes) -> IdentityChanged:
        return IdentityChanged(name, device_id, PublicKey.deserialize(trusted), PublicKey.deserialize(new))

    def _untrusted(self, name: str, device_id: int, error: UntrustedIdentityError) -> IdentityChanged:
        """Remember the new key the store refused (for :meth:`accept_identity`); the event for it."""
        contact = self._store.contact(name)
        assert contact is not None and error.identity_key is not None
        new_key = error.identity_key.serialize()
        self._store.record_changed_identity(name, new_key)
        return self._identity_changed(name, device_id, contact.identity_key, new_key)

    # -- receiving -----------------------------------------------------------------------------

    def _process(self, incoming: _Incoming, held_seq: int | None = None) -> Event | None:
        """Turn one delivered ciphertext into committed state and an event (or nothing).

        Runs synchronously from start to commit, so no other task can touch the same session in
        between.  ``held_seq`` names a held message being processed again (after the user accepted
        a new identity key): it is released in the same transaction.
        """
        sender, device, client_id = incoming.sender, incoming.sender_device, incoming.client_id
        if held_seq is None and self._store.is_processed(sender, device, client_id):
            logger.debug(
                "%s: duplicate delivery of %s from %s/%d dropped", self.name, client_id, sender, device
            )
            return None
        now = self._now_ms()
        # One transaction: the cipher's writes (session, used one-time prekeys, first-use
        # contact), the history and the processed id.  A failed decrypt writes nothing, so the
        # hold and quarantine paths below commit only what they record themselves.
        with self._committing(sender):
            try:
                plaintext = self._cipher(_address(sender, device)).decrypt(
                    incoming.body, incoming.type, trace=self._trace
                )
            except UntrustedIdentityError as error:
                # Not the key we trust: keep the message undecrypted until the user decides.
                # Messages on existing sessions (made with the trusted key) go on decrypting.
                contact = self._store.contact(sender)
                assert contact is not None and error.identity_key is not None
                already_reported = contact.changed_identity_key == error.identity_key.serialize()
                changed = self._untrusted(sender, device, error)
                self._hold(_HELD_IDENTITY, incoming, "identity key changed", now)
                return None if already_reported else changed
            except DuplicateMessageError:
                logger.info(
                    "%s: message %s from %s/%d was already decrypted", self.name, client_id, sender, device
                )
                self._store.mark_processed(sender, device, client_id, now)
                self._release(held_seq)
                return None
            except E2EError as error:
                return self._quarantine(incoming, error, now, held_seq)
            try:
                content = envelope.decode(plaintext)
            except DecodeError as error:
                # The message is authentic and its key is spent: keep the advanced session (the
                # cipher wrote it in this transaction), refuse the content.
                return self._quarantine(incoming, error, now, held_seq)
            if content.content_type in (envelope.CONTENT_SENDER_KEY, envelope.CONTENT_SENDER_KEY_RETRY):
                # A group's sender key or a retry request (client.groups), committed right here.
                event = self._process_control(sender, device, content)
                self._store.mark_processed(sender, device, client_id, now)
                self._release(held_seq)
                return event  # type: ignore[return-value]
            message_id = content.message_id.hex()
            if content.content_type == envelope.CONTENT_TRANSCRIPT:
                # A message our own other device sent (client/fanout.py).
                try:
                    peer, inner_type, inner_body = self._transcript(sender, content)
                except DecodeError as error:
                    return self._quarantine(incoming, error, now, held_seq)
                self._store.add_message("out", peer, 1, message_id, content.timestamp, inner_body)
                self._store.mark_processed(sender, device, client_id, now)
                self._release(held_seq)
                return Message(
                    sender,
                    device,
                    message_id,
                    content.timestamp,
                    incoming.relay_timestamp,
                    inner_body,
                    inner_type,
                    to=peer,
                )
            self._store.add_message("in", sender, device, message_id, content.timestamp, content.body)
            self._store.mark_processed(sender, device, client_id, now)
            if message_id != client_id:
                self._store.mark_processed(sender, device, message_id, now)
            self._release(held_seq)
        return Message(
            sender,
            device,
            message_id,
            content.timestamp,
            incoming.relay_timestamp,
            content.body,
            content.content_type,
        )

    @contextlib.contextmanager
    def _committing(self, name: str) -> Any:
        """One transaction for one peer's new state; on failure, forget its cached sessions."""
        try:
            with self._store.transaction():
                yield
        except BaseException:
            self._protocol.forget(name)
            raise

    def _release(self, held_seq: int | None) -> None:
        if held_seq is not None:
            self._store.release_held(held_seq)

    def _hold(self, reason: str, incoming: _Incoming, error: str, now: int) -> None:
        with self._store.transaction():
            self._store.hold(
                reason,
                incoming.sender,
                incoming.sender_device,
                incoming.client_id,
                incoming.relay_timestamp,
                incoming.type,
                incoming.body,
                error,
                now,
            )
            self._store.mark_processed(incoming.sender, incoming.sender_device, incoming.client_id, now)

    def _quarantine(
        self, incoming: _Incoming, error: E2EError, now: int, held_seq: int | None
    ) -> Undecryptable:
        kind = type(error).__name__
        logger.warning(
            "%s: refused message %s from %s/%d (%d bytes, type %d): %s",
            self.name,
            incoming.client_id,
            incoming.sender,
            incoming.sender_device,
            len(incoming.body),
            incoming.type,
            kind,
        )
        with self._store.transaction():
            self._release(held_seq)
            self._hold(_HELD_UNDECRYPTABLE, incoming, f"{kind}: {error}", now)
        return Undecryptable(incoming.sender, incoming.sender_device, incoming.client_id, kind)

    # -- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                try:
                    connection = await self._connect()
                except transport.ConnectionLost as error:
                    delay = self._backoff.next_delay()
                    logger.info("%s: cannot connect (%s); retrying in %.2fs", self.name, error, delay)
                    await self._sleep(delay)
                    continue
                self._backoff.reset()
                try:
                    await self._serve(connection)
                except transport.ConnectionLost as error:
                    if error.code == _DISPLACED:
                        raise ClosedError("another connection of this device displaced this one") from error
                    logger.info("%s: connection lost (%s)", self.name, error)
                finally:
                    await self._disconnect()
                delay = self._backoff.next_delay()
                await self._sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            # A refusal at authentication, a corrupt store, a bug: reconnecting cannot fix it, and
            # retrying in a loop would hide it.  Stop, and tell the application.
            logger.exception("%s: the client stopped", self.name)
            self._fatal = error
            self._events.put_nowait(_CLOSED)
            self._outbox_empty.set()
            self._connected_event.set()

    async def _connect(self) -> transport.Connection:
        account = self._store.account()
        assert account is not None
        try:
            connection = await transport.connect(
                self.relay_url,
                account=self.name,
                device_id=self.device_id,
                identity_key=self._identity_key,
                registration_id=self.registration_id,
                register=not account.registered,
                rng=self._rng,
            )
        except transport.RelayError as error:
            if error.code != "unknown_device":
                raise
            # The relay forgot us (a new relay, or its database was reset): register again.  The
            # identity key is ours, so the relay binds the same account to the same key.
            logger.warning("%s: the relay does not know this device; registering again", self.name)
            self._store.mark_unregistered()
            return await self._connect()
        if not account.registered:
            self._store.mark_registered()
        return connection

    async def _serve(self, connection: transport.Connection) -> None:
        self.connections += 1
        self._drained_event.clear()
        # The relay keeps a message (and its duplicate detection) for its TTL; ids older than our
        # longer retention cannot come back.
        self._store.forget_processed_before(self._now_ms() - int(self.settings.processed_retention * 1000))
        self._pre_key_check.clear()
        connected = _Connected(connection)
        self._connected = connected
        await self._pre_keys.check(connection, top_up=False)
        self._connected_event.set()
        for loop in (self._maintain_pre_keys, self._pump, self._receive_loop, self._group_pump):
            connected.tasks.append(asyncio.create_task(loop(connection)))
        done, _pending = await asyncio.wait(connected.tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error

    async def _disconnect(self) -> None:
        connected, self._connected = self._connected, None
        self._connected_event.clear()
        if connected is None:
            return
        for task in connected.tasks:
            task.cancel()
        for task in connected.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await connected.connection.close()

    async def _receive_loop(self, connection: transport.Connection) -> None:
        """Process the relay's pushes in order, committing the messages that arrive together at once.

        A reader task moves the pushes into a local queue, so that whatever has arrived by the time
        one batch is done (at most ``_MAX_BATCH``) is processed as the next batch: one transaction,
        one synchronous disk write, then one acknowledgement for all of them.  A backlog drains at
        the speed of decryption rather than of the disk, and nothing is acknowledged before it is
        committed.
        """
        pushes: asyncio.Queue[transport.Push | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for push in connection.pushes():
                    pushes.put_nowait(push)
            finally:
                pushes.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                batch = [await pushes.get()]
                while len(batch) < _MAX_BATCH and not pushes.empty():
                    batch.append(pushes.get_nowait())
                messages = [p for p in batch if isinstance(p, transport.IncomingMessage)]
                # Linked devices: verify the lists of companions not seen before (client/fanout.py).
                await self._learn_senders({(m.sender, m.sender_device) for m in messages})
                self._process_batch(connection, messages)
                for push in batch:
                    if push is None:
                        # The pushes end when the connection does; how it ended (a close code
                        # saying we were displaced, or a network failure) decides what follows.
                        raise await connection.wait_closed()
                    if isinstance(push, transport.QueueEmpty):
                        self._drained_event.set()
                    elif isinstance(push, transport.PreKeysLow):
                        self._pre_key_check.set()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _process_batch(
        self, connection: transport.Connection, pushed: list[transport.IncomingMessage]
    ) -> None:
        """Process messages in one transaction; after the commit, acknowledge them and emit events."""
        if not pushed:
            return
        try:
            with self._store.transaction():
                events = [
                    (self._process_group if push.group_id is not None else self._process)(
                        _Incoming(
                            push.sender,
                            push.sender_device,
                            push.client_id,
                            push.type,
                            push.body,
                            push.timestamp,
                            push.group_id,
                        )
                    )
                    for push in pushed
                ]
        except BaseException:
            # The whole batch rolled back: no cached session may keep what it did in memory.
            self._protocol.forget()
            self._group_rolled_back()
            raise
        for push in pushed:
            if self._hooks.after_receive_commit is not None:
                self._hooks.after_receive_commit(push.sender, push.client_id)
            self._acknowledge(connection, push.server_id)
        for event in events:
            if event is not None:
                self._events.put_nowait(event)
        self._group_committed()

    def _acknowledge(self, connection: transport.Connection, server_id: int) -> None:
        """Acknowledge a committed message, batched with the others committed in this turn.

        The acknowledgements go out on the next turn of the event loop, at most 100 ids per
        request, without waiting for the answer: the relay redelivers whatever it did not get.
        """
        self._to_ack.append(server_id)
        if len(self._to_ack) == 1:
            asyncio.get_running_loop().call_soon(self._send_acks, connection)

    def _send_acks(self, connection: transport.Connection) -> None:
        server_ids, self._to_ack = self._to_ack, []

        async def ack(batch: list[int]) -> None:
            try:
                await connection.ack(batch)
            except transport.ConnectionLost:
                pass
            except transport.RelayError as error:
                logger.warning(
                    "%s: the relay refused an ack of %d messages: %s", self.name, len(batch), error
                )

        for start in range(0, len(server_ids), _MAX_ACK_IDS):
            task = asyncio.ensure_future(ack(server_ids[start : start + _MAX_ACK_IDS]))
            self._ack_tasks.add(task)
            task.add_done_callback(self._ack_tasks.discard)

    async def _pump(self, connection: transport.Connection) -> None:
        """Send the outbox in order, keeping up to ``max_in_flight`` messages awaiting the relay's ack.

        The transport writes each frame when ``send`` is called, so frames leave in outbox order
        and the relay commits them in that order.  A message the relay refused for the moment
        (its queue for the recipient is full, or we send too fast) is sent again once the delay
        it asked for has passed, ahead of newer ones.
        """
        loop = asyncio.get_running_loop()
        window = asyncio.Semaphore(self.settings.max_in_flight)
        retry: list[tuple[float, OutboxEntry]] = []
        last_seq = 0
        while True:
            self._outbox_changed.clear()
            now = loop.time()
            due = [entry for when, entry in retry if when <= now]
            retry[:] = [(when, entry) for when, entry in retry if when > now]
            entries = due + self._store.outbox(after=last_seq, limit=self.settings.max_in_flight)
            if not entries:
                await self._outbox_changed.wait()
                continue
            for entry in entries:
                await window.acquire()
                last_seq = max(last_seq, entry.seq)
                submitted = connection.send(
                    entry.recipient, entry.recipient_device, entry.message_id, entry.message_type, entry.body
                )
                submitted.add_done_callback(functools.partial(self._on_relay_ack, entry, window, retry))

    def _on_relay_ack(
        self,
        entry: OutboxEntry,
        window: asyncio.Semaphore,
        retry: list[tuple[float, OutboxEntry]],
        submitted: asyncio.Future[int],
    ) -> None:
        window.release()
        if submitted.cancelled():
            return
        error = submitted.exception()
        if isinstance(error, transport.RelayError) and error.code in _TRANSIENT_REFUSALS:
            # Refused for the moment: the message stays in the outbox and is sent again, under the
            # same id, after the delay the relay asked for (or a second), at most the backoff cap.
            delay = min(float(error.details.get("retry_after", 1.0)), self.settings.backoff_cap)
            logger.info("%s: the relay deferred message %s (%s)", self.name, entry.message_id, error.code)
            loop = asyncio.get_running_loop()
            retry.append((loop.time() + delay, entry))
            loop.call_later(delay, self._outbox_changed.set)
            return
        if isinstance(error, transport.RelayError):
            # Refused for good (unknown recipient, too large, id reused): sending it again cannot
            # help, so it leaves the outbox and the application is told.
            # The relay chose the code: keep a bounded piece of it (shown inert by front ends).
            code = error.code[:_MAX_FAILURE_LENGTH]
            logger.warning("%s: the relay refused message %s: %s", self.name, entry.message_id, code)
            if not self._closed:
                # The history says so too, with the relay's reason, across restarts.
                # A copy of a fanned-out message (client/fanout.py) is "<message id>.<n>": the
                # history row is the message's.
                self._store.mark_failed(entry.message_id.partition(".")[0], code)
            self._events.put_nowait(
                SendFailed(entry.recipient, entry.recipient_device, entry.message_id, code)
            )
        elif error is not None:
            # The connection was lost: the message stays in the outbox, and the next connection
            # sends it again under the same id.
            return
        self._acked.append(entry.message_id)
        if len(self._acked) == 1:
            # Remove acknowledged entries in batches, one transaction per turn of the event loop.
            asyncio.get_running_loop().call_soon(self._remove_acked)

    def _remove_acked(self) -> None:
        acked, self._acked = self._acked, []
        if self._closed:
            return
        self._store.remove_outbox(acked)
        if self._store.outbox_size() == 0:
            self._outbox_empty.set()

    # -- small helpers -------------------------------------------------------------------------

    async def _wait_ready(self) -> None:
        # The event is set once a connection is authenticated and its prekeys are in place (and
        # when the client stops, which _check_running reports).
        while True:
            self._check_running()
            if self._connected_event.is_set() and self._connected is not None:
                return
            await self._connected_event.wait()

    async def _connection(self) -> transport.Connection:
        await self._wait_ready()
        assert self._connected is not None
        return self._connected.connection

    def _check_running(self) -> None:
        if self._fatal is not None:
            raise ClosedError(f"the client stopped: {self._fatal!r}") from self._fatal
        if self._closed:
            raise ClosedError("the client is closed")
        if self._run_task is None:
            raise ClosedError("the client is not started; call start() or use 'async with'")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- extensions (business names: client/business.py) --------------------------------------

    async def relay_request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One request to the relay on the live connection (waiting for one); its answer's fields.

        For modules that speak ops of their own (``get_business_certificate``); raises
        :class:`client.transport.RelayError` when the relay refuses.
        """
        self._check_running()
        connection = await self._connection()
        return await connection.request(op, **fields)

    # -- attachments (client/attachments.py; docs/attachments.md) ------------------------------

    async def _blob_service(self) -> tuple[str, str]:
        """An upload token from the relay, and the blob service's URL it names (kept for downloads)."""
        connection = await self._connection()
        answer = await connection.request("blob_upload_token")
        self._blob_url = str(answer["url"])
        return self._blob_url, str(answer["token"])

    def _blob_client(self) -> BlobClient:
        if self._blobs is None:
            self._blobs = BlobClient(sleep=self._sleep)
        return self._blobs

    def _checked_body(self, body: bytes | str) -> bytes:
        """``body`` as bytes, refused before anything is encrypted or stored when it is not Unicode
        text (:class:`TextEncodingError`) or longer than :attr:`max_message_bytes`
        (:class:`MessageTooLargeError`)."""
        if isinstance(body, str):
            try:
                body = body.encode("utf-8")
            except UnicodeEncodeError as error:
                raise TextEncodingError(error.start) from None
        if len(body) > self.max_message_bytes:
            raise MessageTooLargeError(len(body), self.max_message_bytes)
        return body

    async def _upload(
        self, path: str | Path, content_type: str | None, progress: Progress | None
    ) -> AttachmentPointer:
        """Encrypt ``path`` while uploading it under a fresh upload token; its pointer."""
        self._check_running()
        url, token = await self._blob_service()
        return await upload_file(
            self._blob_client(),
            url,
            token,
            Path(path),
            self._rng,
            content_type=content_type,
            progress=progress,
        )

    async def send_file(
        self,
        name: str,
        path: str | Path,
        device_id: int = 1,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> SentFile:
        """Encrypt ``path`` while uploading it to the blob service, then send its pointer to ``name``.

        ``progress(done, total)`` follows the upload in blob bytes.  The pointer travels in an
        ordinary end-to-end encrypted message (content type attachment), so neither the relay nor
        the blob service learns the key.  Raises :class:`client.blobs.BlobServiceError` when the
        service refuses (over quota, too large) and the core's errors when the file changes.
        """
        pointer = await self._upload(path, content_type, progress)
        message_id = await self.forward_file(name, pointer, device_id)
        return SentFile(message_id, pointer)

    async def forward_file(self, name: str, pointer: AttachmentPointer, device_id: int = 1) -> str:
        """Send an existing pointer to ``name``: the blob is not uploaded again."""
        body = encode_pointer(pointer)
        return await self.send(name, body, device_id, content_type=envelope.CONTENT_ATTACHMENT)

    async def send_file_to_group(
        self,
        group_id: bytes,
        path: str | Path,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> SentFile:
        """:meth:`send_file` for a group: the file is encrypted and uploaded once, and its pointer
        goes to every member in one Sender Keys message (:meth:`send_group`)."""
        pointer = await self._upload(path, content_type, progress)
        message_id = await self.forward_file_to_group(group_id, pointer)
        return SentFile(message_id, pointer)

    async def forward_file_to_group(self, group_id: bytes, pointer: AttachmentPointer) -> str:
        """Send an existing pointer to a group: the blob is not uploaded again."""
        return await self.send_group(
            group_id, encode_pointer(pointer), content_type=envelope.CONTENT_ATTACHMENT
        )

    def attachment(self, message: Message | GroupMessage) -> AttachmentPointer:
        """The pointer a received (or stored) attachment message, one-to-one or in a group,
        carries; raises :class:`client.pointer.InvalidPointerError` for a malformed or hostile one."""
        if not message.is_attachment:
            raise InvalidPointerError("the message is not an attachment")
        return decode_pointer(message.body)

    async def download(
        self, pointer: AttachmentPointer, folder: str | Path, *, progress: Progress | None = None
    ) -> Path:
        """Fetch, verify and decrypt an attachment into ``folder``; returns the file it saved.

        Nothing appears in ``folder`` unless the blob's length, digest and MAC verified; the name
        is made safe and never replaces an existing file.  Raises
        :class:`e2e.attachment.InvalidAttachmentError` for a tampered blob (its ciphertext is
        deleted) and :class:`client.blobs.BlobServiceError` when it cannot be fetched.
        """
        self._check_running()
        url = self._blob_url or (await self._blob_service())[0]
        return await download_file(self._blob_client(), url, pointer, Path(folder), progress=progress)


def _address(sender: str, device_id: int) -> ProtocolAddress:
    """The sender's address as the relay named it; a name or device id no device can have is a
    :class:`DecodeError` (quarantined), not a crash."""
    try:
        return ProtocolAddress(sender, device_id)
    except ValueError as error:
        raise DecodeError(f"the relay named an impossible sender: {error}") from None


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A delivered ciphertext as the receive path needs it, from the relay or from the held table."""

    sender: str
    sender_device: int
    client_id: str
    type: int
    body: bytes
    relay_timestamp: int
    group_id: bytes | None = None

    @classmethod
    def from_held(cls, held: HeldMessage) -> _Incoming:
        return cls(
            held.sender,
            held.sender_device,
            held.message_id,
            held.message_type,
            held.body,
            held.relay_timestamp,
        )
