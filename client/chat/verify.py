"""The safety number as e2e-chat shows it: 60 digits in groups, and the scannable form as a QR code.

What this module owns
---------------------
:func:`format_safety_number` (the 60 digits of :class:`e2e.fingerprint.DisplayableFingerprint` in
twelve groups of five, three rows of four, as Signal's apps show them) and :func:`render_qr` (the
bytes of :class:`e2e.fingerprint.ScannableFingerprint` as a QR code drawn with Unicode half blocks,
or as a base64 block where the terminal cannot draw blocks).

Invariants
----------
The QR code carries the scannable bytes exactly (byte mode), so a phone that scans the screen
reads the same ``CombinedFingerprints`` the core produced.  Both people see the same 60 digits;
each sees a QR code with the halves swapped, as libsignal does.

What it does not know
---------------------
Whose identities these are or whether the user compared them: the chat application records that.
"""

from __future__ import annotations

import base64
import io
import textwrap

import segno

__all__ = ["format_safety_number", "render_qr"]

_GROUP = 5
_GROUPS_PER_ROW = 4


def format_safety_number(digits: str) -> str:
    """``"12345678901234…"`` → three rows of four groups of five digits."""
    groups = [digits[i : i + _GROUP] for i in range(0, len(digits), _GROUP)]
    rows = [groups[i : i + _GROUPS_PER_ROW] for i in range(0, len(groups), _GROUPS_PER_ROW)]
    return "\n".join(" ".join(row) for row in rows)


def render_qr(scannable: bytes, encoding: str | None = "utf-8") -> str:
    """A QR code of ``scannable`` for the terminal; base64 text where blocks cannot be printed."""
    try:
        "█▀▄".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        text = base64.b64encode(scannable).decode("ascii")
        return "scannable fingerprint (base64):\n" + "\n".join(textwrap.wrap(text, 48))
    code = segno.make(scannable, micro=False, mode="byte", error="m")
    out = io.StringIO()
    code.terminal(out=out, compact=True, border=2)
    return out.getvalue().rstrip("\n")
