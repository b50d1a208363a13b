"""The demo's side-by-side view: three columns, Alice | relay | Bob.

What this module owns
---------------------
:class:`Columns`, which wraps text into three fixed-width columns separated by a vertical rule and
writes them as rows, plus full-width section headings between rows.  The middle column is where
the demo shows what the relay holds (ciphertext prefixes, sizes, ids); the outer columns are the
two people, the only places plaintext is ever shown.

Invariants
----------
* Every row line has exactly three cells separated by :attr:`Columns.rule`, and no cell contains
  the rule character (it is replaced), so a reader (or a test) can split any row line back into
  its three columns unambiguously.  Heading lines never contain the rule.
* Cells never exceed their width: long words are broken, not allowed to push a column sideways.

What it does not know
---------------------
Anything about messages or the relay: it formats strings.  Where the text goes is the ``write``
callable it was given.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Iterable

__all__ = ["Columns"]

_MIN_WIDTH = 78
_MAX_WIDTH = 180


def _rule_for(encoding: str | None) -> tuple[str, str]:
    """The column rule and heading fill for a stream: box-drawing where it can be encoded."""
    try:
        "│─".encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "|", "-"
    return "│", "─"


class Columns:
    """Writes rows of three wrapped cells: ``left │ middle │ right``."""

    def __init__(
        self,
        write: Callable[[str], None],
        width: int | None = None,
        encoding: str | None = "utf-8",
        titles: tuple[str, str, str] = ("Alice", "relay (its own database)", "Bob"),
    ) -> None:
        if width is None:
            width = shutil.get_terminal_size((120, 24)).columns
        self.width = max(_MIN_WIDTH, min(_MAX_WIDTH, width))
        self.rule, self._fill = _rule_for(encoding)
        self._write = write
        self._titles = titles
        # Three cells and two separators of " │ " fill the width exactly.
        self.cell_width = (self.width - 6) // 3

    def _cell_lines(self, text: str) -> list[str]:
        lines: list[str] = []
        for paragraph in text.replace(self.rule, "|").splitlines() or [""]:
            wrapped = textwrap.wrap(
                paragraph,
                self.cell_width,
                break_long_words=True,
                break_on_hyphens=False,
                subsequent_indent="  ",
            )
            lines.extend(wrapped or [""])
        return lines

    def row(self, left: str = "", middle: str = "", right: str = "") -> None:
        """Write one row; each cell wraps within its column and the row is as tall as its tallest cell."""
        cells = [self._cell_lines(text) for text in (left, middle, right)]
        height = max(len(cell) for cell in cells)
        for index in range(height):
            parts = [cell[index] if index < len(cell) else "" for cell in cells]
            line = f" {self.rule} ".join(part.ljust(self.cell_width) for part in parts)
            self._write(line.rstrip())

    def rows(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Write several rows."""
        for left, middle, right in rows:
            self.row(left, middle, right)

    def header(self) -> None:
        """The column titles and a rule under them."""
        self.row(*self._titles)
        self._write(self._fill * self.width)

    def heading(self, text: str) -> None:
        """A full-width section heading between rows, e.g. ``── 2. Alice starts a session ──``."""
        text = text.replace(self.rule, "|")
        line = f"{self._fill * 2} {text} "
        self._write("")
        self._write(line + self._fill * max(0, self.width - len(line)))

    def split(self, line: str) -> list[str] | None:
        """The three cells of a row line written by :meth:`row`, or ``None`` for any other line."""
        parts = line.split(f" {self.rule}")
        if len(parts) != 3:
            return None
        return [part.strip() for part in parts]
