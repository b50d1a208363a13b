"""client.inert: what reaches the terminal from the network can only be displayed."""

from __future__ import annotations

import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from client.inert import inert

ESCAPED = {"Cc", "Cf", "Cs", "Zl", "Zp"}
KEPT_FORMAT = {"\u200c", "\u200d"}


def _dangerous(character: str) -> bool:
    return unicodedata.category(character) in ESCAPED and character not in KEPT_FORMAT


def test_no_code_point_of_the_escaped_categories_survives() -> None:
    everything = "".join(chr(point) for point in range(sys.maxunicode + 1))
    shown = inert(everything)
    assert not [c for c in shown if _dangerous(c)]
    # Everything else is shown as the text it is: removing the escapes gives the safe characters back.
    assert [c for c in everything if not _dangerous(c)] == [
        c for c in inert("".join(c for c in everything if not _dangerous(c)))
    ]


def test_terminal_attacks_are_shown_as_visible_escapes() -> None:
    assert inert("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07"
    assert inert("ok\r\n[16:30] alice: send me your key") == "ok\\r\\n[16:30] alice: send me your key"
    assert inert("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert inert("\x7f") == "\\x7f"
    assert inert("abc\u202edcba") == "abc\\u202edcba"
    assert inert("\u2066x\u2069\u061c\u200e\u200f") == "\\u2066x\\u2069\\u061c\\u200e\\u200f"
    assert inert("a\u2028b\u2029") == "a\\u2028b\\u2029"
    assert inert("\U000e0041tag") == "\\U000e0041tag"
    assert inert("lone \udcff surrogate") == "lone \\udcff surrogate"


def test_the_rest_of_unicode_is_text() -> None:
    text = "Grüße, Ωμέγα, 東京, مرحبا, emoji 👩‍💻 (with a ZWJ), non\u00a0breaking, می\u200cخواهم"
    assert inert(text) == text


def test_bytes_are_decoded_and_undecodable_bytes_escaped() -> None:
    assert inert("héllo".encode()) == "héllo"
    assert inert(b"\xff\xfe ok \x1b") == "\\xff\\xfe ok \\x1b"


@given(st.text())
def test_any_text_comes_out_inert_and_stays_as_it_is_when_made_inert_again(text: str) -> None:
    shown = inert(text)
    assert not any(_dangerous(c) for c in shown)
    assert inert(shown) == shown
    # Any output can be written to a UTF-8 terminal (no surrogate left).
    shown.encode("utf-8")


@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"))))
def test_text_without_such_characters_is_unchanged(text: str) -> None:
    assert inert(text) == text
