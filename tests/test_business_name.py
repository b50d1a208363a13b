"""Business-name certificates: issue and verify, every refusal typed, the display-text rule, properties."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.business_name import (
    BusinessName,
    CertificateExpiredError,
    CertificateFormatError,
    CertificateNotYetValidError,
    CertificateSignatureError,
    CertificateSubjectError,
    UnsafeNameError,
    UnsafeTextError,
    check_display_text,
    decode_certificate,
    issue_certificate,
    verify_certificate,
)
from e2e.errors import DecodeError, InvalidSignatureError
from e2e.keys import KeyPair

DIRECTORY = KeyPair.generate(os.urandom)
BUSINESS = KeyPair.generate(os.urandom)
START, END = 1_000_000, 2_000_000


def _issue(name: str = "Parcel Depot", account: str = "parcels", key: KeyPair = BUSINESS) -> bytes:
    return issue_certificate(DIRECTORY, BusinessName(account, key.public_key, name, START, END), os.urandom)


def _verify(certificate: bytes, **changes: object) -> BusinessName:
    options: dict[str, object] = {
        "account": "parcels",
        "identity_key": BUSINESS.public_key,
        "now_ms": START + 1,
    }
    options.update(changes)
    return verify_certificate(certificate, DIRECTORY.public_key, **options)  # type: ignore[arg-type]


def test_a_certificate_verifies_and_gives_its_fields() -> None:
    name = _verify(_issue())
    assert (name.account, name.display_name, name.not_before, name.not_after) == (
        "parcels",
        "Parcel Depot",
        START,
        END,
    )
    assert name.identity_key == BUSINESS.public_key


def test_the_validity_period_is_inclusive_at_both_ends() -> None:
    certificate = _issue()
    _verify(certificate, now_ms=START)
    _verify(certificate, now_ms=END)
    with pytest.raises(CertificateNotYetValidError):
        _verify(certificate, now_ms=START - 1)
    with pytest.raises(CertificateExpiredError):
        _verify(certificate, now_ms=END + 1)


def test_a_certificate_for_another_key_or_account_is_refused() -> None:
    certificate = _issue()
    with pytest.raises(CertificateSubjectError):
        _verify(certificate, identity_key=KeyPair.generate(os.urandom).public_key)
    with pytest.raises(CertificateSubjectError):
        _verify(certificate, account="parcels2")


def test_a_forged_certificate_is_refused() -> None:
    forger = KeyPair.generate(os.urandom)
    forged = issue_certificate(
        forger, BusinessName("parcels", BUSINESS.public_key, "Parcel Depot", START, END), os.urandom
    )
    with pytest.raises(CertificateSignatureError) as caught:
        _verify(forged)
    assert isinstance(caught.value, InvalidSignatureError)


@pytest.mark.parametrize("position", range(0, 120, 7))
def test_any_flipped_bit_is_refused(position: int) -> None:
    certificate = bytearray(_issue())
    certificate[position % len(certificate)] ^= 0x01
    with pytest.raises((CertificateSignatureError, CertificateFormatError, CertificateSubjectError)):
        _verify(bytes(certificate))


def test_layout_errors_are_format_errors() -> None:
    certificate = _issue()
    for bad in (b"", certificate[:-1], certificate + b"\x00", b"\x02" + certificate[1:], certificate[:10]):
        with pytest.raises(CertificateFormatError) as caught:
            decode_certificate(bad)
        assert isinstance(caught.value, DecodeError)


def test_a_signed_unsafe_name_is_still_refused_when_decoding() -> None:
    # A directory that signed a name with a bidirectional override (by hand, past BusinessName's
    # own check) does not get it shown: decoding refuses it before the signature is even looked at.
    name = BusinessName("parcels", BUSINESS.public_key, "Parcel Depot", START, END)
    body = bytearray(name.signed_bytes())
    at = body.index(b"Parcel Depot")
    body[at : at + 3] = "\u202e".encode()
    from e2e.business_name import SIGNATURE_CONTEXT

    certificate = bytes(body) + DIRECTORY.sign(SIGNATURE_CONTEXT + bytes(body), os.urandom)
    with pytest.raises(UnsafeNameError):
        _verify(certificate)


@pytest.mark.parametrize(
    "name",
    [
        "Parcel\u202eDepot",  # right-to-left override
        "Parcel\u200bDepot",  # zero-width space
        "Parcel\x1b[31mDepot",  # a terminal escape
        "Parcel\nDepot",
        "P\u0430ypal",  # a Cyrillic а among Latin letters
        "Ｐａｙｐａｌ",  # full-width letters
        "𝐏aypal",  # a mathematical bold P
        "Paypal\u00a0Inc",  # a no-break space
        " Paypal",
        "Paypal ",
        "Pay  pal",
        "Pay\u2215pal",  # division slash
        "Pa\u0301\u0301\u0301ypal",  # stacked marks
        "Pay\u02bcpal",  # a modifier letter apostrophe
        "Pay\ue000pal",  # private use
        "Pay١pal",  # an Arabic-Indic digit
        "",
        "x" * 65,
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        BusinessName("parcels", BUSINESS.public_key, name, START, END)


@pytest.mark.parametrize(
    "name",
    ["Parcel Depot", "Café Olé", "Ατλας Πτήσεις", "Аэрофлот", "日本郵便 ゆうパック", "Flights & Co. (24/7)"],
)
def test_ordinary_names_in_one_script_are_accepted(name: str) -> None:
    assert _verify(_issue(name)).display_name == name


def test_impossible_fields_are_refused_when_issuing() -> None:
    with pytest.raises(CertificateFormatError):
        BusinessName("Parcels", BUSINESS.public_key, "Parcel Depot", START, END)
    with pytest.raises(CertificateFormatError):
        BusinessName("parcels", BUSINESS.public_key, "Parcel Depot", END, START)
    with pytest.raises(CertificateFormatError):
        BusinessName("parcels", BUSINESS.public_key, "Parcel Depot", -1, START)


@given(st.text(max_size=40))
def test_the_text_rule_either_accepts_or_raises_its_error(text: str) -> None:
    try:
        check_display_text(text, max_chars=40)
    except UnsafeTextError:
        return
    # What it accepts is printable, stable under NFKC, and free of controls.
    assert text.isprintable()
    assert text == text.strip()


@given(st.binary(max_size=300))
def test_random_bytes_never_verify(data: bytes) -> None:
    with pytest.raises((CertificateFormatError, CertificateSignatureError, CertificateSubjectError)):
        _verify(data)
