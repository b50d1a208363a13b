"""The bot library: a business account is an ordinary account whose program answers its messages.

What this module owns
---------------------
:class:`Bot`, which sits on top of one :class:`client.Client` (never beside it: every message in
and out goes through the client's sessions, store and outbox) and adds what a service needs:

* **handlers** for text (:meth:`Bot.on_text`) and for quick replies (:meth:`Bot.on_reply`); a
  plain-text number that answers the customer's latest offer counts as a quick reply, so a client
  that only showed the fallback text works too;
* **per-customer conversation state** in the bot's own SQLite file (:class:`BotStore`, separate
  from the client's store): a JSON object per customer, the offers made to them (to check every
  reply against, :func:`client.structured.resolve_reply`), and the topics they subscribed to.  A
  handler's changes to state and subscriptions commit in one transaction when it returns, and not
  at all when it raises;
* **notifications** (:meth:`Bot.notify`, :meth:`Bot.notify_subscribers`): messages the customer did
  not ask for just now, sent only to customers subscribed to the topic (:class:`NotSubscribedError`
  otherwise) and rate limited per customer and for the whole bot (:class:`BotRateLimitedError`);
* **flood containment**: each customer's messages are metered by a token bucket; messages over the
  rate are dropped without running a handler (one notice per flood), and a handler may send at most
  ``max_replies_per_message`` messages for one incoming message (:class:`ReplyLimitError`) and take
  at most ``handler_timeout`` seconds, so one customer can make the bot do only a bounded amount of
  work and sending;
* **its verified name**: the bot posts its business-name certificate to the relay on every new
  connection (``put_business_certificate``), so a restarted relay has it back at once;
* **a clean shutdown**: :meth:`Bot.stop` (``e2e-bot`` calls it on SIGINT and SIGTERM) lets the
  running handler finish, stops the background tasks, and waits briefly for the outbox to drain.

Invariants and limits
---------------------
Messages are handled one at a time, in the order the client committed them.  The client commits a
message before the bot sees it; the bot records each message it dealt with (answered, refused,
dropped as flooding, or failed) in its store, in the transaction that commits the handler's state.
On start it looks through the client's latest history (``catch_up_messages``, within
``catch_up_window``) and handles what it never dealt with, so a crash between the client's commit
and the handler loses no message.  A crash after a handler sent its answer and before its commit
makes the bot answer that message again on start (at least once).  A handler that raises is logged with the
customer's name only, never the text.  A customer whose identity key changes is accepted
automatically (a service cannot compare safety numbers with each of its customers); it is logged.

What it does not know
---------------------
What a service does (the examples in ``examples/`` are two services), and the protocol: sessions,
encryption and delivery are the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from client import envelope, transport
from client.business import structured_content
from client.client import Client
from client.errors import ClosedError, IdentityChanged
from client.events import Message
from client.structured import (
    OFFER_ID_LENGTH,
    QuickReplies,
    QuickReply,
    QuickReplyOption,
    StructuredMessageError,
    decode_offer,
    encode_offer,
    reply_from_text,
    resolve_reply,
)
from e2e import __version__
from e2e.keys import Rng

__all__ = [
    "BotLimits",
    "BotStore",
    "Bot",
    "Conversation",
    "BotError",
    "NotSubscribedError",
    "BotRateLimitedError",
    "ReplyLimitError",
    "StateTooLargeError",
    "BotDefinitionError",
    "load_service",
    "main",
]

logger = logging.getLogger("client.bot")

_STORE_VERSION = 1
_TOPIC_MAX = 64
_SCHEMA = (
    "CREATE TABLE conversations (customer TEXT PRIMARY KEY, state TEXT NOT NULL, updated INTEGER NOT NULL)",
    "CREATE TABLE offers (seq INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, "
    "offer_id BLOB NOT NULL, body BLOB NOT NULL, created INTEGER NOT NULL)",
    "CREATE INDEX offers_by_customer ON offers (customer, seq)",
    "CREATE TABLE subscriptions (customer TEXT NOT NULL, topic TEXT NOT NULL, created INTEGER NOT NULL, "
    "PRIMARY KEY (customer, topic))",
    "CREATE INDEX subscriptions_by_topic ON subscriptions (topic, customer)",
    "CREATE TABLE handled (customer TEXT NOT NULL, message_id TEXT NOT NULL, at INTEGER NOT NULL, "
    "PRIMARY KEY (customer, message_id))",
    "CREATE INDEX handled_by_time ON handled (at)",
)
"""The bot store's tables (version 1); executed one by one inside one transaction."""

