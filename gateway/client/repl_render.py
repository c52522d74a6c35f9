"""What the REPL shows: streamed answers, notes, errors and tables.

Styled only when stdout is a terminal and ``NO_COLOR`` is unset; the tables are built from
the API's bodies and do no I/O, so tests render them to text. Whatever came over the
network, an answer's text included, is shown without terminal control sequences and never
read as markup (``gateway.client.terminal``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.text import Text

from gateway.client.columns import Column, Row, render
from gateway.client.peer_view import ago, load_cell, models_cell, short_id
from gateway.client.terminal import cell, printable
from protocols.peers import PeerStatus, arrange

USAGE_COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "images", "audio_seconds")


class Screen:
    def __init__(self, console: Console | None = None) -> None:
        # NO_COLOR: no escapes at all, bold and dim included, so the text can be piped as is.
        plain = bool(os.environ.get("NO_COLOR"))
        self.console = console or Console(highlight=False, color_system=None if plain else "auto")

    @property
    def color(self) -> bool:
        return self.console.is_terminal and self.console.color_system is not None

    def prompt(self, model: str | None, continued: bool) -> str:
        """The input prompt; escapes are wrapped in \\001/\\002 so readline can measure it."""
        text = "... " if continued else f"{model or '(no model)'}> "
        if not self.color:
            return text
        style = "\x1b[2m" if continued else "\x1b[1;36m"
        return f"\001{style}\002{text}\001\x1b[0m\002"

    def piece(self, text: str) -> None:
        """A piece of a streamed answer, shown at once."""
        self.console.file.write(printable(text))
        self.console.file.flush()

    def end_answer(self) -> None:
        self.piece("\n")

    def say(self, text: str) -> None:
        self.console.print(cell(text))

    def note(self, text: str) -> None:
        self.console.print(cell(text, "dim"))

    def error(self, text: str) -> None:
        self.console.print(cell(f"error: {text}", "red"))

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    @property
    def width(self) -> int:
        """The terminal's width: tables fit it."""
        return self.console.width


def stats_line(tokens: int, seconds: float, node: str) -> str:
    rate = f"{tokens / seconds:.1f}" if seconds > 0 else "-"
    served = f" · node {short_id(node)}" if node else ""
    return f"{tokens} tokens · {seconds:.2f} s · {rate} tokens/s{served}"


# The REPL's tables; on a narrow terminal the last columns are given up first.
MODEL_COLUMNS = (
    Column("MODEL"),
    Column("TASK"),
    Column("READY"),
    Column("PEERS", wrap=16),
)
USAGE_TABLE = (
    Column("DATE"),
    Column("MODEL", wrap=12),
    *(
        Column(name, right=True)
        for name in ("REQUESTS", "PROMPT", "COMPLETION", "IMAGES", "AUDIO S")
    ),
)
PEER_COLUMNS = (
    Column("PEER", style="cyan"),
    Column("ROLE"),
    Column("MODELS", wrap=16),
    Column("RUN/QUEUE/CAP", right=True),
    Column("SEEN"),
)
HELP_COLUMNS = (Column("COMMAND", style="bold"), Column("WHAT", wrap=20))
# There is no --wide inside the REPL.
HINT = "a wider terminal shows all"


def _table(columns: Sequence[Column], rows: Sequence[Row], width: int | None) -> RenderableType:
    return render(columns, rows, width, hint=HINT)


def help_table(commands: Mapping[str, tuple[str, str]], width: int | None = None) -> RenderableType:
    """``/help``: each command with its arguments, and what it does."""
    rows: list[Row] = [
        {"COMMAND": f"/{name} {args}".rstrip(), "WHAT": what}
        for name, (args, what) in commands.items()
    ]
    return render(HELP_COLUMNS, rows, width, header=False, hint=HINT)


def models_table(
    models: Sequence[dict[str, Any]],
    tasks: dict[str, str],
    current: str | None,
    width: int | None = None,
) -> RenderableType:
    """Each model, what it does, and the peers that serve it: short id, state and load;
    fitted to ``width`` (None: every column)."""
    if not models:
        return Text("no node serves a model right now", style="dim")
    rows: list[Row] = []
    for model in models:
        peers = [p for p in model.get("peers") or [] if isinstance(p, dict)]
        ready = sum(p.get("state") == "ready" and p.get("healthy", True) is True for p in peers)
        cells = Text()
        for i, peer in enumerate(peers):
            if i:
                cells.append(", ")
            state = str(peer.get("state", "?"))
            load = f"{peer.get('inflight', 0)}/{peer.get('capacity', '?')}"
            cells.append(printable(short_id(str(peer.get("peer_id", "")))), style="cyan")
            shown = printable(f" {state} {load}")
            cells.append(shown, style="" if state == "ready" else "yellow")
        name = str(model.get("id", "?"))
        label = cell(f"{name} *", "bold") if name == current else cell(name)
        task = cell(tasks.get(name, "?"))
        rows.append(
            {"MODEL": label, "TASK": task, "READY": f"{ready}/{len(peers)}", "PEERS": cells}
        )
    return _table(MODEL_COLUMNS, rows, width)


def usage_table(body: dict[str, Any], width: int | None = None) -> RenderableType:
    """``GET /v1/usage``: a row per day and model, the totals, then the limits; fitted to
    ``width`` (None: every column)."""
    found = [r for r in body.get("data") or [] if isinstance(r, dict)]
    rows: list[Row] = [
        {"DATE": cell(r.get("date", "")), "MODEL": cell(r.get("model", "")), **_counts(r)}
        for r in found
    ]
    totals = body.get("totals")
    if isinstance(totals, dict):
        rows.append({"DATE": cell("total", "bold"), "MODEL": "", **_counts(totals, "bold")})
    parts = [_table(USAGE_TABLE, rows, width) if found else Text("no usage yet", style="dim")]
    limits = body.get("limits")
    if isinstance(limits, dict) and limits:
        shown = ", ".join(f"{k} {_plain(v)}" for k, v in limits.items())
        parts.append(cell(f"limits: {shown}", "dim"))
    return Group(*parts)


def _counts(row: dict[str, Any], style: str = "") -> dict[str, Text | str]:
    """The usage counts of ``row`` by column, thousands grouped."""
    return {
        column.name: cell(f"{v:,}" if isinstance(v := row.get(key, 0), int) else v, style)
        for column, key in zip(USAGE_TABLE[2:], USAGE_COLUMNS, strict=True)
    }


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def peers_table(peers: Sequence[dict[str, Any]], width: int | None = None) -> RenderableType:
    """``GET /v1/peers``, compact: who, what they serve, their load and when last heard;
    fitted to ``width`` (None: every column)."""
    statuses = []
    for body in peers:
        try:
            statuses.append(PeerStatus.from_json(body))
        except ValueError:
            continue  # one malformed entry should not hide the others
    if not statuses:
        return Text("the gateway knows no peers", style="dim")
    rows: list[Row] = []
    for p in arrange(statuses):
        seen = Text(ago(p.last_seen), style="green" if p.healthy else "red")
        if not p.healthy:
            seen.append(" (not responding)")
        rows.append(
            {
                "PEER": cell(short_id(p.peer_id)),
                "ROLE": cell(p.role),
                "MODELS": models_cell(p.models),
                "RUN/QUEUE/CAP": load_cell(p.load),
                "SEEN": seen,
            }
        )
    return _table(PEER_COLUMNS, rows, width)
