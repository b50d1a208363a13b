"""A parcel-tracking service for ``e2e-bot``: look up a tracking number, subscribe, get notified.

Run it (docs/business.md)::

    e2e-bot client.examples.parcel_bot --account parcels --data parcels-data --relay ws://127.0.0.1:8765 \
        --certificate parcels.cert --set step=20

A customer sends a tracking number (``PD`` and six digits); the bot answers with the parcel's
status and offers updates as quick replies.  A customer who picks "Notify me" is subscribed to the
parcel's topic; the depot feed (simulated here: every ``step`` seconds each watched parcel moves on
one stage) then notifies the subscribers, and only them.  "stop" unsubscribes from everything.

The depot is made up: parcels whose number ends in an even digit start at the sorting centre, the
others are already out for delivery.  A real service would read its own tracking system here.
"""

from __future__ import annotations

import asyncio
import re

from client.bot import Bot, Conversation
from client.structured import QuickReplies, QuickReplyOption

STAGES = ("is at the sorting centre", "has left the depot", "is out for delivery", "has been delivered")
TRACKING_NUMBER = re.compile(r"\bPD\d{6}\b")
GREETING = "Hello from Parcel Depot. Send me a tracking number (like PD123456) and I will look it up."


class Depot:
    """The simulated tracking system: the stage of every parcel someone asked about."""

    def __init__(self) -> None:
        self.stages: dict[str, int] = {}

    def stage(self, number: str) -> int:
        if number not in self.stages:
            self.stages[number] = 0 if int(number[-1]) % 2 == 0 else 2
        return self.stages[number]

    def advance(self, number: str) -> str | None:
        """Move a parcel on one stage; its new status, or None if it was delivered already."""
        stage = self.stage(number)
        if stage + 1 >= len(STAGES):
            return None
        self.stages[number] = stage + 1
        return STAGES[stage + 1]


def setup(bot: Bot) -> None:
    depot = Depot()
    step = float(bot.options.get("step", "30"))

    @bot.on_text
    async def text(conversation: Conversation, message: str) -> None:
        text = message.strip().upper()
        if text == "STOP":
            for topic in bot.store.topics(conversation.customer):
                conversation.unsubscribe(topic)
            await conversation.say("You will get no more parcel updates.")
            return
        found = TRACKING_NUMBER.search(text)
        if found is None:
            await conversation.say(GREETING)
            return
        number = found.group()
        conversation.state["parcel"] = number
        await conversation.say(f"Parcel {number} {STAGES[depot.stage(number)]}.")
        if depot.stage(number) + 1 < len(STAGES) and not conversation.is_subscribed(f"parcel:{number}"):
            await conversation.offer(
                f"Shall I tell you when parcel {number} moves?",
                [("notify", "Notify me of updates"), ("no", "No, thanks")],
            )

    @bot.on_reply
    async def reply(conversation: Conversation, option: QuickReplyOption, offer: QuickReplies) -> None:
        number = conversation.state.get("parcel")
        if option.id == "notify" and isinstance(number, str):
            conversation.subscribe(f"parcel:{number}")
            await conversation.say(
                f"Done: you will get a message when parcel {number} moves. Send stop to end."
            )
        else:
            await conversation.say("All right. Send another tracking number any time.")

    @bot.background
    async def feed(bot: Bot) -> None:
        while True:
            await asyncio.sleep(step)
            for number in list(depot.stages):
                topic = f"parcel:{number}"
                if not bot.store.subscribers(topic):
                    continue
                status = depot.advance(number)
                if status is not None:
                    await bot.notify_subscribers(topic, f"Update: parcel {number} {status}.")
