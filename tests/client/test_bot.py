"""The bot library and the two example services, end to end: a real relay on loopback, real clients,
real SQLite files.

Parcel bot: a lookup, a quick reply that subscribes, a notification only subscribers get.  Flight
bot: menus of quick replies, answers by number, state kept across a restart.  Verified names: a
valid certificate is shown as verified, a forged, expired or misbound one never is, and the relay
refuses to post one for another key.  Bad input: replies to offers never made, a flooding customer,
a failing handler, notifications to non-subscribers or over the rate.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from client import Client, Message, envelope, transport
from client.bot import (
    Bot,
    BotLimits,
    BotRateLimitedError,
    BotStore,
    NotSubscribedError,
    load_service,
)
from client.business import (
    UnverifiedName,
    VerifiedName,
    check_business_name,
    make_offer,
    send_choice,
    structured_content,
)
from client.structured import QuickReplies, QuickReply, encode_reply
from e2e.business_name import SIGNATURE_CONTEXT, BusinessName, issue_certificate
from e2e.keys import KeyPair

pytest_plugins = ["client_fixtures"]

EXAMPLES = Path(__file__).resolve().parents[2] / "client" / "examples"
DIRECTORY = KeyPair.generate(os.urandom)
DAY_MS = 86_400_000


def certificate_for(client: Client, name: str, *, directory: KeyPair = DIRECTORY, **times: int) -> bytes:
    now = int(__import__("time").time() * 1000)
    not_before = times.get("not_before", now - DAY_MS)
    not_after = times.get("not_after", now + DAY_MS)
    return issue_certificate(
        directory, BusinessName(client.name, client.identity_key, name, not_before, not_after), os.urandom
    )


class Customer:
    """A real client with helpers to read what a business sends."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def next(self, timeout: float = 10) -> Message:
        while True:
            event = await self.client.receive(timeout=timeout)
            if isinstance(event, Message):
                return event

    async def text(self, timeout: float = 10) -> str:
        message = await self.next(timeout)
        content = structured_content(message)
        assert isinstance(content, str), content
        return content

    async def offer(self, timeout: float = 10) -> QuickReplies:
        message = await self.next(timeout)
        content = structured_content(message)
        assert isinstance(content, QuickReplies), content
        return content

    async def quiet(self, seconds: float) -> list[Message]:
        """Everything that arrives within ``seconds`` (expected: nothing)."""
        got: list[Message] = []
        try:
            while True:
                got.append(await self.next(timeout=seconds))
        except TimeoutError:
            return got


