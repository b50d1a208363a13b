"""The demo's three-column view: rows split back into their columns, cells stay within their width."""

from __future__ import annotations

from client.demo.layout import Columns


def test_rows_wrap_within_their_columns_and_split_back() -> None:
    lines: list[str] = []
    columns = Columns(lines.append, width=90)
    long_text = "a message long enough that it has to wrap over several lines of its column " * 2
    columns.row(long_text, "33 0a 5f 91 … (130 B)", "")
    assert len(lines) > 1
    for line in lines:
        assert len(line) <= 90
        cells = columns.split(line)
        assert cells is not None
        assert all(len(cell) <= columns.cell_width for cell in cells)
    assert columns.split(lines[0])[1] == "33 0a 5f 91 … (130 B)"
    assert " ".join(columns.split(line)[0] for line in lines).split() == long_text.split()


def test_the_rule_inside_a_cell_cannot_forge_a_column() -> None:
    lines: list[str] = []
    columns = Columns(lines.append, width=90)
    columns.row("left │ forged │ cells", "", "right")
    assert [columns.split(line) for line in lines] == [["left | forged | cells", "", "right"]]


def test_headings_are_not_rows_and_ascii_streams_get_ascii_rules() -> None:
    lines: list[str] = []
    columns = Columns(lines.append, width=80, encoding="ascii")
    columns.header()
    columns.heading("1. Bob publishes his bundle")
    assert columns.rule == "|"
    assert columns.split(lines[0]) == ["Alice", "relay (its own database)", "Bob"]
    assert all(line.isascii() for line in lines)
    assert columns.split(lines[-1]) is None
    assert "1. Bob publishes his bundle" in lines[-1]


def test_long_words_are_broken_rather_than_widening_a_column() -> None:
    lines: list[str] = []
    columns = Columns(lines.append, width=78)
    columns.row("", "f" * 200, "")
    assert all(len(columns.split(line)[1]) <= columns.cell_width for line in lines)
