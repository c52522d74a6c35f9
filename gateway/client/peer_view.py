"""The table people read of the swarm's peers (``bitinglip peers``, the REPL's ``/peers``).

No I/O here: statuses (``protocols.peers``) in, rich renderables and text out. Everything a
peer says goes into a cell as literal text (``gateway.client.terminal``), never as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from gateway.client import columns
from gateway.client.columns import Column
from gateway.client.terminal import cell, printable
from protocols.peers import PeerHardware, PeerLoad, PeerModel, PeerStatus, Summary, summarize

STATE_STYLES = {"ready": "green", "loading": "yellow", "draining": "red"}

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _unit(n: int) -> tuple[float, str]:
    """The largest binary unit ``n`` reaches: its size and name."""
    scale, unit = 1.0, 0
    while n >= scale * 1024 and unit < len(_UNITS) - 1:
        scale, unit = scale * 1024, unit + 1
    return scale, _UNITS[unit]


def human_bytes(n: int) -> str:
    scale, unit = _unit(max(0, n))
    return f"{n} B" if unit == "B" else f"{n / scale:.1f} {unit}"


def short_id(peer_id: str) -> str:
    """The tail of a peer id: every libp2p Ed25519 id starts with the same ``12D3KooW``."""
    return peer_id[-8:]


def short_addr(addr: str) -> str:
    """``/ip4/10.0.0.5/tcp/4001/p2p/…`` as ``10.0.0.5:4001``, a circuit through a relay as
    ``relay <its short id>``; other forms unchanged."""
    if "/p2p-circuit" in addr:
        relay = addr.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[-1]
        return f"relay {short_id(relay)}"
    parts = addr.split("/p2p/")[0].strip("/").split("/")
    if len(parts) == 4 and parts[2] in ("tcp", "udp"):
        host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
        return f"{host}:{parts[3]}"
    return addr.split("/p2p/")[0] or addr


def ago(seconds: float) -> str:
    s = int(seconds)
    if s < 1:
        return "now"
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s ago"
    return f"{s // 3600}h{s // 60 % 60:02d}m ago"


def models_cell(models: Sequence[PeerModel]) -> Text:
    """Model ids coloured by state; a state other than ready is also spelled out."""
    shown = Text()
    for i, m in enumerate(models):
        if i:
            shown.append(", ")
        label = m.id if m.state == "ready" else f"{m.id} ({m.state})"
        shown.append(printable(label), style=STATE_STYLES.get(m.state, ""))
    return shown


def load_cell(load: PeerLoad | None) -> Text:
    if load is None:
        return Text("-", style="dim")
    style = "red" if load.draining else "yellow" if load.queued or load.busy >= 1 else ""
    return Text(f"{load.inflight}/{load.queued}/{load.capacity}", style=style)


def _device(hw: PeerHardware | None) -> str:
    return "-" if hw is None else f"{hw.backend} {hw.device_name}".strip()


def memory_cell(hw: PeerHardware | None) -> Text:
    """Used/total in one unit, then the kind of memory: ``1.2/16.0 GiB RAM``."""
    if hw is None or hw.memory_total <= 0:
        return Text("-", style="dim")
    scale, unit = _unit(hw.memory_total)
    used = max(0, hw.memory_total - hw.memory_free)
    return cell(f"{used / scale:.1f}/{hw.memory_total / scale:.1f} {unit} {hw.memory}".rstrip())


# Columns in the order they are given up when the terminal is too narrow: the last first.
# MODELS wraps instead (it is the reason to look); hidden columns are named under the table.
COLUMNS = (
    Column("PEER"),
    Column("ROLE"),
    Column("MODELS", wrap=16),
    Column("RUN/QUEUE/CAP", right=True),
    Column("MEMORY used/total", right=True),
    Column("DEVICE", cut=28),
    Column("SEEN"),
    Column("TOK/S", right=True),
    Column("ADDRESS"),
    Column("VERSION"),
)


def _cells(p: PeerStatus) -> dict[str, Text | str]:
    address = short_addr(p.addrs[0]) if p.addrs else "-"
    if len(p.addrs) > 1:
        address += f" +{len(p.addrs) - 1}"
    seen = Text(ago(p.last_seen), style="green" if p.healthy else "red")
    if not p.healthy:
        seen.append(" (not responding)")
    return {
        "PEER": cell(short_id(p.peer_id), "bold cyan" if p.healthy else "dim"),
        "ROLE": cell(p.role),
        "ADDRESS": cell(address),
        "DEVICE": cell(_device(p.hardware)),
        "MEMORY used/total": memory_cell(p.hardware),
        "MODELS": models_cell(p.models),
        "RUN/QUEUE/CAP": load_cell(p.load),
        "TOK/S": "-" if p.load is None else f"{p.load.tokens_per_s:.1f}",
        "SEEN": seen,
        "VERSION": cell(p.version),
    }


def table(peers: Sequence[PeerStatus], width: int | None = None) -> tuple[Table, list[str]]:
    """The peers' table fitted to ``width`` (None: every column), and the columns left out."""
    return columns.table(COLUMNS, [_cells(p) for p in peers], width)


def summary_line(summary: Summary) -> str:
    roles = (
        f"{summary.gateways} gateway{_s(summary.gateways)}, {summary.nodes} node{_s(summary.nodes)}"
    )
    parts = [f"{summary.peers} peer{_s(summary.peers)} ({roles}, {summary.healthy} healthy)"]
    devices = f"{summary.gpus} GPU{_s(summary.gpus)}" if summary.gpus else "no GPUs"
    if summary.memory_total > 0:
        # Without GPUs the totals are the CPU nodes' RAM, and the kind says so.
        devices += (
            f", {summary.memory} {human_bytes(summary.memory_free)} free"
            f" of {human_bytes(summary.memory_total)}"
        )
    parts.append(devices)
    served = ", ".join(f"{m} ({n} peer{_s(n)})" for m, n in summary.models.items())
    parts.append(f"models ready: {served or 'none'}")
    return " · ".join(parts)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def render(peers: Sequence[PeerStatus], width: int | None = None) -> RenderableType:
    """The table fitted to ``width`` (None: every column) and, under it, the summary line
    and the columns left out for width, if any."""
    summary = cell(summary_line(summarize(peers)), "bold")
    return columns.render(COLUMNS, [_cells(p) for p in peers], width, below=[summary])
