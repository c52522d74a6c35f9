"""Tables that fit the terminal: every table the command line prints is drawn here.

A table's columns are named in the order they are shown; they are given up, when the
terminal is too narrow, least important first (the order ``keep`` names, else the order
shown), never below two. A column may instead wrap down to a width (the one people came
to read) or be cut with an ellipsis past one. The columns given up are named under the
table, with the flag that shows them all. No I/O: rows in, rich renderables out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.client.terminal import cell

GAP = 2  # cells between columns: rich's padding of one on each side
MIN_COLUMNS = 2  # a table keeps at least its first columns, however narrow the terminal


@dataclass(frozen=True)
class Column:
    name: str
    right: bool = False  # numbers, aligned right
    wrap: int = 0  # wraps down to this many cells instead of being given up; 0: never wraps
    cut: int = 0  # at most this many cells, then an ellipsis; 0: as wide as its widest cell
    style: str = ""


Row = Mapping[str, Text | str]


def _need(column: Column, rows: Sequence[Row], header: bool) -> int:
    """The cells ``column`` takes: its widest cell (and name), at its narrowest if it wraps."""
    widest = max(
        [len(column.name) if header else 0, *(Text(str(r[column.name])).cell_len for r in rows)]
    )
    if column.cut:
        widest = min(widest, column.cut)
    return min(widest, column.wrap) if column.wrap else widest


def fitting(
    columns: Sequence[Column],
    rows: Sequence[Row],
    width: int | None,
    *,
    keep: Sequence[str] = (),
    header: bool = True,
) -> list[Column]:
    """The columns that fit ``width`` cells (all of them for None), in the order shown.
    ``keep`` names them most important first; by default the order shown is that order."""
    if width is None:
        return list(columns)
    by_name = {c.name: c for c in columns}
    ranked = [by_name[name] for name in keep] if keep else list(columns)
    needs = {c.name: _need(c, rows, header) for c in columns}
    while (
        len(ranked) > MIN_COLUMNS
        and sum(needs[c.name] for c in ranked) + GAP * (len(ranked) - 1) > width
    ):
        ranked.pop()
    return [c for c in columns if c in ranked]


def table(
    columns: Sequence[Column],
    rows: Sequence[Row],
    width: int | None,
    *,
    keep: Sequence[str] = (),
    header: bool = True,
    title: str | None = None,
    caption: str | None = None,
) -> tuple[Table, list[str]]:
    """The table fitted to ``width`` (None: every column), and the names of the columns
    left out. A title and a caption are literal text."""
    shown = fitting(columns, rows, width, keep=keep, header=header)
    grid = Table(
        box=None,
        header_style="bold",
        pad_edge=False,
        expand=False,
        show_header=header,
        title=cell(title) if title is not None else None,
        caption=cell(caption) if caption is not None else None,
    )
    for c in shown:
        if c.wrap:
            grid.add_column(
                c.name, min_width=min(c.wrap, len(c.name)), overflow="fold", style=c.style
            )
        elif c.cut:
            grid.add_column(
                c.name, max_width=c.cut, no_wrap=True, overflow="ellipsis", style=c.style
            )
        else:
            grid.add_column(
                c.name, justify="right" if c.right else "left", no_wrap=True, style=c.style
            )
    for row in rows:
        grid.add_row(*(row[c.name] for c in shown))
    return grid, [c.name for c in columns if c not in shown]


WIDE_HINT = "--wide shows all"


def hidden_note(hidden: Sequence[str], hint: str = WIDE_HINT) -> Text | None:
    """The line under a table naming the columns left out for width, if any, and ``hint``:
    how to see them."""
    if not hidden:
        return None
    return cell(f"not shown for width: {', '.join(hidden)} ({hint})", "dim")


def render(
    columns: Sequence[Column],
    rows: Sequence[Row],
    width: int | None,
    *,
    keep: Sequence[str] = (),
    header: bool = True,
    title: str | None = None,
    caption: str | None = None,
    below: Sequence[RenderableType] = (),
    hint: str = WIDE_HINT,
) -> RenderableType:
    """The fitted table, then ``below`` (a summary, say), then the note naming the
    columns left out, if any."""
    grid, hidden = table(
        columns, rows, width, keep=keep, header=header, title=title, caption=caption
    )
    note = hidden_note(hidden, hint)
    return Group(grid, *below, *([note] if note is not None else []))
