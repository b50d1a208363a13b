"""The PostgreSQL backend of :class:`server.store.Store`: one database, any number of relay nodes.

Theory
------
Every relay node opens a :class:`PostgresStore` on the same database.  The database is the only
shared state: devices, prekeys and queues live in it (schema in :mod:`server.migrations`), and a node
keeps nothing but its connections.  Every write is committed with ``synchronous_commit = on`` before
its awaitable completes, so nothing is acknowledged that a crash of the node or of the database could
take back.

The two writes every message makes, its send and its acknowledgement, are group-committed: each
kind has a worker that takes every waiting item (up to ``batch_limit``) into one call of a PL/pgSQL
function (``relay_enqueue_batch``, ``relay_ack_batch``), one round trip and one transaction, and
resolves the items' futures only after that transaction committed.  While one batch commits the next
one gathers, so under load many sends share one WAL flush, as the SQLite store's writer thread does.
The functions report a refused item (unknown recipient, full queue, reused client id, unknown
message id) as an outcome instead of raising, so a refused item changes nothing and does not undo
its neighbours.  Every other operation (registration, prekeys, claims, reads) is one short
transaction of its own on a pooled connection.

A one-time prekey is claimed by one statement, ``DELETE … WHERE key = (SELECT … ORDER BY key_id LIMIT 1
FOR UPDATE SKIP LOCKED) RETURNING …``, so two claims, on the same node or on two, can never receive the
same key, and neither waits for the other.

Order
-----
Operations are submitted when called.  Sends are committed in submission order (one batch in flight
at a time per node, items taken in order), and so are acknowledgements.  Other operations that
concern the same device run one after another in submission order, on any connection; operations on
unrelated devices run concurrently.  That is the order the relay relies on: one connection's
pipelined sends commit in the order it made them.

Across nodes, a send locks its recipient's ``queues`` row before it draws a server id, so each
recipient's ids grow in commit order and a delivery cursor never skips a message.  Within a batch the
items are sorted by recipient (a stable sort, so one sender's messages to one recipient keep their
order), and every function locks ``queues`` rows before any other row: batches on different nodes
take their locks in the same order and cannot deadlock.

Wake-ups across nodes
---------------------
After a commit, the committing node wakes its own listeners at once and sends the other nodes a
``NOTIFY`` on one of ``partitions`` channels, chosen by hashing the device.  A node ``LISTEN``s only to
the partitions of devices it has listeners for.  Notifications are sent in coalesced batches from a
connection of their own, after the commit rather than inside it: a ``NOTIFY`` inside a transaction
serialises every committing transaction of the database on one lock across its WAL flush (measured
here: about half the throughput at 32 concurrent senders).

A notification is only a wake-up; the tables stay the record.  Every ``poll_interval`` seconds (and
at once after the listening connection is re-established) a node reads ``queues.last_id`` and
``devices.epoch`` for every device it serves and wakes any device whose queue grew or whose epoch rose
beyond what it was told, so a lost notification (a node killed between its commit and its
``NOTIFY``, a dropped connection) delays a delivery by at most one poll interval.

One live connection per device
------------------------------
``begin_connection`` increments ``devices.epoch`` and announces the new epoch (DISPLACED) to every
node; the relay closes any connection of that device with a smaller epoch.  Chosen over advisory
locks: a session lock would pin one database connection per connected device (thousands per node),
while an epoch costs one row update per login and survives the death of the node that held the old
connection (its connections are gone with it).

What this module does not know
------------------------------
Signatures, the wire format and the clock (callers pass ``now``).  It does not start PostgreSQL; see
:mod:`server.testing.pg` for a throwaway server and ``docs/cluster.md`` for running a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import zlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

from server.migrations import MigrationError, migrate
from server.store import (
    GROUP_CHANGE_TYPE,
    ClaimedBundle,
    DeviceAddress,
    DeviceEvent,
    EnqueueResult,
    EventKind,
    GroupChange,
    GroupEnqueueResult,
    GroupExistsError,
    GroupMemberRecord,
    GroupRecord,
    IdentityMismatchError,
    KeyIdConflictError,
    Listener,
    MessageIdReusedError,
    NewGroupMessage,
    NewMessage,
    NotAMemberError,
    OneTimeKind,
    PreKeyCounts,
    PreKeyRecord,
    PreKeyUpload,
    QueueFullError,
    SignedKind,
    StaleGroupError,
    StoredMessage,
    StoreError,
    TooManyDevicesError,
    TooManyGroupsError,
    UnknownAccountError,
    UnknownDeviceError,
    UnknownGroupError,
    UnknownMessageError,
)

__all__ = ["PostgresStore"]

_log = logging.getLogger("server.store")

T = TypeVar("T")

# What a failed database call looks like from here: the server said no, the connection broke, or the
# network did.  Each is reported to the caller as a StoreError.
_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)

_CHANNEL_PREFIX = "e2e_relay_"

# A committed change to announce: the device, what happened, and the value that goes with it (the
# newest server id for MESSAGES, the winning epoch for DISPLACED, 0 for PREKEYS_LOW).
_Event = tuple[DeviceAddress, EventKind, int]
_Operation = Callable[[Any], Awaitable[tuple[T, list[_Event]]]]

_KIND_CODES = {EventKind.MESSAGES: "m", EventKind.DISPLACED: "d", EventKind.PREKEYS_LOW: "p"}
_CODE_KINDS = {code: kind for kind, code in _KIND_CODES.items()}


def _message_digest(message: NewMessage) -> bytes:
    """What a repeated client id is compared on: recipient, type and body, each length-delimited."""
    account = message.recipient.account.encode("utf-8")
    h = hashlib.sha256()
    h.update(len(account).to_bytes(4, "big") + account)
    h.update(message.recipient.device_id.to_bytes(8, "big", signed=True))
    h.update(message.type.to_bytes(8, "big", signed=True))
    h.update(message.body)
    return h.digest()


def _record(key_id: int, public_key: bytes, signature: bytes | None) -> PreKeyRecord:
    return PreKeyRecord(int(key_id), bytes(public_key), None if signature is None else bytes(signature))


def _connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection failed (so a statement's outcome is unknown), rather
    than the server refusing and rolling back a statement."""
    if isinstance(
        exc, asyncpg.exceptions.PostgresConnectionError | asyncpg.InterfaceError | OSError | TimeoutError
    ):
        return True
    # Class 57P: the server is shutting down or crashed and ends the session.
    return isinstance(exc, asyncpg.PostgresError) and str(getattr(exc, "sqlstate", "")).startswith("57P")


