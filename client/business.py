"""A customer's side of businesses: is this contact's name verified, and what did it send?

What this module owns
---------------------
* :func:`check_business_name`: fetch the certificate a contact posted on the relay
  (``get_business_certificate``) and verify it (:func:`e2e.business_name.verify_certificate`)
  against the configured directory public key, the identity key *this client's session with the
  contact uses* (from the local store, never from the relay), the contact's account name and this
  client's clock.  The answer is a :class:`VerifiedName` only when every check passes; anything
  else (no directory key configured, no certificate, no session yet, forged, expired, for another
  key, an unsafe name) is an :class:`UnverifiedName` that says why, and is never shown as the brand.
* :func:`structured_content`: what a received :class:`client.events.Message` carries, decoded
  strictly: text, a :class:`client.structured.QuickReplies` offer, or a
  :class:`client.structured.QuickReply`.
* :func:`make_offer`, :func:`send_offer` and :func:`send_choice`: make and send an offer, or send
  the reply picking one of its options.

Invariants
----------
Verification is recomputed on each call (cheap: one signature check), so an expired certificate or
a changed identity key is noticed the next time the name is shown.  A relay that lies can only make
a name *unverified* (serve nothing, or serve garbage); it cannot make one verified.

What it does not know
---------------------
How the name is drawn (the chat marks verified names with ``✓``), or who the directory is.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from dataclasses import dataclass

from client import envelope, transport
from client.client import Client
from client.events import Message
from client.structured import (
    OFFER_ID_LENGTH,
    QuickReplies,
    QuickReply,
    QuickReplyOption,
    decode_offer,
    decode_reply,
    encode_offer,
    encode_reply,
)
from e2e.business_name import CertificateError, verify_certificate
from e2e.keys import PublicKey, Rng

__all__ = [
    "VerifiedName",
    "UnverifiedName",
    "NameStatus",
    "check_business_name",
    "structured_content",
    "make_offer",
    "send_offer",
    "send_choice",
]


@dataclass(frozen=True, slots=True)
class VerifiedName:
    """``account``'s display name, vouched for by the configured directory until ``not_after`` (ms)."""

    account: str
    display_name: str
    not_after: int


@dataclass(frozen=True, slots=True)
class UnverifiedName:
    """No verified name for ``account``; ``reason`` says why (shown to the user, never the brand)."""

    account: str
    reason: str


NameStatus = VerifiedName | UnverifiedName


async def check_business_name(
    client: Client,
    account: str,
    directory_key: PublicKey | None,
    *,
    now_ms: int | None = None,
    timeout: float = 10.0,
) -> NameStatus:
    """Whether ``account`` has a valid business-name certificate for the key we talk to it with,
    at ``now_ms`` (default: the system clock); the relay gets ``timeout`` seconds to answer."""
    if directory_key is None:
        return UnverifiedName(account, "no directory key is configured")
    contact = client.store.contact(account)
    if contact is None:
        return UnverifiedName(account, "no session yet: exchange a message first")
    try:
        answer = await asyncio.wait_for(
            client.relay_request("get_business_certificate", account=account), timeout
        )
    except transport.RelayError as error:
        if error.code == "not_found":
            return UnverifiedName(account, "no business-name certificate")
        return UnverifiedName(account, f"the relay refused: {error.code}")
    except (transport.TransportError, TimeoutError):
        # The connection dropped, or the answer was malformed: nothing is verified this time.
        return UnverifiedName(account, "the relay could not be asked")
    try:
        certificate = base64.b64decode(str(answer.get("certificate", "")), validate=True)
    except (binascii.Error, ValueError):
        return UnverifiedName(account, "the relay sent a malformed certificate")
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    try:
        name = verify_certificate(
            certificate,
            directory_key,
            account=account,
            identity_key=PublicKey.deserialize(contact.identity_key),
            now_ms=now_ms,
        )
    except CertificateError as error:
        return UnverifiedName(account, f"certificate refused ({type(error).__name__})")
    return VerifiedName(account, name.display_name, name.not_after)


def structured_content(message: Message) -> str | QuickReplies | QuickReply:
    """A received message's content: text, an offer or a reply; raises
    :class:`client.structured.StructuredMessageError` for a malformed structured one."""
    if message.content_type == envelope.CONTENT_QUICK_REPLIES:
        return decode_offer(message.body)
    if message.content_type == envelope.CONTENT_QUICK_REPLY:
        return decode_reply(message.body)
    return message.text


def make_offer(prompt: str, options: list[tuple[str, str]], rng: Rng = os.urandom) -> QuickReplies:
    """An offer of ``options`` (``(id, label)`` pairs) under a fresh random offer id."""
    return QuickReplies(
        rng(OFFER_ID_LENGTH), prompt, tuple(QuickReplyOption(option, label) for option, label in options)
    )


async def send_offer(client: Client, name: str, offer: QuickReplies) -> QuickReplies:
    """Send ``name`` a quick-reply offer (made by :func:`make_offer`)."""
    await client.send(name, encode_offer(offer), content_type=envelope.CONTENT_QUICK_REPLIES)
    return offer


async def send_choice(client: Client, name: str, offer: QuickReplies, number: int) -> QuickReply:
    """Answer ``offer`` (received from ``name``) with its option ``number`` (1-based)."""
    reply = offer.reply(number)
    await client.send(name, encode_reply(reply), content_type=envelope.CONTENT_QUICK_REPLY)
    return reply
