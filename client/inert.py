"""Text from the network, made safe to print: :func:`inert`.

Theory
------
A terminal is a program that obeys its input.  Bytes such as ESC (``\\x1b``) start control
sequences that clear the screen, move the cursor, retitle the window or, on some terminals, write
files or answer back; CSI also exists as a single C1 character (``\\x9b``); a carriage return or
a line feed lets a message start a new line that looks like one the program printed itself
("[16:30] alice: ..."); the Unicode bidirectional overrides and isolates (U+202A–U+202E,
U+2066–U+2069) reorder what follows them, so a name or a file name reads differently from what it
is.  Every string a contact, a relay or a hostile network chose (message bodies, account names,
error codes and messages, later file names) is therefore passed through :func:`inert` before it is
printed, and the result is a string that the terminal can only *display*.

:func:`inert` replaces each of these characters by a visible escape, so the reader sees that it was
there and what it was:

* C0 controls, DEL and C1 controls (Unicode category ``Cc``, U+0000–U+001F and U+007F–U+009F),
  including tab, line feed and carriage return: a message is one line on the screen;
* format characters (``Cf``): the bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E,
  U+2066–U+2069), zero-width spaces and joiners used to hide text, the byte order mark, soft hyphen,
  interlinear annotation and tag characters, except U+200C ZERO WIDTH NON-JOINER and U+200D ZERO
  WIDTH JOINER, which scripts such as Persian and emoji sequences need and which move nothing;
* the line and paragraph separators U+2028 and U+2029 (``Zl``, ``Zp``);
* lone surrogates (``Cs``), which a ``surrogateescape`` decoding leaves for undecodable bytes and
  which no terminal encoding can write: printing one would raise ``UnicodeEncodeError``.

The escapes are Python's: ``\\t``, ``\\n`` and ``\\r`` for those three, ``\\x1b`` for the
others below U+0100, ``\\u202e`` in the Basic Multilingual Plane, ``\\U000e0041`` above.
Everything else (letters of every script, combining marks, emoji, spaces, private-use and not yet
assigned code points) is shown as the text it is.  Bytes are decoded as
UTF-8 first, with every byte that is not UTF-8 shown as ``\\xNN``.

Invariants
----------
* The result contains no character of the categories above (``tests/client/test_inert.py`` checks
  every code point).
* The result is a function of the input alone, and text without such characters comes back
  unchanged.
* The cost is linear in the length of the input.

What it does not know
---------------------
Where the text goes or what it means: the caller decides which strings came from outside (all of
them, when in doubt) and lays out its own lines around them.  It does not shorten text, and it
does not protect against look-alike characters (a Cyrillic "а" in a name): the relay's name rules
keep account names to ASCII.
"""

from __future__ import annotations

import unicodedata

__all__ = ["inert"]

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode general categories whose characters are printed as escapes (the module docstring says why)."""

_SHOWN_FORMAT = frozenset({"\u200c", "\u200d"})
"""Format characters shown as they are: ZERO WIDTH NON-JOINER and ZERO WIDTH JOINER."""


_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(character: str) -> str:
    if character in _SHORT:
        return _SHORT[character]
    point = ord(character)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _shown(character: str) -> str:
    if character.isprintable() or character in _SHOWN_FORMAT:
        return character
    if unicodedata.category(character) in _ESCAPED_CATEGORIES:
        return _escape(character)
    # Spaces other than U+0020, private-use and unassigned code points: harmless text.
    return character


def inert(text: str | bytes) -> str:
    """``text`` with every control, format, separator and surrogate character visibly escaped.

    Use it on every string that came from the network before it reaches a terminal.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    if text.isprintable():
        # The common case, decided in C: str.isprintable() is false for every escaped category.
        return text
    return "".join([_shown(character) for character in text])
