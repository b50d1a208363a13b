"""Quick-reply offers and replies: round trips, every refusal typed, the fallback rule, and a real relay."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import Message, envelope
from client.structured import (
    MAX_OPTIONS,
    LabelError,
    QuickReplies,
    QuickReply,
    QuickReplyOption,
    StructuredMessageError,
    TooManyOptionsError,
    UnknownOfferError,
    UnknownOptionError,
    decode_offer,
    decode_reply,
    encode_offer,
    encode_reply,
    offer_fallback,
    reply_from_text,
    resolve_reply,
)
from e2e.errors import DecodeError

pytest_plugins = ["client_fixtures"]

OFFER = QuickReplies(
    b"\x01" * 8,
    "What would you like to do?",
    (QuickReplyOption("track", "Track a parcel"), QuickReplyOption("help", "Talk to a person")),
)


def _raw_offer(
    options: list[tuple[str, str]], prompt: str = "Pick one", fallback: str | None = None
) -> bytes:
    """An offer's body written by hand, so that the decoder sees what no encoder would make."""
    payload = b"\x01" + bytes(8) + len(prompt.encode()).to_bytes(2, "big") + prompt.encode()
    payload += bytes((len(options),))
    for option_id, label in options:
        payload += (
            bytes((len(option_id),)) + option_id.encode() + bytes((len(label.encode()),)) + label.encode()
        )
    if fallback is None:
        lines = [prompt, ""] + [f"{n}. {label}" for n, (_, label) in enumerate(options, 1)]
        fallback = "\n".join([*lines, f"Reply with a number from 1 to {len(options)}."])
    return envelope.with_fallback(fallback, payload)


def test_an_offer_round_trips_and_its_fallback_is_the_numbered_list() -> None:
    body = encode_offer(OFFER)
    assert decode_offer(body) == OFFER
    assert offer_fallback(OFFER) == (
        "What would you like to do?\n\n1. Track a parcel\n2. Talk to a person\n"
        "Reply with a number from 1 to 2."
    )
    assert envelope.split_fallback(body)[0] == offer_fallback(OFFER)


def test_a_reply_round_trips_and_resolves_against_the_offer() -> None:
    reply = OFFER.reply(2)
    assert decode_reply(encode_reply(reply)) == reply
    assert envelope.split_fallback(encode_reply(reply))[0] == "2"
    assert resolve_reply({OFFER.offer_id: OFFER}, reply).id == "help"


def test_too_many_or_no_options_are_refused() -> None:
    options = [(f"o{i}", f"Option {i}") for i in range(MAX_OPTIONS + 1)]
    with pytest.raises(TooManyOptionsError):
        decode_offer(_raw_offer(options))
    with pytest.raises(TooManyOptionsError):
        decode_offer(_raw_offer([]))
    with pytest.raises(TooManyOptionsError):
        QuickReplies(bytes(8), "p", tuple(QuickReplyOption(i, label) for i, label in options))
    assert len(decode_offer(_raw_offer(options[:MAX_OPTIONS])).options) == MAX_OPTIONS


@pytest.mark.parametrize(
    "label",
    [
        "x" * 41,
        "Track\u202eparcel",
        "Track\x1b[2Jparcel",
        "Tr\u0430ck",
        "Ｔrack",
        "Track\nparcel",
        " Track",
        "",
    ],
)
def test_oversized_and_unsafe_labels_are_refused(label: str) -> None:
    with pytest.raises(LabelError) as caught:
        decode_offer(_raw_offer([("a", label)]))
    assert isinstance(caught.value, DecodeError)
    with pytest.raises(LabelError):
        QuickReplyOption("a", label)


def test_a_label_of_many_bytes_is_refused_by_its_size() -> None:
    with pytest.raises(LabelError):
        decode_offer(_raw_offer([("a", "é" * 100)]))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"\x00\x05ab",
        envelope.with_fallback("x", b""),
        envelope.with_fallback("x", b"\x02" + bytes(8)),
        _raw_offer([("a", "One")], fallback="Something else entirely"),
        _raw_offer([("a", "One"), ("a", "Two")]),
        _raw_offer([("a", "One"), ("b", "one")]),
        _raw_offer([("A!", "One")]),
        _raw_offer([("a", "One")]) + b"\x00",
    ],
)
def test_malformed_offers_are_refused(body: bytes) -> None:
    with pytest.raises(StructuredMessageError):
        decode_offer(body)


def test_replies_to_offers_never_made_or_options_never_offered_are_refused() -> None:
    offers = {OFFER.offer_id: OFFER}
    with pytest.raises(UnknownOfferError):
        resolve_reply(offers, QuickReply(b"\x02" * 8, "track", 1))
    with pytest.raises(UnknownOptionError):
        resolve_reply(offers, QuickReply(OFFER.offer_id, "refund", 1))
    with pytest.raises(UnknownOptionError):
        # The right option at the wrong number: the fallback and the option would disagree.
        resolve_reply(offers, QuickReply(OFFER.offer_id, "track", 2))
    with pytest.raises(UnknownOptionError):
        OFFER.reply(3)