@pytest.fixture
async def run_bot(make_client, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await run_bot(relay, account, service, **options)``: a bot running in this event loop."""
    running: list[tuple[Bot, asyncio.Task[None], BotStore]] = []

    async def start(
        relay: Any,
        account: str,
        service: str,
        *,
        certificate: bytes | None = None,
        limits: BotLimits | None = None,
        client: Client | None = None,
        **options: str,
    ) -> Bot:
        if client is None:
            client = make_client(relay.url, account)
        store = BotStore(tmp_path / f"{account}-bot.sqlite3")
        bot = Bot(client, store, certificate=certificate, limits=limits, options=options)
        load_service(str(EXAMPLES / service)).setup(bot)
        task = asyncio.create_task(bot.run())
        running.append((bot, task, store))
        await asyncio.wait_for(bot.ready.wait(), 10)
        return bot

    async def stop(bot: Bot) -> None:
        for entry in running:
            if entry[0] is bot:
                bot.stop()
                await asyncio.wait_for(entry[1], 10)
                await bot.client.close()
                entry[2].close()
                running.remove(entry)
                return

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for bot, task, store in running:
        bot.stop()
        await asyncio.wait_for(task, 10)
        await bot.client.close()
        store.close()


async def customer(make_client, relay, name: str) -> Customer:
    client = make_client(relay.url, name)
    await client.start()
    await client.wait_connected(10)
    return Customer(client)


# -- the parcel service --------------------------------------------------------------------------


async def test_parcel_lookup_subscribe_and_a_notification_only_for_subscribers(
    relay, make_client, run_bot
) -> None:
    bot = await run_bot(relay, "parcels", "parcel_bot.py", step="0.3")
    alice = await customer(make_client, relay, "alice")
    bob = await customer(make_client, relay, "bob")

    await alice.client.send("parcels", "where is PD123456?")
    assert await alice.text() == "Parcel PD123456 is at the sorting centre."
    offer = await alice.offer()
    assert [option.label for option in offer.options] == ["Notify me of updates", "No, thanks"]
    # Bob looks up the same parcel but does not subscribe: the feed will notify Alice alone.
    await bob.client.send("parcels", "PD123456")
    assert "sorting centre" in await bob.text()
    await bob.offer()

    await send_choice(alice.client, "parcels", offer, 1)
    assert "you will get a message when parcel PD123456 moves" in await alice.text()
    assert await alice.text() == "Update: parcel PD123456 has left the depot."
    assert await bob.quiet(0.8) == []
    assert bot.store.subscribers("parcel:PD123456") == ["alice"]
    with pytest.raises(NotSubscribedError):
        await bot.notify("bob", "unasked", topic="parcel:PD123456")

    # "stop" ends the subscription.
    await alice.client.send("parcels", "stop")
    answer = await alice.text()
    while answer.startswith("Update: "):
        answer = await alice.text()
    assert answer == "You will get no more parcel updates."
    assert bot.store.subscribers("parcel:PD123456") == []


async def test_a_number_typed_as_text_answers_the_latest_offer(relay, make_client, run_bot) -> None:
    bot = await run_bot(relay, "parcels", "parcel_bot.py", step="3600")
    carol = await customer(make_client, relay, "carol")
    await carol.client.send("parcels", "PD000002")
    await carol.text()
    await carol.offer()
    await carol.client.send("parcels", "1")
    assert "you will get a message when parcel PD000002 moves" in await carol.text()
    assert bot.store.is_subscribed("carol", "parcel:PD000002")


async def test_replies_to_offers_never_made_are_refused(relay, make_client, run_bot) -> None:
    bot = await run_bot(relay, "parcels", "parcel_bot.py", step="3600")
    mallory = await customer(make_client, relay, "mallory")
    await mallory.client.send("parcels", "PD000002")
    await mallory.text()
    offer = await mallory.offer()
    # An offer the bot never made, and an option its real offer did not have.
    made_up = make_offer("?", [("notify", "Notify me of updates")])
    await send_choice(mallory.client, "parcels", made_up, 1)
    assert "not available" in await mallory.text()
    unknown = QuickReply(offer.offer_id, "refund", 1)
    await mallory.client.send("parcels", encode_reply(unknown), content_type=envelope.CONTENT_QUICK_REPLY)
    assert "not available" in await mallory.text()
    # A structured reply that does not decode.
    await mallory.client.send("parcels", b"\x00\x01x", content_type=envelope.CONTENT_QUICK_REPLY)
    assert await mallory.text() == "That message could not be read."
    assert bot.stats.refused_replies == 3
    assert not bot.store.is_subscribed("mallory", "parcel:PD000002")


# -- the flight service --------------------------------------------------------------------------


async def test_flight_menu_status_and_booking_kept_across_a_restart(relay, make_client, run_bot) -> None:
    bot = await run_bot(relay, "flights", "flight_bot.py")
    dan = await customer(make_client, relay, "dan")
    await dan.client.send("flights", "hello")
    menu = await dan.offer()
    assert [o.id for o in menu.options] == ["status", "rebook", "agent"]
    await send_choice(dan.client, "flights", menu, 1)
    assert await dan.text() == "Which flight? Send its number, like EZ1234."
    await dan.client.send("flights", "ba 2490")
    assert await dan.text() == "Flight BA2490 is delayed by 40 minutes, now departing 11:05 from gate A3."

    await dan.client.send("flights", "menu please")
    menu = await dan.offer()
    await send_choice(dan.client, "flights", menu, 2)
    departures = await dan.offer()
    await send_choice(dan.client, "flights", departures, 2)
    confirmation = await dan.text()
    assert confirmation.startswith("Booked: Tuesday 14:40. Your booking reference is ")

    await run_bot.stop(bot)
    bot = await run_bot(relay, "flights", "flight_bot.py")
    assert bot.store.state("dan")["booking"]["departure"] == "Tuesday 14:40"
    # The offers survive the restart too: an answer to the old menu still resolves.
    await send_choice(dan.client, "flights", menu, 3)
    assert await dan.text() == "An agent will write to you here within the hour."


# -- verified names --------------------------------------------------------------------------------


async def test_a_valid_certificate_shows_the_verified_name(relay, make_client, run_bot) -> None:
    business = make_client(relay.url, "parcels")
    certificate = certificate_for(business, "Parcel Depot")
    await run_bot(relay, "parcels", "parcel_bot.py", certificate=certificate, client=business, step="3600")
    alice = await customer(make_client, relay, "alice")
    assert await check_business_name(alice.client, "parcels", DIRECTORY.public_key) == UnverifiedName(
        "parcels", "no session yet: exchange a message first"
    )
    await alice.client.send("parcels", "hi")
    await alice.text()
    status = await check_business_name(alice.client, "parcels", DIRECTORY.public_key)
    assert isinstance(status, VerifiedName) and status.display_name == "Parcel Depot"
    # Without the directory key configured, or against another directory, nothing is verified.
    assert isinstance(await check_business_name(alice.client, "parcels", None), UnverifiedName)
    other = KeyPair.generate(os.urandom).public_key
    refused = await check_business_name(alice.client, "parcels", other)
    assert refused == UnverifiedName("parcels", "certificate refused (CertificateSignatureError)")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("forged", "certificate refused (CertificateSignatureError)"),
        ("expired", "certificate refused (CertificateExpiredError)"),
        ("lookalike", "certificate refused (UnsafeNameError)"),
        ("none", "no business-name certificate"),
    ],
)
async def test_bad_certificates_are_shown_unverified(
    relay, make_client, run_bot, kind: str, reason: str
) -> None:
    business = make_client(relay.url, "parcels")
    now = int(__import__("time").time() * 1000)
    certificate: bytes | None
    if kind == "forged":
        certificate = certificate_for(business, "Parcel Depot", directory=KeyPair.generate(os.urandom))
    elif kind == "expired":
        certificate = certificate_for(
            business, "Parcel Depot", not_before=now - 3 * DAY_MS, not_after=now - DAY_MS
        )
    elif kind == "lookalike":
        # A directory that signed "Pаrcel Depot" (Cyrillic а) by hand, past BusinessName's check.
        body = bytearray(
            BusinessName(
                business.name, business.identity_key, "Parcel Depot", now - DAY_MS, now + DAY_MS
            ).signed_bytes()
        )
        at = body.index(b"Parcel")
        body[at : at + len("Parcel")] = "Pаrcel".encode()
        body[at - 1] += 1
        certificate = bytes(body) + DIRECTORY.sign(SIGNATURE_CONTEXT + bytes(body), os.urandom)
    else:
        certificate = None
    if certificate is not None and kind == "lookalike":
        # The relay itself refuses to post a certificate that does not decode ...
        await run_bot(relay, "parcels", "parcel_bot.py", client=business, step="3600")
        with pytest.raises(transport.RelayError) as caught:
            await business.relay_request(
                "put_business_certificate", certificate=base64.b64encode(certificate).decode()
            )
        assert caught.value.code == "bad_request"
        # ... so a lying relay would have to serve it; the client refuses it all the same.
        relay.business_names._certificates["parcels"] = certificate
    else:
        await run_bot(
            relay, "parcels", "parcel_bot.py", certificate=certificate, client=business, step="3600"
        )
    alice = await customer(make_client, relay, "alice")
    await alice.client.send("parcels", "hi")
    await alice.text()
    assert await check_business_name(alice.client, "parcels", DIRECTORY.public_key) == UnverifiedName(
        "parcels", reason
    )


async def test_a_certificate_for_another_identity_key_is_refused_by_relay_and_client(
    relay, make_client, run_bot
) -> None:
    impostor = make_client(relay.url, "parcels")
    real = KeyPair.generate(os.urandom)
    now = int(__import__("time").time() * 1000)
    stolen = issue_certificate(
        DIRECTORY,
        BusinessName("parcels", real.public_key, "Parcel Depot", now - DAY_MS, now + DAY_MS),
        os.urandom,
    )
    await run_bot(relay, "parcels", "parcel_bot.py", client=impostor, step="3600")
    with pytest.raises(transport.RelayError) as caught:
        await impostor.relay_request(
            "put_business_certificate", certificate=base64.b64encode(stolen).decode()
        )
    assert caught.value.code == "identity_mismatch"
    # Another account cannot post one in the business's name either.
    eve = await customer(make_client, relay, "eve")
    genuine = certificate_for(impostor, "Parcel Depot")
    with pytest.raises(transport.RelayError) as caught:
        await eve.client.relay_request(
            "put_business_certificate", certificate=base64.b64encode(genuine).decode()
        )
    assert caught.value.code == "identity_mismatch"
    # A relay that serves the certificate of another key anyway gets it refused by the client.
    relay.business_names._certificates["parcels"] = stolen
    await eve.client.send("parcels", "hi")
    await eve.text()
    assert await check_business_name(eve.client, "parcels", DIRECTORY.public_key) == UnverifiedName(
        "parcels", "certificate refused (CertificateSubjectError)"
    )


async def test_a_relay_with_the_directory_key_refuses_forged_posts(relay, make_client) -> None:
    relay.business_names.directory_key = DIRECTORY.public_key
    business = make_client(relay.url, "parcels")
    async with business:
        forged = certificate_for(business, "Parcel Depot", directory=KeyPair.generate(os.urandom))
        with pytest.raises(transport.RelayError) as caught:
            await business.relay_request(
                "put_business_certificate", certificate=base64.b64encode(forged).decode()
            )
        assert caught.value.code == "invalid_signature"
        genuine = certificate_for(business, "Parcel Depot")
        await business.relay_request(
            "put_business_certificate", certificate=base64.b64encode(genuine).decode()
        )
        answer = await business.relay_request("get_business_certificate", account="parcels")
        assert base64.b64decode(answer["certificate"]) == genuine
        with pytest.raises(transport.RelayError) as caught:
            await business.relay_request("get_business_certificate", account="nobody")
        assert caught.value.code == "not_found"


async def test_the_bot_posts_its_certificate_again_after_the_relay_restarts(
    relay_factory, make_client, run_bot
) -> None:
    from client_fixtures import free_port

    port = free_port()
    relay = await relay_factory(port=port)
    business = make_client(relay.url, "parcels")
    certificate = certificate_for(business, "Parcel Depot")
    bot = await run_bot(
        relay, "parcels", "parcel_bot.py", certificate=certificate, client=business, step="3600"
    )
    connections = bot.client.connections
    await relay.close()
    relay = await relay_factory(port=port)
    assert relay.business_names.get("parcels") is None
    for _ in range(200):
        if relay.business_names.get("parcels") == certificate:
            break
        await asyncio.sleep(0.05)
    assert relay.business_names.get("parcels") == certificate
    assert bot.client.connections > connections


# -- flooding and failures ---------------------------------------------------------------------------


async def test_a_flooding_customer_is_contained_and_others_are_still_served(
    relay, make_client, run_bot
) -> None:
    limits = BotLimits(customer_rate=0.5, customer_burst=3)
    bot = await run_bot(relay, "flights", "flight_bot.py", limits=limits)
    flooder = await customer(make_client, relay, "flooder")
    started = asyncio.get_running_loop().time()
    for index in range(40):
        await flooder.client.send("flights", f"spam {index}")
    await flooder.client.flush(10)
    frank = await customer(make_client, relay, "frank")
    await frank.client.send("flights", "hello")
    assert (await frank.offer()).options[0].label == "Flight status"
    elapsed = asyncio.get_running_loop().time() - started
    received = await flooder.quiet(1.0)
    # The burst was handled (one menu each) plus what the rate refilled meanwhile; the rest was
    # dropped unhandled, with one notice per flood (a refill mid-flood starts a new one).
    notices = [m for m in received if m.content_type == envelope.CONTENT_TEXT]
    menus = [m for m in received if m.content_type == envelope.CONTENT_QUICK_REPLIES]
    assert 3 <= len(menus) <= 3 + int(elapsed * 0.5) + 1
    assert 1 <= len(notices) <= len(menus) - 2
    assert all("faster than this service answers" in notice.text for notice in notices)
    assert bot.stats.flood_dropped == 40 - len(menus)


async def test_a_failing_handler_changes_no_state_and_the_bot_goes_on(relay, make_client, tmp_path) -> None:
    client = make_client(relay.url, "shop")
    store = BotStore(tmp_path / "shop-bot.sqlite3")
    bot = Bot(client, store, limits=BotLimits(handler_timeout=0.5))

    @bot.on_text
    async def text(conversation, message: str) -> None:
        conversation.state["seen"] = conversation.state.get("seen", 0) + 1
        conversation.subscribe("news")
        if message == "boom":
            raise RuntimeError("the service's own bug")
        await conversation.say(f"seen {conversation.state['seen']}")
        if message == "slow":
            await asyncio.sleep(5)
        if message == "chatty":
            for _ in range(5):
                await conversation.say("more")

    task = asyncio.create_task(bot.run())
    try:
        await asyncio.wait_for(bot.ready.wait(), 10)
        gina = await customer(make_client, relay, "gina")
        await gina.client.send("shop", "one")
        assert await gina.text() == "seen 1"
        await gina.client.send("shop", "boom")
        await gina.client.send("shop", "two")
        assert await gina.text() == "seen 2"
        assert bot.stats.handler_errors == 1
        # A handler that sends more than the limit fails at the limit; its state is not kept.
        await gina.client.send("shop", "chatty")
        assert [await gina.text() for _ in range(3)] == ["seen 3", "more", "more"]
        assert await gina.quiet(0.5) == []
        assert store.state("gina") == {"seen": 2} and bot.stats.handler_errors == 2
        # A handler that takes too long is cancelled (what it sent is sent, its state is not kept).
        await gina.client.send("shop", "slow")
        await gina.client.send("shop", "three")
        assert [await gina.text() for _ in range(2)] == ["seen 3", "seen 3"]
        assert bot.stats.handler_errors == 3 and store.state("gina") == {"seen": 3}
        # Notifications: subscribed, then over the per-customer rate.
        bot.limits = dataclasses.replace(bot.limits, notify_burst=1)
        bot._notify_buckets.clear()
        await bot.notify("gina", "news one", topic="news")
        with pytest.raises(BotRateLimitedError) as caught:
            await bot.notify("gina", "news two", topic="news")
        assert caught.value.retry_after > 0
        assert await gina.text() == "news one"
        assert await gina.quiet(0.3) == []
    finally:
        bot.stop()
        await asyncio.wait_for(task, 10)
        await client.close()
        store.close()


def test_a_newer_bot_store_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "bot.sqlite3"
    BotStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 9")
    from client.bot import BotError

    with pytest.raises(BotError, match="unknown bot store version 9"):
        BotStore(path)


def test_reprs_name_no_secrets_and_no_message_text(tmp_path: Path) -> None:
    from client.directory import load_directory_key, write_directory_key
    from server.business_names import BusinessNameBoard

    key = KeyPair.generate(os.urandom)
    write_directory_key(tmp_path / "dir.key", key)
    loaded = load_directory_key(tmp_path / "dir.key")
    assert loaded.private_key.serialize().hex() not in repr(loaded)
    board = BusinessNameBoard(key.public_key)
    assert repr(board) == "BusinessNameBoard(certificates=0, screened=True)"
    store = BotStore(tmp_path / "bot.sqlite3")
    assert repr(store) == f"BotStore({str(tmp_path / 'bot.sqlite3')!r})"
    store.close()


async def test_a_bot_whose_client_stops_reports_it(relay, make_client, tmp_path: Path) -> None:
    from client.bot import BotError

    owner = make_client(relay.url, "taken")
    async with owner:
        await owner.wait_connected(10)
    # Another key claims the same account: the relay refuses it, the client stops, the bot says so.
    impostor = make_client(relay.url, "taken", path=tmp_path / "impostor.db")
    store = BotStore(tmp_path / "impostor-bot.sqlite3")
    bot = Bot(impostor, store)
    with pytest.raises(BotError, match="the client stopped"):
        await asyncio.wait_for(bot.run(), 10)
    store.close()


async def test_hostile_structured_messages_are_refused_on_both_sides(relay, make_client, run_bot) -> None:
    from client.structured import LabelError, TooManyOptionsError

    def raw_offer(options: list[tuple[str, str]]) -> bytes:
        payload = b"\x01" + bytes(8) + b"\x00\x00" + bytes((len(options),))
        for option_id, label in options:
            payload += bytes((len(option_id),)) + option_id.encode()
            payload += bytes((len(label.encode()),)) + label.encode()
        lines = [f"{n}. {label}" for n, (_, label) in enumerate(options, 1)]
        fallback = "\n".join([*lines, f"Reply with a number from 1 to {len(options)}."])
        return envelope.with_fallback(fallback, payload)

    # A business that sends eleven options, or a label with a right-to-left override: refused.
    shop = await customer(make_client, relay, "shady-shop")
    hana = await customer(make_client, relay, "hana")
    eleven = raw_offer([(f"o{i}", f"Option {i}") for i in range(11)])
    await shop.client.send("hana", eleven, content_type=envelope.CONTENT_QUICK_REPLIES)
    with pytest.raises(TooManyOptionsError):
        structured_content(await hana.next())
    override = raw_offer([("a", "Pay\u202eyaP")])
    await shop.client.send("hana", override, content_type=envelope.CONTENT_QUICK_REPLIES)
    with pytest.raises(LabelError):
        structured_content(await hana.next())

    # A customer who sends the bot an offer of its own, a malformed one, or an attachment.
    bot = await run_bot(relay, "flights", "flight_bot.py")
    await hana.client.send("flights", eleven, content_type=envelope.CONTENT_QUICK_REPLIES)
    assert await hana.text() == "That message could not be read."
    good = raw_offer([("a", "One")])
    await hana.client.send("flights", good, content_type=envelope.CONTENT_QUICK_REPLIES)
    assert await hana.text() == "This service reads text and quick replies only."
    await hana.client.send("flights", b"\x01" + bytes(10), content_type=envelope.CONTENT_ATTACHMENT)
    assert await hana.text() == "This service reads text and quick replies only."
    await hana.client.send("flights", "hello")
    assert (await hana.offer()).options[0].id == "status"
    assert bot.stats.handler_errors == 0


async def test_a_state_too_large_or_not_json_is_refused_and_the_old_one_kept(
    relay, make_client, tmp_path: Path
) -> None:
    client = make_client(relay.url, "shop")
    store = BotStore(tmp_path / "shop-bot.sqlite3")
    bot = Bot(client, store, limits=BotLimits(max_state_bytes=100))

    @bot.on_text
    async def text(conversation, message: str) -> None:
        if message == "big":
            conversation.state["blob"] = "x" * 200
        elif message == "set":
            conversation.state["items"] = {1, 2}
        else:
            conversation.state["last"] = message
        await conversation.say("ok")

    task = asyncio.create_task(bot.run())
    try:
        await asyncio.wait_for(bot.ready.wait(), 10)
        ivan = await customer(make_client, relay, "ivan")
        for message in ("small", "big", "set", "after"):
            await ivan.client.send("shop", message)
            assert await ivan.text() == "ok"
        for _ in range(50):
            if store.state("ivan") == {"last": "after"}:
                break
            await asyncio.sleep(0.05)
        assert store.state("ivan") == {"last": "after"}
        assert bot.stats.handler_errors == 2
    finally:
        bot.stop()
        await asyncio.wait_for(task, 10)
        await client.close()
        store.close()


async def test_a_message_committed_while_the_bot_was_down_is_answered_once_on_start(
    relay, make_client, run_bot
) -> None:
    business = make_client(relay.url, "parcels")
    async with business:
        await business.wait_connected(10)
    jane = await customer(make_client, relay, "jane")
    # The business's client receives and commits the message, and the bot never sees it: as if the
    # bot's process died between the client's commit and the handler.
    lone = make_client(relay.url, "parcels")
    async with lone:
        await jane.client.send("parcels", "PD123456")
        assert isinstance(await lone.receive(timeout=10), Message)
    bot = await run_bot(
        relay, "parcels", "parcel_bot.py", client=make_client(relay.url, "parcels"), step="3600"
    )
    assert await jane.text() == "Parcel PD123456 is at the sorting centre."
    offer = await jane.offer()
    assert bot.stats.handled == 1
    # A structured reply the bot missed is recovered from the history as a reply, too.
    await run_bot.stop(bot)
    lone = make_client(relay.url, "parcels")
    async with lone:
        await send_choice(jane.client, "parcels", offer, 1)
        assert isinstance(await lone.receive(timeout=10), Message)
    bot = await run_bot(
        relay, "parcels", "parcel_bot.py", client=make_client(relay.url, "parcels"), step="3600"
    )
    assert "you will get a message when parcel PD123456 moves" in await jane.text()
    # Started once more, it answers nothing twice.
    await run_bot.stop(bot)
    bot = await run_bot(
        relay, "parcels", "parcel_bot.py", client=make_client(relay.url, "parcels"), step="3600"
    )
    assert await jane.quiet(1.0) == []
    assert bot.stats.handled == 0 and bot.store.is_subscribed("jane", "parcel:PD123456")
