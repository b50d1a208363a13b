"""The demo's business step: Alice asks the parcel bot, picks a quick reply, and is notified later.

What this module owns
---------------------
:func:`business_step`, the last step of ``make demo`` (step 12).  A directory key (made here, standing for
whoever vouches for business names) signs a certificate for the ``parcels`` account and its
identity key; the parcel service (:mod:`client.examples.parcel_bot`) runs on the bot library
(:mod:`client.bot`) over an ordinary client, posts its certificate to the relay, and answers
Alice.  The middle column shows what the relay holds: each message's ciphertext (read from its
database between the recipient's commit and its acknowledgement) and the certificate it serves,
which it could not have made; the left column shows Alice's client verifying the name against the
directory key and the identity key of her session with the bot.

What it does not know
---------------------
How the rest of the demo runs; it uses the demo's people, columns and relay database.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import TYPE_CHECKING

from client.bot import Bot, BotStore
from client.business import VerifiedName, check_business_name, send_choice, structured_content
from client.events import Message
from client.examples import parcel_bot
from client.structured import QuickReplies
from e2e.business_name import BusinessName, issue_certificate
from e2e.explain import fingerprint
from e2e.keys import KeyPair

if TYPE_CHECKING:
    from client.demo.script import _Demo

__all__ = ["QUESTION", "DISPLAY_NAME", "business_step"]

QUESTION = "Where is my parcel PD123456?"
DISPLAY_NAME = "Parcel Depot"
_DAY_MS = 86_400_000


async def business_step(demo: _Demo) -> None:
    """Run step 12 of the demo (raises :class:`client.demo.script.DemoFailed` when a part fails)."""
    from client.demo.script import DemoFailed, _Person, _relay_cell

    columns = demo.columns
    demo._heading("12. Alice asks a business: the parcel bot, with a verified name")
    directory = KeyPair.generate(os.urandom)
    parcels = _Person("parcels", 2)
    bot_client = await demo._online(parcels, create=True)
    now = int(time.time() * 1000)
    certificate = issue_certificate(
        directory,
        BusinessName("parcels", bot_client.identity_key, DISPLAY_NAME, now - _DAY_MS, now + 365 * _DAY_MS),
        os.urandom,
    )
    store = BotStore(demo.directory / "parcels-bot.sqlite3")
    bot = Bot(bot_client, store, certificate=certificate, options={"step": "1.5"})
    parcel_bot.setup(bot)
    runner = asyncio.create_task(bot.run())
    try:
        await asyncio.wait_for(bot.ready.wait(), demo.options.timeout)
        alice = demo.alice.running
        served = await alice.relay_request("get_business_certificate", account="parcels")
        columns.row(
            f"directory key {fingerprint(directory.public_key.serialize())}\n(configured in Alice's client)",
            f"serves parcels' certificate ({len(base64.b64decode(served['certificate']))} B):\n"
            f'"{DISPLAY_NAME}" for its identity key,\n'
            "signed by the directory key (the relay cannot make one)",
            "parcels: a bot on an ordinary account\n(client.bot over Client; it posted its certificate)",
        )

        async def alice_receives() -> tuple[Message, object, str]:
            event = await alice.receive(demo.options.timeout)
            if not isinstance(event, Message):
                raise DemoFailed(f"alice got {event!r} instead of the bot's answer")
            relay = _relay_cell(demo.captured.get(event.message_id), "deleted after the ack")
            return event, structured_content(event), relay

        message_id = await alice.send("parcels", QUESTION)
        await alice.flush(demo.options.timeout)
        demo.tally.plaintexts.append(QUESTION.encode())
        _answer, text, relay_answer = await alice_receives()
        columns.row(
            f'{demo.send_arrow} "{QUESTION}"',
            _relay_cell(demo.captured.get(message_id), "deleted after the ack"),
            "reads it, looks it up",
        )
        columns.row(f'{demo.receive_arrow} "{text}"', relay_answer, f"{demo.send_arrow} the status")
        demo.tally.plaintexts.append(str(text).encode())

        _offer, offer, relay_offer = await alice_receives()
        if not isinstance(offer, QuickReplies):
            raise DemoFailed("the bot did not offer quick replies")
        labels = "\n".join(f"  {n}. {option.label}" for n, option in enumerate(offer.options, 1))
        columns.row(
            f"{demo.receive_arrow} {offer.prompt}\n{labels}", relay_offer, f"{demo.send_arrow} quick replies"
        )
        status = await check_business_name(alice, "parcels", directory.public_key)
        if not isinstance(status, VerifiedName) or status.display_name != DISPLAY_NAME:
            raise DemoFailed(f"the bot's name did not verify: {status}")
        columns.row(
            f'{demo.tick} parcels is "{DISPLAY_NAME}": certificate\nverified for the key of this session',
            "",
            "",
        )

        reply = await send_choice(alice, "parcels", offer, 1)
        await alice.flush(demo.options.timeout)
        _confirmation, text, relay_confirmation = await alice_receives()
        columns.row(
            f"{demo.send_arrow} picks {reply.number}: {offer.options[0].label}",
            "",
            f"subscribes alice to parcel:PD123456\n{demo.send_arrow} the confirmation",
        )
        columns.row(f'{demo.receive_arrow} "{text}"', relay_confirmation, "")
        demo.tally.plaintexts.append(str(text).encode())

        _notification, text, relay_notification = await alice_receives()
        if "left the depot" not in str(text):
            raise DemoFailed(f"the notification said {text!r}")
        columns.row(
            f'{demo.receive_arrow} later: "{text}"',
            relay_notification,
            f"the depot feed moved the parcel:\n{demo.send_arrow} only subscribers are notified",
        )
        demo.tally.plaintexts.append(str(text).encode())
        demo.tally.sent += 2
        demo.tally.received += 4
    finally:
        bot.stop()
        await asyncio.wait_for(runner, demo.options.timeout)
        await demo._offline(parcels)
        store.close()