def _translate(exc: BaseException) -> BaseException:
    """Map a database failure to a StoreError; other exceptions pass through."""
    if isinstance(exc, _DATABASE_ERRORS):
        _log.error("database operation failed: %s: %s", type(exc).__name__, exc)
        return StoreError(f"database unavailable: {type(exc).__name__}")
    return exc


@dataclass
class _Marker:
    """What this node last told its listeners about one device: newest server id and epoch."""

    last_id: int = 0
    epoch: int = 0
    checked: bool = False


class _Subscription:
    __slots__ = ("_device", "_listener", "_wakeups")

    def __init__(self, wakeups: _Wakeups, device: DeviceAddress, listener: Listener) -> None:
        self._wakeups = wakeups
        self._device = device
        self._listener = listener

    def close(self) -> None:
        self._wakeups.remove(self._device, self._listener)


class _Wakeups:
    """This node's half of the cross-node wake-ups: listeners, LISTEN/NOTIFY and the periodic poll.

    One task owns one dedicated connection and does all of its work in turn: (re)connecting, keeping
    the LISTENed partitions equal to those of the subscribed devices, sending queued notifications,
    and polling.  Everything else runs on the event loop without awaiting.
    """

    def __init__(self, dsn: str, partitions: int, poll_interval: float) -> None:
        self._dsn = dsn
        self._partitions = partitions
        self._poll_interval = poll_interval
        self.node = os.urandom(6).hex()
        self._listeners: dict[DeviceAddress, set[Listener]] = {}
        self._markers: dict[DeviceAddress, _Marker] = {}
        self._wanted: dict[int, int] = {}
        self._listening: set[int] = set()
        self._outgoing: dict[tuple[EventKind, DeviceAddress], int] = {}
        self._work = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._closing = False

    # Called on the loop.

    def add(self, device: DeviceAddress, listener: Listener) -> _Subscription:
        listeners = self._listeners.setdefault(device, set())
        if not listeners:
            self._markers[device] = _Marker()
            partition = self.partition(device)
            self._wanted[partition] = self._wanted.get(partition, 0) + 1
            self._work.set()
        listeners.add(listener)
        return _Subscription(self, device, listener)

    def remove(self, device: DeviceAddress, listener: Listener) -> None:
        listeners = self._listeners.get(device)
        if listeners is None or listener not in listeners:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[device]
            del self._markers[device]
            partition = self.partition(device)
            self._wanted[partition] -= 1
            if not self._wanted[partition]:
                del self._wanted[partition]
                self._work.set()

    def partition(self, device: DeviceAddress) -> int:
        return zlib.crc32(f"{device.device_id}/{device.account}".encode()) % self._partitions

    def committed(self, events: list[_Event]) -> None:
        """Wake local listeners now and queue a notification for the other nodes."""
        for device, kind, value in events:
            self.dispatch(device, kind, value)
            key = (kind, device)
            self._outgoing[key] = max(value, self._outgoing.get(key, 0))
        if events:
            self._work.set()

    def dispatch(self, device: DeviceAddress, kind: EventKind, value: int) -> None:
        """Wake ``device``'s listeners, unless they were already told as much (the same message
        id or epoch can arrive twice: by notification and by the poll)."""
        marker = self._markers.get(device)
        if marker is None:
            return
        if kind is EventKind.MESSAGES:
            if value <= marker.last_id:
                return
            marker.last_id = value
        elif kind is EventKind.DISPLACED:
            if value <= marker.epoch:
                return
            marker.epoch = value
        event = DeviceEvent(kind, value if kind is EventKind.DISPLACED else 0)
        for listener in list(self._listeners.get(device, ())):
            try:
                listener(event)
            except Exception:
                _log.exception("wake-up listener failed")

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            code, node, value, device_id, account = payload.split(":", 4)
            kind = _CODE_KINDS[code]
            device = DeviceAddress(account, int(device_id))
            number = int(value)
        except (ValueError, KeyError):
            _log.warning("ignoring a malformed notification")
            return
        if node != self.node:
            self.dispatch(device, kind, number)

    # The task.

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pg-wakeups")

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued, close the connection and end the task (cancelled after ``timeout``)."""
        self._closing = True
        self._work.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout)
            except TimeoutError:
                _log.warning("wake-up task did not stop in %.0f s; cancelled", timeout)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closing:
            try:
                await self._serve()
                return
            except Exception as exc:
                if self._closing:
                    return
                if isinstance(exc, _DATABASE_ERRORS):
                    _log.warning("wake-up connection lost (%s); reconnecting", type(exc).__name__)
                else:
                    _log.exception("wake-up task failed; restarting it")
            finally:
                await self._disconnect()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._work.wait(), backoff)
            backoff = min(backoff * 2, 5.0)

    async def _serve(self) -> None:
        self._conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "e2e-relay wake-ups", "synchronous_commit": "off"}
        )
        self._listening = set()
        # Whatever was announced while we were not listening is found by the first poll.
        for marker in self._markers.values():
            marker.checked = False
        next_poll = time.monotonic()
        while True:
            await self._listen()
            await self._send_notifications()
            if self._closing:
                return
            unchecked = [device for device, marker in self._markers.items() if not marker.checked]
            if unchecked:
                await self._poll(unchecked)
            if time.monotonic() >= next_poll:
                await self._poll(list(self._markers))
                next_poll = time.monotonic() + self._poll_interval
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._work.wait(), max(0.0, next_poll - time.monotonic()))
            self._work.clear()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_DATABASE_ERRORS):
                await conn.close(timeout=2)

    async def _listen(self) -> None:
        """Make the LISTENed channels those of the partitions that have subscribed devices."""
        for partition in sorted(set(self._wanted) - self._listening):
            await self._conn.add_listener(f"{_CHANNEL_PREFIX}{partition}", self._on_notification)
            self._listening.add(partition)
        for partition in sorted(self._listening - set(self._wanted)):
            await self._conn.remove_listener(f"{_CHANNEL_PREFIX}{partition}", self._on_notification)
            self._listening.discard(partition)

    async def _send_notifications(self) -> None:
        if not self._outgoing:
            return
        batch, self._outgoing = self._outgoing, {}
        channels = []
        payloads = []
        for (kind, device), value in batch.items():
            channels.append(f"{_CHANNEL_PREFIX}{self.partition(device)}")
            payloads.append(f"{_KIND_CODES[kind]}:{self.node}:{value}:{device.device_id}:{device.account}")
        try:
            await self._conn.execute(
                "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)", channels, payloads
            )
        except BaseException:
            # Keep them for the next connection; the receivers' polls cover the gap meanwhile.
            for key, value in batch.items():
                self._outgoing[key] = max(value, self._outgoing.get(key, 0))
            raise

    async def _poll(self, devices: list[DeviceAddress]) -> None:
        """Compare the record with what listeners were told; wake whoever missed a notification.

        A device polled for the first time (``checked`` false) is woken if its queue holds anything,
        since a message may have been committed before its partition was LISTENed.
        """
        if not devices:
            return
        rows = await self._conn.fetch(
            "SELECT d.account, d.device_id, d.epoch, q.last_id, q.count "
            "FROM unnest($1::text[], $2::bigint[]) AS s(account, device_id) "
            "JOIN devices d ON d.account = s.account AND d.device_id = s.device_id "
            "JOIN queues q ON q.account = s.account AND q.device_id = s.device_id",
            [d.account for d in devices],
            [d.device_id for d in devices],
        )
        for row in rows:
            device = DeviceAddress(row["account"], int(row["device_id"]))
            marker = self._markers.get(device)
            if marker is None:
                continue
            first = not marker.checked
            marker.checked = True
            if int(row["epoch"]) > marker.epoch:
                self.dispatch(device, EventKind.DISPLACED, int(row["epoch"]))
            if int(row["last_id"]) > marker.last_id and (not first or int(row["count"]) > 0):
                self.dispatch(device, EventKind.MESSAGES, int(row["last_id"]))
            elif first:
                marker.last_id = max(marker.last_id, int(row["last_id"]))
        for device in devices:
            marker = self._markers.get(device)
            if marker is not None:
                marker.checked = True


@dataclass
class _Item:
    """One submitted write waiting for its batch: its arguments, sort key and future."""

    args: Any
    order: tuple[str, int]
    future: asyncio.Future[Any]


# Runs one batch on a connection: the events to announce and each item's result or refusal, in order.
_RunBatch = Callable[[Any, list[_Item]], Awaitable[tuple[list[_Event], list[Any]]]]


class _Batches:
    """Group commit for one kind of write: every waiting item goes into one statement, one transaction.

    One batch is in flight at a time and items are taken in submission order, so two writes of one
    sender never commit out of order.  Within a batch the items are stably sorted by recipient, so
    every batch on every node locks ``queues`` rows in the same order and no two wait in a cycle.
    ``run`` executes a batch and returns each item's result or, for a refused item, its store error.
    If the whole statement fails with an error from the server (a deadlock abort, say), its
    transaction rolled back, so each item is retried alone and only the ones that fail again fail.
    If the connection is lost, the outcome is unknown: sends, which are idempotent by client id, are
    retried alone all the same; acknowledgements fail (the client acknowledges again, and a repeated
    acknowledgement of a deleted message is refused without harm).
    """

    def __init__(
        self, name: str, store: PostgresStore, run: _RunBatch, limit: int, *, idempotent: bool
    ) -> None:
        self._name = name
        self._idempotent = idempotent
        self._store = store
        self._run = run
        self._limit = limit
        self._waiting: list[_Item] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work(), name=f"pg-{self._name}")

    def submit(self, args: Any, order: tuple[str, int]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Item(args, order, future))
        self._wake.set()
        return future

    async def stop(self) -> None:
        """Commit everything submitted so far, then end the worker."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                batch = self._waiting[: self._limit]
                del self._waiting[: self._limit]
                batch.sort(key=lambda item: item.order)
                await self._commit(batch)
            if self._closing:
                return

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            await self._attempt(batch)
            return
        except Exception as exc:
            failure = exc
            await self._store._after_failure(exc)
        # An error the server reported means the transaction rolled back, so trying again is safe.
        # A lost connection leaves the outcome unknown: only an idempotent write may be tried again
        # (a resent message is recognised by its client id and answered with its first server id).
        rolled_back = not _connection_lost(failure)
        if not (self._idempotent or rolled_back) or (len(batch) == 1 and rolled_back):
            for item in batch:
                self._fail(item, failure)
            return
        _log.warning("a batch of %d %s failed (%s); retrying one by one", len(batch), self._name, failure)
        for item in batch:
            try:
                await self._attempt([item])
            except Exception as again:
                await self._store._after_failure(again)
                self._fail(item, again)

    async def _attempt(self, batch: list[_Item]) -> None:
        async with self._store._pool.acquire() as conn:
            events, outcomes = await self._run(conn, batch)
        # Events first: a listener woken here sees the state every resolved future reports.
        self._store._wakeups.committed(events)
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    @staticmethod
    def _fail(item: _Item, exc: BaseException) -> None:
        error = _translate(exc)
        if not isinstance(error, StoreError):
            _log.error("store operation failed: %s", type(exc).__name__, exc_info=exc)
        if not item.future.done():
            item.future.set_exception(error)


