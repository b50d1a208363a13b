"""Verified business names: a directory key's signature over (account, identity key, name, validity).

Theory
------
A business is an ordinary account in the protocol.  What makes its display name trustworthy is a
*certificate*: an XEdDSA signature (the project's Curve25519 keys, :meth:`e2e.keys.PublicKey.verify`)
by a **directory key** over a versioned encoding of the account name, the account's identity public
key, the display name and a validity period.  The directory's private key lives with whoever
vouches for names (the ``e2e-directory`` command); the relay only stores and serves certificates and
cannot make one.  A client that has the directory's public key configured verifies a certificate
against the contact it talks to: the name is shown as verified only when every check below passes.

Version 1 of the certificate::

    version        1 byte   0x01
    account        1 byte length ‖ ASCII account name (the relay's account alphabet, 1..64)
    identity_key   33 bytes the account's identity public key (0x05 ‖ X25519 u)
    display_name   1 byte length ‖ UTF-8, 1..64 characters (see :func:`check_display_text`)
    not_before     8 bytes  big-endian milliseconds since the epoch
    not_after      8 bytes  big-endian milliseconds since the epoch, > not_before
    signature      64 bytes XEdDSA over SIGNATURE_CONTEXT ‖ every byte above

The signed message starts with a fixed context string so that a directory signature can never be
taken for a signature of another kind (a prekey or an authentication proof), even if one key were
ever used for both.

The display-text rule
---------------------
:func:`check_display_text` is the one rule for text that a party other than the user chose and that
is shown as a label: a business name here, quick-reply labels in :mod:`client.structured`.  It
refuses, rather than repairs: control, format (including bidirectional overrides and zero-width
characters), private-use, unassigned and separator characters other than the plain space; leading,
trailing or doubled spaces; text that NFKC normalisation would change (full-width letters,
mathematical alphanumerics, ligatures, superscripts: the usual look-alike tricks); letters from more
than one script (a Cyrillic ``а`` among Latin letters), modifier letters, non-ASCII digits, and
punctuation or symbols outside a short list.  What it cannot catch is a name written wholly in
another script that happens to look like a Latin one; that judgement belongs to the directory when
it issues a certificate (see docs/business.md).

Invariants
----------
Sans-I/O: callers pass the directory key, the randomness for signing and the time.  Decoding is
strict (any other layout raises :class:`CertificateFormatError`), and verification raises a
subclass of :class:`CertificateError` and returns the certified fields only when the signature, the
validity period, the account, the identity key and the name all check out.

What it does not know
---------------------
Where certificates are kept or fetched (the relay's ``put_business_certificate`` and
``get_business_certificate`` ops), who runs the directory, and how a client displays a name.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from e2e.errors import DecodeError, E2EError, InvalidSignatureError
from e2e.keys import KeyPair, PublicKey, Rng

__all__ = [
    "CERTIFICATE_VERSION",
    "SIGNATURE_CONTEXT",
    "MAX_DISPLAY_NAME_CHARS",
    "BusinessName",
    "issue_certificate",
    "decode_certificate",
    "verify_certificate",
    "check_display_text",
    "CertificateError",
    "CertificateFormatError",
    "UnsafeTextError",
    "UnsafeNameError",
    "CertificateSignatureError",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "CertificateSubjectError",
]

CERTIFICATE_VERSION: Final = 1
SIGNATURE_CONTEXT: Final = b"e2e-relay business name certificate v1\x00"
MAX_DISPLAY_NAME_CHARS: Final = 64
_MAX_DISPLAY_NAME_BYTES: Final = 255
_SIGNATURE_LENGTH: Final = 64
_PUBLIC_KEY_LENGTH: Final = 33
_ACCOUNT: Final = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
_MAX_TIME: Final = (1 << 64) - 1

# Punctuation and symbols a label may hold: ASCII's printable ones and a few common others.  The
# rest (division slash, fraction slash, look-alike dashes and quotes) stays out.
_ALLOWED_MARKS: Final = frozenset("!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~") | frozenset("’–—·€£¥©®™°")
# Scripts that are written together (Japanese mixes kanji and kana, Korean hangul and hanja).
_SCRIPT_GROUPS: Final = {"CJK": "CJK", "HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK"}


class CertificateError(E2EError):
    """A business-name certificate that does not vouch for the name it carries."""


class UnsafeTextError(DecodeError):
    """Text refused by the display-text rule: control, invisible or look-alike characters, or too long."""


class CertificateFormatError(CertificateError, DecodeError):
    """Bytes that are not a version-1 certificate: wrong version, lengths, fields or trailing bytes."""


class UnsafeNameError(CertificateFormatError, UnsafeTextError):
    """A certificate whose display name breaks the display-text rule."""


class CertificateSignatureError(CertificateError, InvalidSignatureError):
    """A certificate the configured directory key did not sign (forged, altered, or another directory)."""


class CertificateExpiredError(CertificateError):
    """A certificate whose validity period ended before the time given."""


class CertificateNotYetValidError(CertificateError):
    """A certificate whose validity period starts after the time given."""


class CertificateSubjectError(CertificateError):
    """A valid certificate, but for another account or another identity key than the contact's."""