TextHandler = Callable[["Conversation", str], Awaitable[None]]
ReplyHandler = Callable[["Conversation", QuickReplyOption, QuickReplies], Awaitable[None]]
BackgroundTask = Callable[["Bot"], Coroutine[Any, Any, None]]


class BotError(Exception):
    """A bot refused to do something: the base of the bot library's errors."""


class NotSubscribedError(BotError):
    """A notification for a customer who did not subscribe to its topic: nothing was sent."""


class BotRateLimitedError(BotError):
    """A notification over the per-customer or the bot's rate: nothing was sent."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReplyLimitError(BotError):
    """A handler tried to send more messages for one incoming message than the limit allows."""


class StateTooLargeError(BotError):
    """A conversation state that is not a JSON object or is larger than ``max_state_bytes``."""


class BotDefinitionError(BotError):
    """A service module that cannot be loaded, or has no ``setup(bot)``."""


@dataclass(frozen=True, slots=True)
class BotLimits:
    """The bot's bounds.  Rates are per second; a bucket holds up to its burst."""

    customer_rate: float = 1.0
    """Messages from one customer handled per second, on average."""
    customer_burst: int = 10
    """Messages from one customer handled in a burst before the rate applies."""
    max_replies_per_message: int = 3
    """Messages a handler may send for one incoming message."""
    notify_rate: float = 1 / 60
    """Notifications to one customer per second (one a minute)."""
    notify_burst: int = 3
    global_notify_rate: float = 20.0
    """Notifications from the whole bot per second."""
    global_notify_burst: int = 100
    max_offers_kept: int = 8
    """Offers remembered per customer: replies to older ones are refused as unknown."""
    max_state_bytes: int = 16_384
    max_tracked_customers: int = 100_000
    """Rate-limit buckets kept in memory at most (all are dropped and start full past this)."""
    handler_timeout: float = 30.0
    """Seconds a handler may take for one message; a slower one is cancelled and counts as failed."""
    catch_up_messages: int = 1000
    """On start, the client's latest messages looked through for any the bot never dealt with."""
    catch_up_window: float = 86_400.0
    """Seconds back that start-up catch-up reaches (older unhandled messages are left alone)."""

    def __post_init__(self) -> None:
        for name in (
            "customer_rate",
            "notify_rate",
            "global_notify_rate",
            "handler_timeout",
            "catch_up_window",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} is positive")
        for name in (
            "customer_burst",
            "max_replies_per_message",
            "notify_burst",
            "global_notify_burst",
            "max_offers_kept",
            "max_state_bytes",
            "max_tracked_customers",
            "catch_up_messages",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} is at least 1")


