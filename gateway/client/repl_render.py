"""What the REPL shows: streamed answers, notes, errors and tables.

Styled only when stdout is a terminal and ``NO_COLOR`` is unset; the tables are built from
the API's bodies and do no I/O, so tests render them to text. Whatever came over the
network, an answer's text included, is shown without terminal control sequences and never
read as markup (``gateway.client.terminal``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

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


def stats_line(tokens: int, seconds: float, node: str) -> str:
    rate = f"{tokens / seconds:.1f}" if seconds > 0 else "-"
    served = f" · node {short_id(node)}" if node else ""
    return f"{tokens} tokens · {seconds:.2f} s · {rate} tokens/s{served}"


def _grid(*columns: str) -> Table:
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for name in columns:
        numeric = name in {"REQUESTS", "PROMPT", "COMPLETION", "IMAGES"}
        grid.add_column(name, justify="right" if numeric else "left", no_wrap=numeric)
    return grid


def models_table(
    models: Sequence[dict[str, Any]], tasks: dict[str, str], current: str | None
) -> RenderableType:
    """Each model, what it does, and the peers that serve it: short id, state and load."""
    if not models:
        return Text("no node serves a model right now", style="dim")
    grid = _grid("MODEL", "TASK", "READY", "PEERS")
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
        grid.add_row(label, cell(tasks.get(name, "?")), f"{ready}/{len(peers)}", cells)
    return grid


def usage_table(body: dict[str, Any]) -> RenderableType:
    """``GET /v1/usage``: a row per day and model, the totals, then the limits."""
    rows = [r for r in body.get("data") or [] if isinstance(r, dict)]
    grid = _grid("DATE", "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "IMAGES", "AUDIO S")
    for row in rows:
        grid.add_row(cell(row.get("date", "")), cell(row.get("model", "")), *_counts(row))
    totals = body.get("totals")
    if isinstance(totals, dict):
        grid.add_row(Text("total", style="bold"), "", *_counts(totals), style="bold")
    parts: list[RenderableType] = [grid if rows else Text("no usage yet", style="dim")]
    limits = body.get("limits")
    if isinstance(limits, dict) and limits:
        shown = ", ".join(f"{k} {_plain(v)}" for k, v in limits.items())
        parts.append(cell(f"limits: {shown}", "dim"))
    return Group(*parts)


def _counts(row: dict[str, Any]) -> list[Text]:
    return [cell(f"{v:,}" if isinstance(v := row.get(c, 0), int) else v) for c in USAGE_COLUMNS]


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def peers_table(peers: Sequence[dict[str, Any]]) -> RenderableType:
    """``GET /v1/peers``, compact: who, what they serve, their load and when last heard."""
    statuses = []
    for body in peers:
        try:
            statuses.append(PeerStatus.from_json(body))
        except ValueError:
            continue  # one malformed entry should not hide the others
    if not statuses:
        return Text("the gateway knows no peers", style="dim")
    grid = _grid("PEER", "ROLE", "MODELS", "RUN/QUEUE/CAP", "SEEN")
    for p in arrange(statuses):
        seen = Text(ago(p.last_seen), style="green" if p.healthy else "red")
        if not p.healthy:
            seen.append(" (not responding)")
        grid.add_row(
            cell(short_id(p.peer_id), "cyan"),
            cell(p.role),
            models_cell(p.models),
            load_cell(p.load),
            seen,
        )
    return grid