@pytest.mark.parametrize("fallback", ["", "0", "01", "x", "111", "١"])
def test_a_reply_whose_fallback_is_not_its_number_is_refused(fallback: str) -> None:
    body = envelope.with_fallback(fallback, b"\x01" + bytes(8) + b"\x01a")
    with pytest.raises(StructuredMessageError):
        decode_reply(body)


def test_plain_text_numbers_answer_an_offer() -> None:
    assert reply_from_text(OFFER, " 2 ") == OFFER.reply(2)
    assert reply_from_text(OFFER, "1.") == OFFER.reply(1)
    for text in ("3", "0", "two", "", "1 please", "²"):
        assert reply_from_text(OFFER, text) is None


def test_a_client_that_does_not_know_a_newer_type_shows_its_fallback() -> None:
    plaintext = (
        b"\x02" + bytes(16) + bytes(8) + bytes((77,)) + envelope.with_fallback("Hello there", b"\xff" * 9)
    )
    decoded = envelope.decode(plaintext)
    assert decoded.content_type == envelope.CONTENT_TEXT and decoded.body == b"Hello there"
    with pytest.raises(DecodeError):
        envelope.decode(b"\x02" + bytes(16) + bytes(8) + bytes((77,)) + b"\x00\x09short")


@given(st.binary(max_size=200))
def test_random_bodies_raise_only_the_typed_error(body: bytes) -> None:
    for decode in (decode_offer, decode_reply):
        with contextlib.suppress(StructuredMessageError):
            decode(body)


async def test_an_offer_and_its_reply_through_a_real_relay(relay, make_client) -> None:
    business = make_client(relay.url, "shop")
    customer = make_client(relay.url, "carol")
    async with business, customer:
        await business.wait_connected(10)
        await customer.wait_connected(10)
        await business.send("carol", encode_offer(OFFER), content_type=envelope.CONTENT_QUICK_REPLIES)
        received = await customer.receive(timeout=10)
        assert isinstance(received, Message) and received.content_type == envelope.CONTENT_QUICK_REPLIES
        offer = decode_offer(received.body)
        assert offer == OFFER
        await customer.send("shop", encode_reply(offer.reply(1)), content_type=envelope.CONTENT_QUICK_REPLY)
        answer = await business.receive(timeout=10)
        assert isinstance(answer, Message) and answer.content_type == envelope.CONTENT_QUICK_REPLY
        assert resolve_reply({OFFER.offer_id: OFFER}, decode_reply(answer.body)).id == "track"


_LABELS = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9]| (?! )){0,38}[A-Za-z0-9]", fullmatch=True)


@given(
    st.binary(min_size=8, max_size=8),
    st.text(max_size=200),
    st.lists(
        st.tuples(st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True), _LABELS),
        min_size=1,
        max_size=MAX_OPTIONS,
        unique_by=(lambda option: option[0], lambda option: option[1].casefold()),
    ),
)
def test_every_valid_offer_round_trips_and_every_number_resolves(offer_id, prompt, options) -> None:
    try:
        offer = QuickReplies(offer_id, prompt, tuple(QuickReplyOption(i, label) for i, label in options))
    except StructuredMessageError:
        # (A prompt of lone surrogates is not valid Unicode: refused by its typed error.)
        return
    assert decode_offer(encode_offer(offer)) == offer
    for number in range(1, len(options) + 1):
        reply = decode_reply(encode_reply(offer.reply(number)))
        assert resolve_reply({offer_id: offer}, reply) == offer.options[number - 1]
        assert reply_from_text(offer, str(number)) == reply


def test_the_frozen_version_1_bodies_still_decode() -> None:
    import json
    from pathlib import Path

    fixture = json.loads(
        (Path(__file__).resolve().parents[1] / "fixtures" / "quick-replies-v1.json").read_text()
    )
    offer = decode_offer(bytes.fromhex(fixture["offer"]["body"]))
    assert offer.offer_id.hex() == fixture["offer"]["offer_id"]
    assert offer.prompt == fixture["offer"]["prompt"]
    assert [[o.id, o.label] for o in offer.options] == fixture["offer"]["options"]
    reply = decode_reply(bytes.fromhex(fixture["reply"]["body"]))
    assert (reply.offer_id.hex(), reply.option_id, reply.number) == (
        fixture["reply"]["offer_id"],
        fixture["reply"]["option_id"],
        fixture["reply"]["number"],
    )
    # This version still writes exactly those bytes.
    assert encode_offer(offer).hex() == fixture["offer"]["body"]
    assert encode_reply(reply).hex() == fixture["reply"]["body"]
