"""Structured messages: a prompt with quick-reply options, and the reply that picks one.

What this module owns
---------------------
Two envelope content types (:mod:`client.envelope`) and their versioned bodies:

* :data:`client.envelope.CONTENT_QUICK_REPLIES` (4) carries a :class:`QuickReplies`: a prompt and
  1 to :data:`MAX_OPTIONS` options, each an id (for the program) and a label (for the person);
* :data:`client.envelope.CONTENT_QUICK_REPLY` (5) carries a :class:`QuickReply`: the offer it
  answers and the id of the option picked.

Every content type from 4 on opens its body with a *fallback text* (``client.envelope``'s rule), so
a client that does not know the type shows that text instead.  Here the fallback is fixed by the
content, never chosen freely: for an offer it is :func:`offer_fallback` (the prompt, the numbered
labels and "Reply with a number from 1 to N."), for a reply the option's number.  A decoder checks
that the fallback is exactly the one the content implies, so a business cannot show clients that
render quick replies one thing and clients that show the fallback another.  The numbering is also
why a plain-text answer "2" means the second option (:func:`reply_from_text`).

Version 1 of the payload that follows the fallback::

    offer        version 0x01 ‖ offer id (8 bytes) ‖ prompt (2-byte length ‖ UTF-8, ≤ 1024 bytes)
                 ‖ count (1 byte, 1..MAX_OPTIONS) ‖ count × (id: 1-byte length ‖ [a-z0-9_-]{1,32}
                 ‖ label: 1-byte length ‖ UTF-8, ≤ MAX_LABEL_CHARS characters)
    reply        version 0x01 ‖ offer id (8 bytes) ‖ option id (1-byte length ‖ [a-z0-9_-]{1,32})

Invariants
----------
Decoding is strict and typed (all subclasses of :class:`StructuredMessageError`, itself an
:class:`e2e.errors.DecodeError`): :class:`TooManyOptionsError`, :class:`LabelError` (oversized, or
breaking :func:`e2e.business_name.check_display_text`: control, invisible or look-alike
characters), duplicate ids or labels, trailing bytes.  Encoding checks the same rules, so we never
send what we would refuse.  :func:`resolve_reply` refuses a reply to an offer never made
(:class:`UnknownOfferError`) or naming an option that offer did not have
(:class:`UnknownOptionError`): the party that made the offers keeps them and checks every reply
against them.  The prompt is text from the network: it is shown through the terminal's sanitising
like any message text, never raw.

What it does not know
---------------------
Who keeps the offers (the bot library's store, :mod:`client.bot`), how a client draws the options.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from client import envelope
from e2e.business_name import UnsafeTextError, check_display_text
from e2e.errors import DecodeError

__all__ = [
    "STRUCTURED_VERSION",
    "MAX_OPTIONS",
    "MAX_LABEL_CHARS",
    "MAX_PROMPT_BYTES",
    "OFFER_ID_LENGTH",
    "QuickReplyOption",
    "QuickReplies",
    "QuickReply",
    "offer_fallback",
    "encode_offer",
    "decode_offer",
    "encode_reply",
    "decode_reply",
    "resolve_reply",
    "reply_from_text",
    "StructuredMessageError",
    "TooManyOptionsError",
    "LabelError",
    "UnknownOfferError",
    "UnknownOptionError",
]

STRUCTURED_VERSION: Final = 1
MAX_OPTIONS: Final = 10
MAX_LABEL_CHARS: Final = 40
MAX_PROMPT_BYTES: Final = 1024
OFFER_ID_LENGTH: Final = 8
_OPTION_ID: Final = re.compile(r"[a-z0-9_-]{1,32}")


class StructuredMessageError(DecodeError):
    """A quick-reply offer or reply that does not decode, or breaks one of its rules."""


class TooManyOptionsError(StructuredMessageError):
    """An offer with no options, or more than :data:`MAX_OPTIONS`."""


class LabelError(StructuredMessageError):
    """An option label that is too long or holds control, invisible or look-alike characters."""


class UnknownOfferError(StructuredMessageError):
    """A reply to an offer that was never made to this contact (or is no longer kept)."""


class UnknownOptionError(StructuredMessageError):
    """A reply naming an option the offer it answers did not have."""


@dataclass(frozen=True, slots=True)
class QuickReplyOption:
    """One option: ``id`` is for the program that made the offer, ``label`` is what a person sees."""

    id: str
    label: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or _OPTION_ID.fullmatch(self.id) is None:
            raise StructuredMessageError("an option id is 1 to 32 characters of a-z 0-9 _ -")
        try:
            check_display_text(self.label, max_chars=MAX_LABEL_CHARS, what="option label")
        except UnsafeTextError as error:
            raise LabelError(str(error)) from None


@dataclass(frozen=True, slots=True)
class QuickReplies:
    """An offer: a prompt and its options, under an ``offer_id`` the reply names."""

    offer_id: bytes
    prompt: str
    options: tuple[QuickReplyOption, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.offer_id, bytes) or len(self.offer_id) != OFFER_ID_LENGTH:
            raise StructuredMessageError(f"an offer id is {OFFER_ID_LENGTH} bytes")
        if not isinstance(self.prompt, str):
            raise StructuredMessageError("the prompt is a string")
        try:
            prompt_bytes = self.prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise StructuredMessageError("the prompt is valid Unicode") from None
        if len(prompt_bytes) > MAX_PROMPT_BYTES:
            raise StructuredMessageError(f"the prompt is at most {MAX_PROMPT_BYTES} bytes of UTF-8")
        if not isinstance(self.options, tuple) or not 1 <= len(self.options) <= MAX_OPTIONS:
            raise TooManyOptionsError(f"an offer has 1 to {MAX_OPTIONS} options")
        if any(not isinstance(option, QuickReplyOption) for option in self.options):
            raise StructuredMessageError("the options are QuickReplyOption values")
        if len({option.id for option in self.options}) != len(self.options):
            raise StructuredMessageError("option ids are distinct")
        if len({option.label.casefold() for option in self.options}) != len(self.options):
            raise LabelError("option labels are distinct")

    def option(self, option_id: str) -> QuickReplyOption:
        """The option called ``option_id``; :class:`UnknownOptionError` if the offer has none."""
        for option in self.options:
            if option.id == option_id:
                return option
        raise UnknownOptionError("the reply names an option this offer did not have")

    def reply(self, number: int) -> QuickReply:
        """The reply picking option ``number`` (1-based, as the fallback numbers them)."""
        if type(number) is not int or not 1 <= number <= len(self.options):
            raise UnknownOptionError(f"pick an option from 1 to {len(self.options)}")
        return QuickReply(self.offer_id, self.options[number - 1].id, number)


@dataclass(frozen=True, slots=True)
class QuickReply:
    """The answer to offer ``offer_id``: option ``option_id``, number ``number`` (1-based) in it."""

    offer_id: bytes
    option_id: str
    number: int

    def __post_init__(self) -> None:
        if not isinstance(self.offer_id, bytes) or len(self.offer_id) != OFFER_ID_LENGTH:
            raise StructuredMessageError(f"an offer id is {OFFER_ID_LENGTH} bytes")
        if not isinstance(self.option_id, str) or _OPTION_ID.fullmatch(self.option_id) is None:
            raise StructuredMessageError("an option id is 1 to 32 characters of a-z 0-9 _ -")
        if type(self.number) is not int or not 1 <= self.number <= MAX_OPTIONS:
            raise StructuredMessageError(f"an option number is 1 to {MAX_OPTIONS}")


def offer_fallback(offer: QuickReplies) -> str:
    """The text a client that does not know quick replies shows for ``offer``."""
    lines = [offer.prompt, ""] if offer.prompt else []
    lines += [f"{number}. {option.label}" for number, option in enumerate(offer.options, 1)]
    lines.append(f"Reply with a number from 1 to {len(offer.options)}.")
    return "\n".join(lines)


def _short(value: str) -> bytes:
    data = value.encode("utf-8")
    return bytes((len(data),)) + data


def encode_offer(offer: QuickReplies) -> bytes:
    """The body of a :data:`~client.envelope.CONTENT_QUICK_REPLIES` envelope (fallback included)."""
    prompt = offer.prompt.encode("utf-8")
    payload = b"".join(
        (
            bytes((STRUCTURED_VERSION,)),
            offer.offer_id,
            len(prompt).to_bytes(2, "big"),
            prompt,
            bytes((len(offer.options),)),
            *(_short(option.id) + _short(option.label) for option in offer.options),
        )
    )
    return envelope.with_fallback(offer_fallback(offer), payload)


def encode_reply(reply: QuickReply) -> bytes:
    """The body of a :data:`~client.envelope.CONTENT_QUICK_REPLY` envelope; its fallback is the number."""
    payload = bytes((STRUCTURED_VERSION,)) + reply.offer_id + _short(reply.option_id)
    return envelope.with_fallback(str(reply.number), payload)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int, what: str) -> bytes:
        if self._at + n > len(self._data):
            raise StructuredMessageError(f"the structured message ends inside its {what}")
        piece = self._data[self._at : self._at + n]
        self._at += n
        return piece

    def text(self, n: int, what: str) -> str:
        try:
            return self.take(n, what).decode("utf-8")
        except UnicodeDecodeError:
            raise StructuredMessageError(f"the {what} is not UTF-8") from None

    def done(self) -> None:
        if self._at != len(self._data):
            raise StructuredMessageError("trailing bytes after the structured message")


def _payload(body: bytes) -> tuple[str, _Reader]:
    try:
        fallback, payload = envelope.split_fallback(body)
    except DecodeError as error:
        raise StructuredMessageError(str(error)) from None
    reader = _Reader(payload)
    version = reader.take(1, "version")[0]
    if version != STRUCTURED_VERSION:
        raise StructuredMessageError(f"unknown structured message version {version}")
    return fallback, reader


def decode_offer(body: bytes) -> QuickReplies:
    """Parse an offer strictly; see the module docstring for what is refused."""
    fallback, reader = _payload(body)
    offer_id = reader.take(OFFER_ID_LENGTH, "offer id")
    prompt = reader.text(int.from_bytes(reader.take(2, "prompt length"), "big"), "prompt")
    count = reader.take(1, "option count")[0]
    if not 1 <= count <= MAX_OPTIONS:
        raise TooManyOptionsError(f"an offer has 1 to {MAX_OPTIONS} options, not {count}")
    raw_options = []
    for _ in range(count):
        option_id = reader.text(reader.take(1, "option id length")[0], "option id")
        label_bytes = reader.take(1, "label length")[0]
        # A label of more than 4 bytes a character cannot be within the limit: refuse it by size.
        if label_bytes > 4 * MAX_LABEL_CHARS:
            raise LabelError(f"an option label is at most {MAX_LABEL_CHARS} characters")
        raw_options.append((option_id, reader.text(label_bytes, "option label")))
    reader.done()
    offer = QuickReplies(offer_id, prompt, tuple(QuickReplyOption(i, label) for i, label in raw_options))
    if fallback != offer_fallback(offer):
        raise StructuredMessageError("the fallback text is not the one the offer implies")
    return offer


def decode_reply(body: bytes) -> QuickReply:
    """Parse a reply strictly (the option number comes from its fallback, which must be a number)."""
    fallback, reader = _payload(body)
    offer_id = reader.take(OFFER_ID_LENGTH, "offer id")
    option_id = reader.text(reader.take(1, "option id length")[0], "option id")
    reader.done()
    if not fallback.isascii() or not fallback.isdigit() or fallback.startswith("0") or len(fallback) > 2:
        raise StructuredMessageError("a reply's fallback text is its option number")
    return QuickReply(offer_id, option_id, int(fallback))


def resolve_reply(offers: Mapping[bytes, QuickReplies], reply: QuickReply) -> QuickReplyOption:
    """The option ``reply`` picks among the ``offers`` made to its sender; raises if it picks none.

    The option's number must match its position too, so the fallback an older client saw and the
    option the reply names agree.
    """
    offer = offers.get(reply.offer_id)
    if offer is None:
        raise UnknownOfferError("the reply answers an offer never made to this contact")
    option = offer.option(reply.option_id)
    if offer.options.index(option) + 1 != reply.number:
        raise UnknownOptionError("the reply's number is not its option's place in the offer")
    return option


def reply_from_text(offer: QuickReplies, text: str) -> QuickReply | None:
    """A plain-text answer to ``offer`` as a reply: "2" (or " 2. ") picks the second option.

    ``None`` when the text is not one of the offer's numbers (it is then an ordinary message).
    """
    stripped = text.strip().rstrip(".")
    if not stripped.isascii() or not stripped.isdigit() or len(stripped) > 2:
        return None
    number = int(stripped)
    if not 1 <= number <= len(offer.options):
        return None
    return offer.reply(number)
