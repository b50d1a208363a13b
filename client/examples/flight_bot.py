"""A flight-status and booking service for ``e2e-bot``, driven by quick replies.

Run it (docs/business.md)::

    e2e-bot client.examples.flight_bot --account flights --data flights-data --relay ws://127.0.0.1:8765

Any message gets the menu (flight status, change a booking, talk to an agent) as quick replies.
"Flight status" asks for a flight number and answers from the timetable below; "Change my booking"
offers three departures and confirms the one picked with a booking reference kept in the
customer's conversation state.  A customer whose client shows only the fallback text answers with
the option's number, which works the same.

The timetable is made up; a real service would ask its own systems.
"""

from __future__ import annotations

import hashlib
import re

from client.bot import Bot, Conversation
from client.structured import QuickReplies, QuickReplyOption

FLIGHT = re.compile(r"[A-Z]{2}\d{2,4}")
TIMETABLE = {
    "EZ1234": "on time, departing 09:15 from gate B7",
    "BA2490": "delayed by 40 minutes, now departing 11:05 from gate A3",
    "LH0903": "boarding at gate C12",
}
MENU = [("status", "Flight status"), ("rebook", "Change my booking"), ("agent", "Talk to an agent")]
DEPARTURES = [("mon", "Monday 09:15"), ("tue", "Tuesday 14:40"), ("wed", "Wednesday 07:05")]


def setup(bot: Bot) -> None:
    async def menu(conversation: Conversation) -> None:
        conversation.state.pop("awaiting", None)
        await conversation.offer("Welcome to Skyway Flights. How can I help?", MENU)

    @bot.on_text
    async def text(conversation: Conversation, message: str) -> None:
        number = message.strip().upper().replace(" ", "")
        if conversation.state.get("awaiting") == "flight" and FLIGHT.fullmatch(number):
            status = TIMETABLE.get(number)
            conversation.state.pop("awaiting")
            if status is None:
                await conversation.say(f"I have no flight {number} today.")
            else:
                await conversation.say(f"Flight {number} is {status}.")
            return
        await menu(conversation)

    @bot.on_reply
    async def reply(conversation: Conversation, option: QuickReplyOption, offer: QuickReplies) -> None:
        if option.id == "status":
            conversation.state["awaiting"] = "flight"
            await conversation.say("Which flight? Send its number, like EZ1234.")
        elif option.id == "rebook":
            await conversation.offer("Which departure would you like instead?", DEPARTURES)
        elif option.id == "agent":
            await conversation.say("An agent will write to you here within the hour.")
        elif option.id in dict(DEPARTURES):
            seed = f"{conversation.customer}/{option.id}".encode()
            reference = hashlib.sha256(seed).hexdigest()[:6].upper()
            conversation.state["booking"] = {"departure": option.label, "reference": reference}
            await conversation.say(f"Booked: {option.label}. Your booking reference is {reference}.")
