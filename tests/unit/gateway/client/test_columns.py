"""The fitting of tables to the terminal: which columns stay, which wrap, and the note
naming the ones left out. Pure: rows in, text out."""

from __future__ import annotations

import pytest
from rich.console import Console, RenderableType

from gateway.client.columns import Column, Row, fitting, render

COLUMNS = (
    Column("NAME", wrap=8),
    Column("SIZE", right=True),
    Column("KIND"),
    Column("WHERE", cut=12),
)
ROWS: list[Row] = [
    {"NAME": "a-rather-long-name", "SIZE": "1.0 GiB", "KIND": "text", "WHERE": "/a/b/c/d/e/f/g"},
    {"NAME": "short", "SIZE": "12 B", "KIND": "image", "WHERE": "here"},
]


def shown(renderable: RenderableType, width: int) -> list[str]:
    console = Console(record=True, width=width, color_system=None)
    console.print(renderable)
    return [line.rstrip() for line in console.export_text().splitlines()]


def names(columns: list[Column]) -> list[str]:
    return [c.name for c in columns]


def test_every_column_without_a_width() -> None:
    assert names(fitting(COLUMNS, ROWS, None)) == ["NAME", "SIZE", "KIND", "WHERE"]


def test_columns_are_given_up_from_the_end_and_a_wrapping_one_counts_at_its_narrowest() -> None:
    # NAME 8 (wraps), SIZE 7, KIND 5, WHERE 12 (cut), gaps of 2.
    assert names(fitting(COLUMNS, ROWS, 8 + 7 + 5 + 12 + 6)) == names(list(COLUMNS))
    assert names(fitting(COLUMNS, ROWS, 8 + 7 + 5 + 12 + 5)) == ["NAME", "SIZE", "KIND"]
    assert names(fitting(COLUMNS, ROWS, 8 + 7 + 5 + 4)) == ["NAME", "SIZE", "KIND"]
    assert names(fitting(COLUMNS, ROWS, 8 + 7 + 5 + 3)) == ["NAME", "SIZE"]


def test_keep_names_what_matters_most_and_the_order_shown_stays() -> None:
    kept = fitting(COLUMNS, ROWS, 30, keep=("NAME", "WHERE", "KIND", "SIZE"))
    assert names(kept) == ["NAME", "KIND", "WHERE"]


def test_two_columns_stay_however_narrow() -> None:
    assert names(fitting(COLUMNS, ROWS, 5)) == ["NAME", "SIZE"]


def test_a_table_without_a_header_does_not_count_the_names() -> None:
    long_names = tuple(Column(f"column {n} has a long name") for n in "abc")
    rows: list[Row] = [{c.name: c.name[7] for c in long_names}]
    assert len(fitting(long_names, rows, 7, header=False)) == 3
    assert len(fitting(long_names, rows, 7)) == 2
    assert shown(render(long_names, rows, 7, header=False), 7) == ["a  b  c"]


@pytest.mark.parametrize("width", [80, 40, 20])
def test_the_table_fits_and_names_what_it_left_out(width: int) -> None:
    lines = shown(render(COLUMNS, ROWS, width, title="things"), width)
    assert all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    assert "short" in text and "a-rather" in text and "name" in text  # it wraps, never goes
    hidden = [c.name for c in COLUMNS if c.name not in lines[1].split()]
    if hidden:
        note = " ".join(lines[lines.index(next(x for x in lines if "not shown" in x)) :])
        assert note == f"not shown for width: {', '.join(hidden)} (--wide shows all)"
    else:
        assert "not shown" not in text


def test_a_cut_column_ends_in_an_ellipsis() -> None:
    lines = shown(render(COLUMNS, ROWS, None), 200)
    assert "/a/b/c/d/e/…" in lines[1]
    assert "not shown" not in "\n".join(lines)
