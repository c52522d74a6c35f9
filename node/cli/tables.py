"""How the commands print tables: fitted to the terminal (``gateway.client.columns``),
every column with ``--wide``, JSON for scripts with ``--json``.

On a terminal a table takes its width; printed to a pipe it takes ``$COLUMNS``, else 80
columns, as the terminal would, unless ``--wide`` gives it room for every column.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console, RenderableType

WIDE = 400  # columns given to a --wide table printed to a pipe


def add_flags(parser: argparse.ArgumentParser, json_help: str = "print JSON, for scripts") -> None:
    """``--json`` and ``--wide`` on a command that prints a table."""
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument(
        "--wide", action="store_true", help="every column, however wide the terminal"
    )


def console(wide: bool) -> Console:
    """The terminal's width, or room for every column with ``--wide`` (a pipe included)."""
    return Console(width=WIDE) if wide and not Console().is_terminal else Console()


def show(draw: Callable[[int | None], RenderableType], wide: bool) -> None:
    """Print ``draw(width)``: the terminal's width, or None (every column) with ``--wide``."""
    out = console(wide)
    out.print(draw(None if wide else out.width))