def _script(character: str) -> str:
    """The script of a letter, from the first word of its Unicode name (LATIN, CYRILLIC, CJK...)."""
    first = unicodedata.name(character, "UNKNOWN").split(" ", 1)[0]
    return _SCRIPT_GROUPS.get(first, first)


def check_display_text(text: str, *, max_chars: int, what: str = "text") -> None:
    """Raise :class:`UnsafeTextError` unless ``text`` may be shown as a label (see the module docstring)."""
    if not isinstance(text, str) or not text:
        raise UnsafeTextError(f"the {what} is a non-empty string")
    if len(text) > max_chars:
        raise UnsafeTextError(f"the {what} is at most {max_chars} characters")
    if unicodedata.normalize("NFKC", text) != text:
        raise UnsafeTextError(f"the {what} holds compatibility or look-alike characters (NFKC changes it)")
    if text != text.strip(" ") or "  " in text:
        raise UnsafeTextError(f"the {what} has no leading, trailing or doubled spaces")
    scripts: set[str] = set()
    previous_mark = False
    for character in text:
        category = unicodedata.category(character)
        code = f"U+{ord(character):04X}"
        if character == " ":
            previous_mark = False
            continue
        if category[0] == "L":
            if category == "Lm":
                raise UnsafeTextError(f"the {what} holds a modifier letter ({code})")
            scripts.add(_script(character))
        elif category in ("Mn", "Mc"):
            # One combining mark after a letter is writing; a stack of them hides what is under it.
            if previous_mark:
                raise UnsafeTextError(f"the {what} stacks combining marks ({code})")
            previous_mark = True
            continue
        elif category == "Nd":
            if not "0" <= character <= "9":
                raise UnsafeTextError(f"the {what} holds a non-ASCII digit ({code})")
        elif category[0] in "PS":
            if character not in _ALLOWED_MARKS:
                raise UnsafeTextError(f"the {what} holds a punctuation or symbol outside the list ({code})")
        else:
            raise UnsafeTextError(f"the {what} holds a control, invisible or separator character ({code})")
        previous_mark = False
    if len(scripts) > 1:
        raise UnsafeTextError(f"the {what} mixes scripts ({', '.join(sorted(scripts))})")
    if unicodedata.category(text[0]) in ("Mn", "Mc"):
        raise UnsafeTextError(f"the {what} does not start with a combining mark")


@dataclass(frozen=True, slots=True)
class BusinessName:
    """What a certificate vouches for: ``account``'s identity key and display name in a time window."""

    account: str
    identity_key: PublicKey
    display_name: str
    not_before: int
    not_after: int

    def __post_init__(self) -> None:
        if not isinstance(self.account, str) or _ACCOUNT.fullmatch(self.account) is None:
            raise CertificateFormatError("the account is a relay account name (1..64 of a-z 0-9 . _ @ + -)")
        if not isinstance(self.identity_key, PublicKey):
            raise CertificateFormatError("the identity key is a PublicKey")
        for value in (self.not_before, self.not_after):
            if type(value) is not int or not 0 <= value <= _MAX_TIME:
                raise CertificateFormatError("validity times are unsigned 64-bit milliseconds")
        if self.not_after <= self.not_before:
            raise CertificateFormatError("the validity period ends after it starts")
        try:
            check_display_text(self.display_name, max_chars=MAX_DISPLAY_NAME_CHARS, what="display name")
        except UnsafeTextError as error:
            raise UnsafeNameError(str(error)) from None
        if len(self.display_name.encode("utf-8")) > _MAX_DISPLAY_NAME_BYTES:
            raise UnsafeNameError(f"the display name is at most {_MAX_DISPLAY_NAME_BYTES} bytes of UTF-8")

    def signed_bytes(self) -> bytes:
        """The version-1 encoding of the fields (everything the signature covers after the context)."""
        account = self.account.encode("ascii")
        name = self.display_name.encode("utf-8")
        return b"".join(
            (
                bytes((CERTIFICATE_VERSION, len(account))),
                account,
                self.identity_key.serialize(),
                bytes((len(name),)),
                name,
                self.not_before.to_bytes(8, "big"),
                self.not_after.to_bytes(8, "big"),
            )
        )