class PostgresStore:
    """A :class:`server.store.Store` in a PostgreSQL database shared by any number of relay nodes.

    ``dsn`` is a ``postgresql://`` URL.  ``pool_size`` bounds this node's concurrent transactions,
    ``partitions`` is the number of notification channels (the same on every node),
    ``poll_interval`` the longest a lost notification can delay a wake-up, and ``batch_limit`` the
    most sends (or acknowledgements) committed in one transaction.
    """

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        partitions: int = 64,
        poll_interval: float = 2.0,
        batch_limit: int = 256,
    ) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL store needs a postgresql:// URL")
        self._dsn = dsn
        self._pool_size = pool_size
        self._pool: Any = None
        self._wakeups = _Wakeups(dsn, partitions, poll_interval)
        self._tails: dict[Hashable, asyncio.Future[Any]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._sends = _Batches("sends", self, self._enqueue_batch, batch_limit, idempotent=True)
        self._acks = _Batches("acknowledgements", self, self._ack_batch, batch_limit, idempotent=False)

    def __repr__(self) -> str:
        # The URL may carry a password; show only where it points.
        where = self._dsn.rsplit("@", 1)[-1]
        return f"PostgresStore({where!r}, node={self._wakeups.node})"

    # Life cycle.

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                server_settings={"application_name": "e2e-relay", "synchronous_commit": "on"},
            )
        except _DATABASE_ERRORS as exc:
            raise StoreError(f"cannot open the database: {type(exc).__name__}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn)
        except (MigrationError, *_DATABASE_ERRORS) as exc:
            await pool.close()
            raise StoreError(f"cannot open the database: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        if applied:
            _log.info("database migrated to schema version %d", applied[-1])
        self._pool = pool
        self._wakeups.start()
        self._sends.start()
        self._acks.start()

    async def close(self) -> None:
        if self._pool is None:
            return
        while self._running:
            await asyncio.wait(list(self._running))
        await self._sends.stop()
        await self._acks.stop()
        await self._wakeups.stop()
        pool, self._pool = self._pool, None
        await pool.close()

    # The ordered execution of operations.

    async def _after_failure(self, exc: BaseException) -> None:
        """After a lost connection, replace every pooled one: a server that dropped one (a restart,
        a failover) has usually dropped them all, and asyncpg would otherwise hand them out again."""
        if _connection_lost(exc):
            with contextlib.suppress(*_DATABASE_ERRORS):
                await self._pool.expire_connections()

    def _check_open(self) -> None:
        if self._pool is None:
            raise StoreError("the store is not open")

    def _submit(self, keys: Sequence[Hashable], operation: _Operation[T]) -> asyncio.Future[T]:
        """Start ``operation`` after every earlier operation on any of ``keys``; return its future."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        before = [self._tails[key] for key in keys if key in self._tails]
        for key in keys:
            self._tails[key] = future
        task = loop.create_task(self._execute(keys, before, operation, future))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return future

    async def _execute(
        self,
        keys: Sequence[Hashable],
        before: list[asyncio.Future[Any]],
        operation: _Operation[T],
        future: asyncio.Future[T],
    ) -> None:
        try:
            if before:
                await asyncio.wait(before)
            try:
                async with self._pool.acquire() as conn:
                    result, events = await operation(conn)
            except Exception as exc:
                await self._after_failure(exc)
                error = _translate(exc)
                if not isinstance(error, StoreError):
                    _log.error("store operation failed: %s", type(exc).__name__, exc_info=exc)
                if not future.done():
                    future.set_exception(error)
                return
            # Events first: a listener woken here sees the state every resolved future reports.
            self._wakeups.committed(events)
            if not future.done():
                future.set_result(result)
        finally:
            for key in keys:
                if self._tails.get(key) is future:
                    del self._tails[key]

    # Wake-ups.

    def subscribe(self, device: DeviceAddress, listener: Listener) -> _Subscription:
        return self._wakeups.add(device, listener)

    # Devices.

    def register_device(
        self,
        device: DeviceAddress,
        identity_key: bytes,
        registration_id: int,
        now: float,
        *,
        max_devices: int | None = None,
    ) -> asyncio.Future[bool]:
        async def op(conn: Any) -> tuple[bool, list[_Event]]:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO accounts (account, identity_key, created_at) VALUES ($1, $2, $3) "
                    "ON CONFLICT (account) DO NOTHING",
                    device.account,
                    identity_key,
                    now,
                )
                # The account row's lock serialises registrations of one account across nodes, so two
                # new devices cannot both pass the cap below.
                bound = await conn.fetchval(
                    "SELECT identity_key FROM accounts WHERE account = $1 FOR UPDATE", device.account
                )
                if bytes(bound) != identity_key:
                    raise IdentityMismatchError("the account is registered with a different identity key")
                if max_devices is not None:
                    exists = await conn.fetchval(
                        "SELECT 1 FROM devices WHERE account = $1 AND device_id = $2",
                        device.account,
                        device.device_id,
                    )
                    if exists is None:
                        count = await conn.fetchval(
                            "SELECT count(*) FROM devices WHERE account = $1", device.account
                        )
                        if count >= max_devices:
                            raise TooManyDevicesError(f"the account already has {max_devices} devices")
                # xmax is 0 for a row this statement inserted and non-zero for one it updated.
                created = await conn.fetchval(
                    "INSERT INTO devices (account, device_id, registration_id, created_at, last_seen) "
                    "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (account, device_id) "
                    "DO UPDATE SET registration_id = excluded.registration_id RETURNING xmax = 0",
                    device.account,
                    device.device_id,
                    registration_id,
                    now,
                )
                await conn.execute(
                    "INSERT INTO queues (account, device_id) VALUES ($1, $2) "
                    "ON CONFLICT (account, device_id) DO NOTHING",
                    device.account,
                    device.device_id,
                )
            return bool(created), []

        return self._submit((device,), op)

    def identity_key(self, device: DeviceAddress) -> asyncio.Future[bytes]:
        async def op(conn: Any) -> tuple[bytes, list[_Event]]:
            key = await conn.fetchval(
                "SELECT a.identity_key FROM devices d JOIN accounts a ON a.account = d.account "
                "WHERE d.account = $1 AND d.device_id = $2",
                device.account,
                device.device_id,
            )
            if key is None:
                raise UnknownDeviceError(f"no device {device}")
            return bytes(key), []

        return self._submit((device,), op)

    def begin_connection(self, device: DeviceAddress, now: float) -> asyncio.Future[int]:
        async def op(conn: Any) -> tuple[int, list[_Event]]:
            epoch = await conn.fetchval(
                "UPDATE devices SET epoch = epoch + 1, last_seen = $3 "
                "WHERE account = $1 AND device_id = $2 RETURNING epoch",
                device.account,
                device.device_id,
                now,
            )
            if epoch is None:
                raise UnknownDeviceError(f"no device {device}")
            return int(epoch), [(device, EventKind.DISPLACED, int(epoch))]

        return self._submit((device,), op)

    # Prekeys.

    @staticmethod
    async def _counts(conn: Any, device: DeviceAddress) -> PreKeyCounts:
        """One round trip: the device's existence, one-time prekey counts and current signed ids."""
        rows = await conn.fetch(
            "SELECT 'device' AS what, '' AS kind, 0::bigint AS n FROM devices "
            " WHERE account = $1 AND device_id = $2 "
            "UNION ALL "
            "SELECT 'one_time', kind, count(*) FROM one_time_prekeys "
            " WHERE account = $1 AND device_id = $2 GROUP BY kind "
            "UNION ALL "
            "SELECT 'signed', kind, key_id FROM signed_prekeys "
            " WHERE account = $1 AND device_id = $2 AND retired_at IS NULL",
            device.account,
            device.device_id,
        )
        if not any(row["what"] == "device" for row in rows):
            raise UnknownDeviceError(f"no device {device}")
        one_time = dict.fromkeys(OneTimeKind, 0)
        signed_ids: dict[SignedKind, int] = {}
        for row in rows:
            if row["what"] == "one_time":
                one_time[OneTimeKind(row["kind"])] = int(row["n"])
            elif row["what"] == "signed":
                signed_ids[SignedKind(row["kind"])] = int(row["n"])
        return PreKeyCounts(one_time=one_time, signed_ids=signed_ids)

    def put_prekeys(
        self, device: DeviceAddress, upload: PreKeyUpload, now: float, grace: float
    ) -> asyncio.Future[PreKeyCounts]:
        owner = (device.account, device.device_id)

        async def op(conn: Any) -> tuple[PreKeyCounts, list[_Event]]:
            async with conn.transaction():
                # The device row lock makes concurrent uploads of one device (two connections on two
                # nodes for a moment) take turns, so a rotation never leaves two current keys.
                found = await conn.fetchval(
                    "SELECT true FROM devices WHERE account = $1 AND device_id = $2 FOR UPDATE", *owner
                )
                if found is None:
                    raise UnknownDeviceError(f"no device {device}")
                for kind, record in upload.signed.items():
                    existing = await conn.fetchrow(
                        "SELECT public_key, retired_at FROM signed_prekeys "
                        "WHERE account = $1 AND device_id = $2 AND kind = $3 AND key_id = $4",
                        *owner,
                        kind.value,
                        record.key_id,
                    )
                    if existing is not None:
                        if bytes(existing["public_key"]) != record.public_key:
                            raise KeyIdConflictError(
                                f"{kind.value} signed prekey id {record.key_id} is taken"
                            )
                        if existing["retired_at"] is None:
                            continue
                        raise KeyIdConflictError(f"{kind.value} signed prekey id {record.key_id} was retired")
                    await conn.execute(
                        "UPDATE signed_prekeys SET retired_at = $4 "
                        "WHERE account = $1 AND device_id = $2 AND kind = $3 AND retired_at IS NULL",
                        *owner,
                        kind.value,
                        now,
                    )
                    await conn.execute(
                        "INSERT INTO signed_prekeys "
                        "(account, device_id, kind, key_id, public_key, signature, uploaded_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        *owner,
                        kind.value,
                        record.key_id,
                        record.public_key,
                        record.signature,
                        now,
                    )
                await conn.execute(
                    "DELETE FROM signed_prekeys WHERE account = $1 AND device_id = $2 "
                    "AND retired_at IS NOT NULL AND retired_at <= $3",
                    *owner,
                    now - grace,
                )
                for one_time_kind, records in upload.one_time.items():
                    if not records:
                        continue
                    try:
                        await conn.execute(
                            "INSERT INTO one_time_prekeys "
                            "(account, device_id, kind, key_id, public_key, signature) "
                            "SELECT $1, $2, $3, k.key_id, k.public_key, k.signature "
                            "FROM unnest($4::bigint[], $5::bytea[], $6::bytea[]) "
                            "AS k(key_id, public_key, signature)",
                            *owner,
                            one_time_kind.value,
                            [r.key_id for r in records],
                            [r.public_key for r in records],
                            [r.signature for r in records],
                        )
                    except asyncpg.UniqueViolationError:
                        raise KeyIdConflictError(
                            f"a {one_time_kind.value} one-time prekey id is repeated or already stored"
                        ) from None
                counts = await self._counts(conn, device)
            return counts, []

        return self._submit((device,), op)

    def prekey_counts(self, device: DeviceAddress) -> asyncio.Future[PreKeyCounts]:
        async def op(conn: Any) -> tuple[PreKeyCounts, list[_Event]]:
            return await self._counts(conn, device), []

        return self._submit((device,), op)

    def signed_prekey(
        self, device: DeviceAddress, kind: SignedKind, key_id: int, now: float, grace: float
    ) -> asyncio.Future[PreKeyRecord | None]:
        async def op(conn: Any) -> tuple[PreKeyRecord | None, list[_Event]]:
            row = await conn.fetchrow(
                "SELECT s.public_key, s.signature, s.retired_at FROM devices d "
                "LEFT JOIN signed_prekeys s ON s.account = d.account AND s.device_id = d.device_id "
                "  AND s.kind = $3 AND s.key_id = $4 "
                "WHERE d.account = $1 AND d.device_id = $2",
                device.account,
                device.device_id,
                kind.value,
                key_id,
            )
            if row is None:
                raise UnknownDeviceError(f"no device {device}")
            if row["public_key"] is None or (
                row["retired_at"] is not None and row["retired_at"] <= now - grace
            ):
                return None, []
            return _record(key_id, row["public_key"], row["signature"]), []

        return self._submit((device,), op)

    def claim_bundles(
        self, account: str, device_id: int | None, low_water: int
    ) -> asyncio.Future[list[ClaimedBundle]]:
        async def op(conn: Any) -> tuple[list[ClaimedBundle], list[_Event]]:
            events: list[_Event] = []
            bundles: list[ClaimedBundle] = []
            async with conn.transaction():
                identity_key = await conn.fetchval(
                    "SELECT identity_key FROM accounts WHERE account = $1", account
                )
                if identity_key is None:
                    raise UnknownAccountError(f"no account {account!r}")
                registration_ids = {
                    int(row["device_id"]): int(row["registration_id"])
                    for row in await conn.fetch(
                        "SELECT device_id, registration_id FROM devices "
                        "WHERE account = $1 AND ($2::bigint IS NULL OR device_id = $2) ORDER BY device_id",
                        account,
                        device_id,
                    )
                }
                ids = list(registration_ids)
                if device_id is not None and not ids:
                    raise UnknownDeviceError(f"no device {DeviceAddress(account, device_id)}")
                signed: dict[int, dict[SignedKind, PreKeyRecord]] = {}
                for row in await conn.fetch(
                    "SELECT device_id, kind, key_id, public_key, signature FROM signed_prekeys "
                    "WHERE account = $1 AND device_id = ANY($2::bigint[]) AND retired_at IS NULL",
                    account,
                    ids,
                ):
                    signed.setdefault(int(row["device_id"]), {})[SignedKind(row["kind"])] = _record(
                        row["key_id"], row["public_key"], row["signature"]
                    )
                served = [one_id for one_id in ids if SignedKind.EC in signed.get(one_id, {})]
                claimed: dict[int, dict[OneTimeKind, PreKeyRecord]] = {one_id: {} for one_id in served}
                for one_id in served:
                    for kind in OneTimeKind:
                        # The claim: the row is locked, skipped by every concurrent claim, and
                        # deleted by the statement that returns it.
                        row = await conn.fetchrow(
                            "DELETE FROM one_time_prekeys "
                            "WHERE (account, device_id, kind, key_id) = ("
                            "  SELECT account, device_id, kind, key_id FROM one_time_prekeys"
                            "  WHERE account = $1 AND device_id = $2 AND kind = $3"
                            "  ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED"
                            ") RETURNING key_id, public_key, signature",
                            account,
                            one_id,
                            kind.value,
                        )
                        if row is not None:
                            claimed[one_id][kind] = _record(
                                row["key_id"], row["public_key"], row["signature"]
                            )
                remaining: dict[int, dict[OneTimeKind, int]] = {
                    one_id: dict.fromkeys(OneTimeKind, 0) for one_id in served
                }
                for row in await conn.fetch(
                    "SELECT device_id, kind, count(*) AS n FROM one_time_prekeys "
                    "WHERE account = $1 AND device_id = ANY($2::bigint[]) GROUP BY device_id, kind",
                    account,
                    served,
                ):
                    remaining[int(row["device_id"])][OneTimeKind(row["kind"])] = int(row["n"])
            for one_id in served:
                device = DeviceAddress(account, one_id)
                if any(remaining[one_id][kind] < low_water for kind in claimed[one_id]):
                    events.append((device, EventKind.PREKEYS_LOW, 0))
                bundles.append(
                    ClaimedBundle(
                        device,
                        registration_ids[one_id],
                        bytes(identity_key),
                        signed[one_id],
                        claimed[one_id],
                        remaining[one_id],
                    )
                )
            return bundles, events

        keys: tuple[Hashable, ...] = () if device_id is None else (DeviceAddress(account, device_id),)
        return self._submit(keys, op)

    # Messages.

    def enqueue(
        self, message: NewMessage, now: float, ttl: float, max_messages: int, max_bytes: int
    ) -> asyncio.Future[EnqueueResult]:
        self._check_open()
        args = (message, _message_digest(message), now, ttl, max_messages, max_bytes)
        return self._sends.submit(args, (message.recipient.account, message.recipient.device_id))

    @staticmethod
    async def _enqueue_batch(conn: Any, batch: list[_Item]) -> tuple[list[_Event], list[Any]]:
        messages: list[NewMessage] = [item.args[0] for item in batch]
        rows = await conn.fetch(
            "SELECT item, outcome, server_id FROM relay_enqueue_batch("
            "$1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::integer[], $7::bytea[], "
            "$8::bytea[], $9::float8[], $10::float8[], $11::bigint[], $12::bigint[])",
            [m.sender.account for m in messages],
            [m.sender.device_id for m in messages],
            [m.recipient.account for m in messages],
            [m.recipient.device_id for m in messages],
            [m.client_id for m in messages],
            [m.type for m in messages],
            [m.body for m in messages],
            *([item.args[column] for item in batch] for column in range(1, 6)),
        )
        by_item = {int(row["item"]): row for row in rows}
        events: list[_Event] = []
        outcomes: list[Any] = []
        for index, message in enumerate(messages, start=1):
            row = by_item[index]
            outcome = row["outcome"]
            if outcome in ("ok", "duplicate"):
                result = EnqueueResult(int(row["server_id"]), duplicate=outcome == "duplicate")
                if not result.duplicate:
                    events.append((message.recipient, EventKind.MESSAGES, result.server_id))
                outcomes.append(result)
            elif outcome == "unknown_device":
                outcomes.append(UnknownDeviceError(f"no device {message.recipient}"))
            elif outcome == "queue_full":
                outcomes.append(QueueFullError(f"the queue of {message.recipient} is full"))
            elif outcome == "id_reused":
                outcomes.append(
                    MessageIdReusedError("this client message id was already used for a different message")
                )
            else:
                outcomes.append(StoreError(f"unexpected outcome {outcome!r}"))
        return events, outcomes

    def fetch(
        self, recipient: DeviceAddress, after_server_id: int, limit: int, now: float
    ) -> asyncio.Future[list[StoredMessage]]:
        async def op(conn: Any) -> tuple[list[StoredMessage], list[_Event]]:
            rows = await conn.fetch(
                "SELECT server_id, sender_account, sender_device, client_id, type, body, created_at, "
                "group_id FROM messages WHERE recipient_account = $1 AND recipient_device = $2 "
                "AND server_id > $3 AND expires_at > $4 ORDER BY server_id LIMIT $5",
                recipient.account,
                recipient.device_id,
                after_server_id,
                now,
                limit,
            )
            return [
                StoredMessage(
                    server_id=int(r["server_id"]),
                    sender=DeviceAddress(r["sender_account"], int(r["sender_device"])),
                    recipient=recipient,
                    client_id=r["client_id"],
                    type=int(r["type"]),
                    body=bytes(r["body"]),
                    created_at=float(r["created_at"]),
                    group_id=None if r["group_id"] is None else bytes(r["group_id"]),
                )
                for r in rows
            ], []

        return self._submit((recipient,), op)

    def ack(self, recipient: DeviceAddress, server_ids: Sequence[int], now: float) -> asyncio.Future[int]:
        self._check_open()
        return self._acks.submit((recipient, list(server_ids), now), (recipient.account, recipient.device_id))

    @staticmethod
    async def _ack_batch(conn: Any, batch: list[_Item]) -> tuple[list[_Event], list[Any]]:
        ids: list[int] = []
        starts: list[int] = []
        lengths: list[int] = []
        for item in batch:
            starts.append(len(ids) + 1)
            lengths.append(len(item.args[1]))
            ids.extend(item.args[1])
        rows = await conn.fetch(
            "SELECT item, outcome, removed, missing FROM relay_ack_batch("
            "$1::text[], $2::bigint[], $3::bigint[], $4::integer[], $5::integer[], $6::float8[])",
            [item.args[0].account for item in batch],
            [item.args[0].device_id for item in batch],
            ids,
            starts,
            lengths,
            [item.args[2] for item in batch],
        )
        by_item = {int(row["item"]): row for row in rows}
        outcomes: list[Any] = []
        for index in range(1, len(batch) + 1):
            row = by_item[index]
            if row["outcome"] == "ok":
                outcomes.append(int(row["removed"]))
            else:
                missing = [int(i) for i in row["missing"] or ()]
                outcomes.append(UnknownMessageError("no such message in this device's queue", missing))
        return [], outcomes

    def expire(self, now: float) -> asyncio.Future[int]:
        async def op(conn: Any) -> tuple[int, list[_Event]]:
            async with conn.transaction():
                # One node expires at a time; the others find the lock taken and leave it to that one.
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _EXPIRE_LOCK_KEY):
                    return 0, []
                # Lock the affected queues rows first and in sorted order, as the batches do.
                await conn.execute(
                    "SELECT 1 FROM queues q WHERE (q.account, q.device_id) IN ("
                    "  SELECT recipient_account, recipient_device FROM messages WHERE expires_at <= $1"
                    ") ORDER BY q.account, q.device_id FOR UPDATE",
                    now,
                )
                removed = await conn.fetchval(
                    "WITH gone AS ("
                    "  DELETE FROM messages WHERE expires_at <= $1"
                    "  RETURNING recipient_account, recipient_device, octet_length(body) AS size"
                    "), per_queue AS ("
                    "  SELECT recipient_account, recipient_device, count(*) AS n, sum(size) AS bytes"
                    "  FROM gone GROUP BY recipient_account, recipient_device"
                    "), shrunk AS ("
                    "  UPDATE queues q SET count = q.count - p.n, bytes = q.bytes - p.bytes FROM per_queue p"
                    "  WHERE q.account = p.recipient_account AND q.device_id = p.recipient_device"
                    ") SELECT coalesce(sum(n), 0) FROM per_queue",
                    now,
                )
                await conn.execute("DELETE FROM sent_ids WHERE expires_at <= $1", now)
            return int(removed), []

        return self._submit((), op)

    # Groups (schema version 2).  Each operation is one transaction of its own.  Lock order: the
    # groups row first, then queues rows sorted by (account, device id), as every batch does, so a
    # group operation and the batches of any node cannot wait for each other in a cycle.

    @staticmethod
    async def _group(conn: Any, group_id: bytes) -> GroupRecord | None:
        row = await conn.fetchrow(
            "SELECT g.epoch, g.digest, c.change FROM groups g "
            "JOIN group_changes c ON c.group_id = g.group_id AND c.epoch = g.epoch WHERE g.group_id = $1",
            group_id,
        )
        if row is None:
            return None
        members = tuple(
            GroupMemberRecord(r["account"], bytes(r["identity_key"]), bool(r["admin"]))
            for r in await conn.fetch(
                "SELECT account, identity_key, admin FROM group_members WHERE group_id = $1 ORDER BY account",
                group_id,
            )
        )
        return GroupRecord(group_id, int(row["epoch"]), bytes(row["digest"]), bytes(row["change"]), members)

    def group(self, group_id: bytes) -> asyncio.Future[GroupRecord | None]:
        async def op(conn: Any) -> tuple[GroupRecord | None, list[_Event]]:
            return await self._group(conn, group_id), []

        return self._submit((("group", group_id),), op)

    @staticmethod
    async def _queue_for(
        conn: Any,
        devices: list[DeviceAddress],
        sender: DeviceAddress,
        client_id: str,
        message_type: int,
        body: bytes,
        group_id: bytes,
        now: float,
        ttl: float,
    ) -> tuple[int, list[_Event]]:
        """Insert one copy of ``body`` per device (queues rows already locked); the first server id."""
        first = 0
        events: list[_Event] = []
        for device in devices:
            server_id = await conn.fetchval(
                "INSERT INTO messages (recipient_account, recipient_device, sender_account, sender_device, "
                "client_id, type, body, created_at, expires_at, group_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING server_id",
                device.account,
                device.device_id,
                sender.account,
                sender.device_id,
                client_id,
                message_type,
                body,
                now,
                now + ttl,
                group_id,
            )
            await conn.execute(
                "UPDATE queues SET count = count + 1, bytes = bytes + $3, last_id = $4 "
                "WHERE account = $1 AND device_id = $2",
                device.account,
                device.device_id,
                len(body),
                server_id,
            )
            first = first or int(server_id)
            events.append((device, EventKind.MESSAGES, int(server_id)))
        return first, events

    def apply_group_change(
        self, change: GroupChange, now: float, ttl: float, max_groups_per_account: int
    ) -> asyncio.Future[int]:
        async def op(conn: Any) -> tuple[int, list[_Event]]:
            async with conn.transaction():
                current = await conn.fetchrow(
                    "SELECT epoch, digest FROM groups WHERE group_id = $1 FOR UPDATE", change.group_id
                )
                if change.epoch == 0:
                    inserted = await conn.fetchval(
                        "INSERT INTO groups (group_id, epoch, digest, created_at) VALUES ($1, 0, $2, $3) "
                        "ON CONFLICT (group_id) DO NOTHING RETURNING 1",
                        change.group_id,
                        change.digest,
                        now,
                    )
                    if inserted is None:
                        raise GroupExistsError("a group with this id exists")
                elif current is None:
                    raise UnknownGroupError("no such group")
                elif (
                    int(current["epoch"]) != change.epoch - 1
                    or bytes(current["digest"]) != change.previous_digest
                ):
                    raise StaleGroupError(
                        f"the group is at epoch {int(current['epoch'])}; fetch its newest change"
                    )
                old = {
                    str(r["account"])
                    for r in await conn.fetch(
                        "SELECT account FROM group_members WHERE group_id = $1", change.group_id
                    )
                }
                for member in change.members:
                    key = await conn.fetchval(
                        "SELECT identity_key FROM accounts WHERE account = $1", member.account
                    )
                    if key is None:
                        raise UnknownAccountError(f"no account {member.account!r}")
                    if bytes(key) != member.identity_key:
                        raise IdentityMismatchError(
                            f"{member.account!r} is registered with another identity key"
                        )
                    if member.account not in old:
                        count = await conn.fetchval(
                            "SELECT count(*) FROM group_members WHERE account = $1", member.account
                        )
                        if count >= max_groups_per_account:
                            raise TooManyGroupsError(
                                f"{member.account!r} is in {count} groups, the most allowed"
                            )
                await conn.execute(
                    "UPDATE groups SET epoch = $2, digest = $3 WHERE group_id = $1",
                    change.group_id,
                    change.epoch,
                    change.digest,
                )
                await conn.execute("DELETE FROM group_members WHERE group_id = $1", change.group_id)
                await conn.executemany(
                    "INSERT INTO group_members (group_id, account, identity_key, admin) "
                    "VALUES ($1, $2, $3, $4)",
                    [(change.group_id, m.account, m.identity_key, m.admin) for m in change.members],
                )
                await conn.execute(
                    "INSERT INTO group_changes (group_id, epoch, change, created_at) VALUES ($1, $2, $3, $4)",
                    change.group_id,
                    change.epoch,
                    change.change,
                    now,
                )
                accounts = sorted(old | {m.account for m in change.members})
                rows = await conn.fetch(
                    "SELECT account, device_id FROM queues WHERE account = ANY($1::text[]) "
                    "ORDER BY account, device_id FOR UPDATE",
                    accounts,
                )
                devices = [DeviceAddress(r["account"], int(r["device_id"])) for r in rows]
                # The sender's own device gets the change too (see the SQLite store).
                _first, events = await self._queue_for(
                    conn,
                    devices,
                    change.sender,
                    f"membership:{change.group_id.hex()}:{change.epoch}",
                    GROUP_CHANGE_TYPE,
                    change.change,
                    change.group_id,
                    now,
                    ttl,
                )
            return len(devices), events

        return self._submit((("group", change.group_id),), op)

    def group_changes(self, group_id: bytes, after_epoch: int, limit: int) -> asyncio.Future[list[bytes]]:
        async def op(conn: Any) -> tuple[list[bytes], list[_Event]]:
            rows = await conn.fetch(
                "SELECT change FROM group_changes WHERE group_id = $1 AND epoch > $2 ORDER BY epoch LIMIT $3",
                group_id,
                after_epoch,
                limit,
            )
            return [bytes(r["change"]) for r in rows], []

        return self._submit((("group", group_id),), op)

    def enqueue_group(
        self, message: NewGroupMessage, now: float, ttl: float, max_messages: int, max_bytes: int
    ) -> asyncio.Future[GroupEnqueueResult]:
        digest = _group_digest(message)

        async def op(conn: Any) -> tuple[GroupEnqueueResult, list[_Event]]:
            sender = message.sender
            async with conn.transaction():
                if (
                    await conn.fetchval(
                        "SELECT 1 FROM groups WHERE group_id = $1 FOR SHARE", message.group_id
                    )
                    is None
                ):
                    raise UnknownGroupError("no such group")
                if (
                    await conn.fetchval(
                        "SELECT 1 FROM group_members WHERE group_id = $1 AND account = $2",
                        message.group_id,
                        sender.account,
                    )
                    is None
                ):
                    raise NotAMemberError("the sender is not a member of this group")
                rows = await conn.fetch(
                    "SELECT q.account, q.device_id, q.count, q.bytes FROM queues q "
                    "JOIN group_members g ON g.account = q.account AND g.group_id = $1 "
                    "ORDER BY q.account, q.device_id FOR UPDATE OF q",
                    message.group_id,
                )
                seen = await conn.fetchrow(
                    "SELECT server_id, digest FROM sent_ids WHERE sender_account = $1 AND sender_device = $2 "
                    "AND client_id = $3 AND expires_at > $4",
                    sender.account,
                    sender.device_id,
                    message.client_id,
                    now,
                )
                if seen is not None:
                    if bytes(seen["digest"]) != digest:
                        raise MessageIdReusedError(
                            "this client message id was already used for a different message"
                        )
                    return GroupEnqueueResult(int(seen["server_id"]), duplicate=True, recipients=0), []
                devices = []
                for r in rows:
                    device = DeviceAddress(r["account"], int(r["device_id"]))
                    if device == sender:
                        continue
                    if int(r["count"]) + 1 > max_messages or int(r["bytes"]) + len(message.body) > max_bytes:
                        raise QueueFullError(f"the queue of {device} is full")
                    devices.append(device)
                first, events = await self._queue_for(
                    conn,
                    devices,
                    sender,
                    message.client_id,
                    message.type,
                    message.body,
                    message.group_id,
                    now,
                    ttl,
                )
                await conn.execute(
                    "INSERT INTO sent_ids "
                    "(sender_account, sender_device, client_id, server_id, digest, expires_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sender_account, sender_device, client_id) "
                    "DO UPDATE SET server_id = excluded.server_id, digest = excluded.digest, "
                    "expires_at = excluded.expires_at",
                    sender.account,
                    sender.device_id,
                    message.client_id,
                    first,
                    digest,
                    now + ttl,
                )
            return GroupEnqueueResult(first, duplicate=False, recipients=len(devices)), events

        return self._submit((("group", message.group_id), message.sender), op)


def _group_digest(message: NewGroupMessage) -> bytes:
    """What a repeated client id of a group send is compared on: group, type and body."""
    h = hashlib.sha256()
    h.update(b"group\x00" + message.group_id)
    h.update(message.type.to_bytes(8, "big"))
    h.update(message.body)
    return h.digest()


# An arbitrary, fixed 64-bit key: whichever node holds it is the one expiring messages right now.
_EXPIRE_LOCK_KEY = 0x6532_655F_6578_7069