class _Bucket:
    """A token bucket: ``take`` answers 0 when a token was taken, else the seconds until one is."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, float(burst), now

    def take(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = max(self.at, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def peek(self, now: float) -> float:
        tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class BotStore:
    """The bot's own SQLite file: conversation state, offers made, subscriptions (schema version 1)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            with self.transaction():
                for statement in _SCHEMA:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {_STORE_VERSION}")
        elif version != _STORE_VERSION:
            self._db.close()
            raise BotError(f"{path}: unknown bot store version {version}")

    def __repr__(self) -> str:
        return f"BotStore({str(self.path)!r})"

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def state(self, customer: str) -> dict[str, Any]:
        row = self._db.execute("SELECT state FROM conversations WHERE customer = ?", (customer,)).fetchone()
        if row is None:
            return {}
        value = json.loads(row[0])
        assert isinstance(value, dict)
        return value

    def save_state(self, customer: str, state: dict[str, Any], now: int) -> None:
        self._db.execute(
            "INSERT INTO conversations (customer, state, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (customer) DO UPDATE SET state = excluded.state, updated = excluded.updated",
            (customer, json.dumps(state, sort_keys=True), now),
        )

    def customers(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT customer FROM conversations ORDER BY customer")]

    def add_offer(self, customer: str, offer: QuickReplies, now: int, keep: int) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO offers (customer, offer_id, body, created) VALUES (?, ?, ?, ?)",
                (customer, offer.offer_id, encode_offer(offer), now),
            )
            self._db.execute(
                "DELETE FROM offers WHERE customer = ? AND seq NOT IN "
                "(SELECT seq FROM offers WHERE customer = ? ORDER BY seq DESC LIMIT ?)",
                (customer, customer, keep),
            )

    def offers(self, customer: str) -> list[QuickReplies]:
        """The offers kept for ``customer``, oldest first."""
        rows = self._db.execute("SELECT body FROM offers WHERE customer = ? ORDER BY seq", (customer,))
        return [decode_offer(row[0]) for row in rows]

    def subscribe(self, customer: str, topic: str, now: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO subscriptions (customer, topic, created) VALUES (?, ?, ?)",
            (customer, topic, now),
        )

    def unsubscribe(self, customer: str, topic: str) -> None:
        self._db.execute("DELETE FROM subscriptions WHERE customer = ? AND topic = ?", (customer, topic))

    def is_subscribed(self, customer: str, topic: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM subscriptions WHERE customer = ? AND topic = ?", (customer, topic)
        ).fetchone()
        return row is not None

    def subscribers(self, topic: str) -> list[str]:
        rows = self._db.execute(
            "SELECT customer FROM subscriptions WHERE topic = ? ORDER BY customer", (topic,)
        )
        return [row[0] for row in rows]

    def is_handled(self, customer: str, message_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM handled WHERE customer = ? AND message_id = ?", (customer, message_id)
        ).fetchone()
        return row is not None

    def mark_handled(self, customer: str, message_id: str, now: int) -> None:
        """Record that a message was dealt with (answered, refused or dropped): never again."""
        self._db.execute(
            "INSERT OR IGNORE INTO handled (customer, message_id, at) VALUES (?, ?, ?)",
            (customer, message_id, now),
        )

    def forget_handled_before(self, before: int) -> None:
        self._db.execute("DELETE FROM handled WHERE at < ?", (before,))

    def topics(self, customer: str) -> list[str]:
        rows = self._db.execute(
            "SELECT topic FROM subscriptions WHERE customer = ? ORDER BY topic", (customer,)
        )
        return [row[0] for row in rows]


def _check_topic(topic: str) -> None:
    if not isinstance(topic, str) or not 1 <= len(topic) <= _TOPIC_MAX or not topic.isprintable():
        raise BotError(f"a topic is 1 to {_TOPIC_MAX} printable characters")


@dataclass
class Conversation:
    """One customer, as a handler sees them: their state, and what the handler may do for them.

    Changes to :attr:`state` and to subscriptions commit when the handler returns; messages are
    sent at once (each is in the client's outbox when :meth:`say` or :meth:`offer` returns).
    """

    bot: Bot
    customer: str
    state: dict[str, Any]
    sent: int = 0
    _subscribe: set[str] = field(default_factory=set)
    _unsubscribe: set[str] = field(default_factory=set)

    def _count(self) -> None:
        if self.sent >= self.bot.limits.max_replies_per_message:
            raise ReplyLimitError(
                f"a handler sends at most {self.bot.limits.max_replies_per_message} messages per message"
            )
        self.sent += 1

    async def say(self, text: str) -> str:
        """Send ``text`` to the customer; returns the message id."""
        self._count()
        return await self.bot.client.send(self.customer, text)

    async def offer(self, prompt: str, options: Sequence[tuple[str, str]]) -> QuickReplies:
        """Send a quick-reply offer of ``(id, label)`` options; replies to it reach :meth:`Bot.on_reply`."""
        offer = QuickReplies(
            self.bot.rng(OFFER_ID_LENGTH),
            prompt,
            tuple(QuickReplyOption(option_id, label) for option_id, label in options),
        )
        self._count()
        await self.bot.send_offer(self.customer, offer)
        return offer

    def subscribe(self, topic: str) -> None:
        """Opt the customer into notifications on ``topic`` (commits when the handler returns)."""
        _check_topic(topic)
        self._unsubscribe.discard(topic)
        self._subscribe.add(topic)

    def unsubscribe(self, topic: str) -> None:
        _check_topic(topic)
        self._subscribe.discard(topic)
        self._unsubscribe.add(topic)

    def is_subscribed(self, topic: str) -> bool:
        if topic in self._subscribe:
            return True
        if topic in self._unsubscribe:
            return False
        return self.bot.store.is_subscribed(self.customer, topic)