def issue_certificate(directory_key: KeyPair, name: BusinessName, rng: Rng) -> bytes:
    """The certificate for ``name``, signed by ``directory_key`` (the directory's key pair)."""
    body = name.signed_bytes()
    return body + directory_key.sign(SIGNATURE_CONTEXT + body, rng)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int, what: str) -> bytes:
        if self._at + n > len(self._data):
            raise CertificateFormatError(f"the certificate ends inside its {what}")
        piece = self._data[self._at : self._at + n]
        self._at += n
        return piece

    @property
    def position(self) -> int:
        return self._at


def decode_certificate(data: bytes) -> tuple[BusinessName, bytes]:
    """Parse a certificate strictly: its fields and its signature (not yet verified)."""
    if not isinstance(data, bytes):
        raise CertificateFormatError("a certificate is bytes")
    reader = _Reader(data)
    version = reader.take(1, "version")[0]
    if version != CERTIFICATE_VERSION:
        raise CertificateFormatError(f"unknown business name certificate version {version}")
    account = reader.take(reader.take(1, "account length")[0], "account")
    key_bytes = reader.take(_PUBLIC_KEY_LENGTH, "identity key")
    name = reader.take(reader.take(1, "display name length")[0], "display name")
    not_before = int.from_bytes(reader.take(8, "not_before"), "big")
    not_after = int.from_bytes(reader.take(8, "not_after"), "big")
    signature = reader.take(_SIGNATURE_LENGTH, "signature")
    if reader.position != len(data):
        raise CertificateFormatError("trailing bytes after the certificate")
    try:
        account_text = account.decode("ascii")
    except UnicodeDecodeError:
        raise CertificateFormatError("the account name is ASCII") from None
    try:
        name_text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeNameError("the display name is not UTF-8") from None
    try:
        identity_key = PublicKey.deserialize(key_bytes)
    except DecodeError as error:
        raise CertificateFormatError(f"the identity key does not decode: {error}") from None
    return (
        BusinessName(account_text, identity_key, name_text, not_before, not_after),
        signature,
    )


def verify_certificate(
    data: bytes,
    directory_key: PublicKey,
    *,
    account: str,
    identity_key: PublicKey,
    now_ms: int,
) -> BusinessName:
    """The name ``data`` vouches for, if it is valid for ``account`` with ``identity_key`` at ``now_ms``.

    Raises, in this order: :class:`CertificateFormatError` (or :class:`UnsafeNameError`),
    :class:`CertificateSignatureError` when ``directory_key`` did not sign these bytes,
    :class:`CertificateNotYetValidError` / :class:`CertificateExpiredError` outside the validity
    period (both ends inclusive), :class:`CertificateSubjectError` for another account or key.
    """
    name, signature = decode_certificate(data)
    try:
        directory_key.verify(SIGNATURE_CONTEXT + data[:-_SIGNATURE_LENGTH], signature)
    except InvalidSignatureError:
        raise CertificateSignatureError("the directory key did not sign this certificate") from None
    if now_ms < name.not_before:
        raise CertificateNotYetValidError("the certificate is not valid yet")
    if now_ms > name.not_after:
        raise CertificateExpiredError("the certificate has expired")
    if name.account != account:
        raise CertificateSubjectError(f"the certificate is for account {name.account!r}, not {account!r}")
    if name.identity_key != identity_key:
        raise CertificateSubjectError("the certificate is for another identity key than the contact's")
    return name