@dataclass
class BotStats:
    """What the bot did, for tests and logs."""

    handled: int = 0
    flood_dropped: int = 0
    handler_errors: int = 0
    refused_replies: int = 0
    notifications: int = 0


_FLOOD_NOTICE = "You are sending messages faster than this service answers; it will read new ones shortly."
_UNKNOWN_OPTION = "That option is not available any more; please choose from the latest message."
_UNREADABLE = "That message could not be read."
_TEXT_ONLY = "This service reads text and quick replies only."


class Bot:
    """A business's program over ``client``; register handlers, then ``await run()`` until :meth:`stop`."""

    def __init__(
        self,
        client: Client,
        store: BotStore,
        *,
        limits: BotLimits | None = None,
        certificate: bytes | None = None,
        options: dict[str, str] | None = None,
        rng: Rng = os.urandom,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.store = store
        self.limits = limits if limits is not None else BotLimits()
        self.certificate = certificate
        self.options = dict(options or {})
        """``--set KEY=VALUE`` options of ``e2e-bot``, for the service to read."""
        self.rng = rng
        self._clock = clock
        self._wall_clock = wall_clock
        self.stats = BotStats()
        self._text_handler: TextHandler | None = None
        self._reply_handler: ReplyHandler | None = None
        self._background: list[BackgroundTask] = []
        self._customer_buckets: dict[str, _Bucket] = {}
        self._notify_buckets: dict[str, _Bucket] = {}
        self._global_notify = _Bucket(
            self.limits.global_notify_rate, self.limits.global_notify_burst, clock()
        )
        self._flood_noticed: set[str] = set()
        self._stopping = asyncio.Event()
        self._running = False
        self.ready = asyncio.Event()
        """Set once the bot is connected (and its certificate posted, if it has one)."""

    def __repr__(self) -> str:
        return f"Bot(account={self.client.name!r}, store={self.store!r})"

    # -- registration --------------------------------------------------------------------------

    def on_text(self, handler: TextHandler) -> TextHandler:
        """Register ``async handler(conversation, text)`` for text messages (usable as a decorator)."""
        self._text_handler = handler
        return handler

    def on_reply(self, handler: ReplyHandler) -> ReplyHandler:
        """Register ``async handler(conversation, option, offer)`` for quick replies."""
        self._reply_handler = handler
        return handler

    def background(self, task: BackgroundTask) -> BackgroundTask:
        """Run ``async task(bot)`` while the bot runs (a feed that sends notifications); cancelled on stop."""
        self._background.append(task)
        return task

    # -- sending unasked -----------------------------------------------------------------------

    async def send_offer(self, customer: str, offer: QuickReplies) -> None:
        """Send ``offer`` to ``customer`` and remember it (replies are checked against it)."""
        self.store.add_offer(customer, offer, self._now_ms(), self.limits.max_offers_kept)
        await self.client.send(customer, encode_offer(offer), content_type=envelope.CONTENT_QUICK_REPLIES)

    async def notify(self, customer: str, text: str, *, topic: str) -> str:
        """Send ``customer`` a notification on ``topic``; returns its message id.

        Raises :class:`NotSubscribedError` unless the customer subscribed to ``topic``, and
        :class:`BotRateLimitedError` over the per-customer or the bot's notification rate; either
        way nothing is sent.
        """
        _check_topic(topic)
        if not self.store.is_subscribed(customer, topic):
            raise NotSubscribedError(f"{customer} did not subscribe to {topic!r}")
        now = self._clock()
        bucket = self._bucket(
            self._notify_buckets, customer, self.limits.notify_rate, self.limits.notify_burst
        )
        wait = max(bucket.peek(now), self._global_notify.peek(now))
        if wait > 0:
            raise BotRateLimitedError(f"notifications to {customer} are over the rate", wait)
        bucket.take(now)
        self._global_notify.take(now)
        message_id = await self.client.send(customer, text)
        self.stats.notifications += 1
        return message_id

    async def notify_subscribers(self, topic: str, text: str) -> int:
        """Notify every subscriber of ``topic``; returns how many were sent (the rate-limited are skipped)."""
        sent = 0
        for customer in self.store.subscribers(topic):
            try:
                await self.notify(customer, text, topic=topic)
            except BotRateLimitedError:
                logger.info(
                    "%s: notification on %r to %s deferred by the rate limit",
                    self.client.name,
                    topic,
                    customer,
                )
                continue
            sent += 1
        return sent

    # -- running -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish (the handler that runs completes first); safe from a signal handler."""
        self._stopping.set()

    async def run(self) -> None:
        """Handle messages until :meth:`stop`; starts the client if needed (the caller closes it)."""
        if self._running:
            raise BotError("the bot is already running")
        self._running = True
        await self.client.start()
        await self._catch_up()
        tasks = [asyncio.create_task(self._post_certificate(), name="bot certificate")]
        tasks += [asyncio.create_task(task(self)) for task in self._background]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                receiving = asyncio.create_task(self.client.receive())
                done, _pending = await asyncio.wait(
                    {receiving, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiving not in done:
                    receiving.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ClosedError):
                        await receiving
                    break
                try:
                    event = receiving.result()
                except ClosedError as error:
                    if self._stopping.is_set():
                        break
                    # The client stopped on its own (a refusal at authentication, a corrupt store).
                    raise BotError(f"the client stopped: {error}") from error
                await self._dispatch(event)
        finally:
            stopping.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(ClosedError, asyncio.TimeoutError):
                await self.client.flush(timeout=5)
            self._running = False

    async def _catch_up(self) -> None:
        """Deal with messages the client committed but the bot never handled (it stopped in between).

        The client commits a message before the bot sees it; the bot records every message it dealt
        with in its own store, so on start the client's latest history tells which ones it missed.
        Their content type is recovered by strict decoding (the history keeps bodies only).
        """
        now_ms = self._now_ms()
        self.store.forget_handled_before(now_ms - int(2 * self.limits.catch_up_window * 1000))
        since = now_ms - int(self.limits.catch_up_window * 1000)
        for stored in self.client.history(limit=self.limits.catch_up_messages):
            if stored.direction != "in" or stored.timestamp < since:
                continue
            if self.store.is_handled(stored.peer, stored.message_id):
                continue
            content_type = _content_type_of(stored.body)
            await self._dispatch(
                Message(
                    stored.peer,
                    stored.peer_device,
                    stored.message_id,
                    stored.timestamp,
                    stored.timestamp,
                    stored.body,
                    content_type,
                )
            )

    async def _post_certificate(self) -> None:
        """Post the certificate on each new connection; set :attr:`ready` once connected (and posted)."""
        posted_on = -1
        while True:
            await self.client.wait_connected()
            if self.client.connections != posted_on:
                connections = self.client.connections
                if self.certificate is not None:
                    try:
                        await self.client.relay_request(
                            "put_business_certificate", certificate=_b64(self.certificate)
                        )
                    except transport.RelayError as error:
                        logger.error(
                            "%s: the relay refused the certificate: %s", self.client.name, error.code
                        )
                    except transport.ConnectionLost:
                        await asyncio.sleep(0.2)
                        continue
                posted_on = connections
                self.ready.set()
            await asyncio.sleep(0.2)

    async def _dispatch(self, event: object) -> None:
        if isinstance(event, IdentityChanged):
            logger.warning("%s: %s's identity key changed; accepting it", self.client.name, event.name)
            await self.client.accept_identity(event.name)
            return
        if not isinstance(event, Message):
            return
        customer = event.sender
        if self.store.is_handled(customer, event.message_id):
            return
        now = self._clock()
        bucket = self._bucket(
            self._customer_buckets, customer, self.limits.customer_rate, self.limits.customer_burst
        )
        if bucket.take(now) > 0:
            self.stats.flood_dropped += 1
            with self.store.transaction():
                self.store.mark_handled(customer, event.message_id, self._now_ms())
            if customer not in self._flood_noticed:
                if len(self._flood_noticed) >= self.limits.max_tracked_customers:
                    self._flood_noticed.clear()
                self._flood_noticed.add(customer)
                with contextlib.suppress(Exception):
                    await self.client.send(customer, _FLOOD_NOTICE)
            return
        self._flood_noticed.discard(customer)
        conversation = Conversation(self, customer, self.store.state(customer))
        try:
            await asyncio.wait_for(self._handle(conversation, event), self.limits.handler_timeout)
            self._commit(conversation, event.message_id)
        except Exception as error:
            self.stats.handler_errors += 1
            # A failed handler is not run again for the same message (it may have sent already).
            with self.store.transaction():
                self.store.mark_handled(customer, event.message_id, self._now_ms())
            logger.warning(
                "%s: the handler failed for %s (%s); its state changes are dropped",
                self.client.name,
                customer,
                type(error).__name__,
            )
            return
        self.stats.handled += 1

    async def _handle(self, conversation: Conversation, message: Message) -> None:
        if message.content_type == envelope.CONTENT_ATTACHMENT:
            await conversation.say(_TEXT_ONLY)
            return
        try:
            content = structured_content(message)
        except StructuredMessageError:
            self.stats.refused_replies += 1
            await conversation.say(_UNREADABLE)
            return
        offers = self.store.offers(conversation.customer)
        reply: QuickReply | None
        if isinstance(content, QuickReplies):
            # Customers make no offers to a business.
            await conversation.say(_TEXT_ONLY)
            return
        if isinstance(content, QuickReply):
            reply = content
        else:
            reply = reply_from_text(offers[-1], content) if offers else None
            if reply is None:
                if self._text_handler is not None:
                    await self._text_handler(conversation, content)
                return
        try:
            option = resolve_reply({offer.offer_id: offer for offer in offers}, reply)
        except StructuredMessageError:
            self.stats.refused_replies += 1
            await conversation.say(_UNKNOWN_OPTION)
            return
        offer = next(offer for offer in offers if offer.offer_id == reply.offer_id)
        if self._reply_handler is not None:
            await self._reply_handler(conversation, option, offer)

    def _commit(self, conversation: Conversation, message_id: str) -> None:
        try:
            encoded = json.dumps(conversation.state, sort_keys=True)
        except (TypeError, ValueError):
            raise StateTooLargeError("the conversation state is a JSON object") from None
        if not isinstance(conversation.state, dict) or len(encoded.encode()) > self.limits.max_state_bytes:
            raise StateTooLargeError(f"the conversation state is at most {self.limits.max_state_bytes} bytes")
        now = self._now_ms()
        with self.store.transaction():
            self.store.mark_handled(conversation.customer, message_id, now)
            self.store.save_state(conversation.customer, conversation.state, now)
            for topic in conversation._subscribe:
                self.store.subscribe(conversation.customer, topic, now)
            for topic in conversation._unsubscribe:
                self.store.unsubscribe(conversation.customer, topic)

    def _bucket(self, buckets: dict[str, _Bucket], customer: str, rate: float, burst: int) -> _Bucket:
        bucket = buckets.get(customer)
        if bucket is None:
            if len(buckets) >= self.limits.max_tracked_customers:
                buckets.clear()
            bucket = buckets[customer] = _Bucket(rate, burst, self._clock())
        return bucket

    def _now_ms(self) -> int:
        return int(self._wall_clock() * 1000)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _content_type_of(body: bytes) -> int:
    """The content type of a stored body, recovered by strict decoding (text unless it decodes)."""
    from client.pointer import InvalidPointerError, decode_pointer
    from client.structured import decode_reply

    for content_type, decode in (
        (envelope.CONTENT_QUICK_REPLY, decode_reply),
        (envelope.CONTENT_QUICK_REPLIES, decode_offer),
        (envelope.CONTENT_ATTACHMENT, decode_pointer),
    ):
        try:
            decode(body)
        except (StructuredMessageError, InvalidPointerError):
            continue
        return content_type
    return envelope.CONTENT_TEXT


# -- e2e-bot ------------------------------------------------------------------------------------


def load_service(path_or_module: str) -> ModuleType:
    """The service module ``path_or_module`` names (a ``.py`` file or an importable module)."""
    try:
        if path_or_module.endswith(".py") or os.sep in path_or_module:
            path = Path(path_or_module)
            if not path.is_file():
                raise BotDefinitionError(f"{path} is not a file")
            spec = importlib.util.spec_from_file_location(f"e2e_bot_service_{path.stem}", path)
            if spec is None or spec.loader is None:
                raise BotDefinitionError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(path_or_module)
    except BotDefinitionError:
        raise
    except Exception as error:
        raise BotDefinitionError(f"cannot load {path_or_module}: {type(error).__name__}: {error}") from None
    if not callable(getattr(module, "setup", None)):
        raise BotDefinitionError(f"{path_or_module} defines no setup(bot) function")
    return module


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e-bot",
        description="Run a business's bot (a module with setup(bot)) as an ordinary encrypted account.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("service", metavar="PATH_OR_MODULE", help="a .py file or module defining setup(bot)")
    parser.add_argument("--relay", default="ws://127.0.0.1:8765", help="relay URL (default: %(default)s)")
    parser.add_argument("--account", required=True, help="the business's account name")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="folder for the bot's two files (client.sqlite3, bot.sqlite3)",
    )
    parser.add_argument("--certificate", type=Path, default=None, help="its business-name certificate file")
    parser.add_argument(
        "--print-identity",
        action="store_true",
        help="create the account's keys if needed, print its identity key (for e2e-directory issue), exit",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option for the service (repeatable)",
    )
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _open_client(args: argparse.Namespace) -> Client:
    args.data.mkdir(parents=True, exist_ok=True)
    path = args.data / "client.sqlite3"
    if path.exists():
        client = Client.open(path, args.relay)
        if client.name != args.account:
            raise BotDefinitionError(f"{path} belongs to account {client.name!r}, not {args.account!r}")
        return client
    return Client.create(path, args.relay, args.account)


async def _serve(args: argparse.Namespace, module: ModuleType, options: dict[str, str]) -> None:
    certificate = args.certificate.read_bytes() if args.certificate is not None else None
    client = _open_client(args)
    store = BotStore(args.data / "bot.sqlite3")
    bot = Bot(client, store, certificate=certificate, options=options)
    try:
        module.setup(bot)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, bot.stop)
        runner = asyncio.create_task(bot.run())
        ready = asyncio.create_task(bot.ready.wait())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            print(f"e2e-bot: {client.name} ready", flush=True)
        else:
            ready.cancel()
        await runner
    finally:
        await client.close()
        store.close()
    print(f"e2e-bot: {client.name} stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    options: dict[str, str] = {}
    try:
        for item in args.set:
            key, separator, value = item.partition("=")
            if not separator or not key:
                raise BotDefinitionError(f"--set takes KEY=VALUE, not {item!r}")
            options[key] = value
        if args.print_identity:
            client = _open_client(args)
            print(client.identity_key.serialize().hex())
            client.store.close()
            return 0
        module = load_service(args.service)
        asyncio.run(_serve(args, module, options))
    except (BotError, OSError) as error:
        print(f"e2e-bot: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
