"""``bitinglip node info [--json]``: the hardware a node started here would advertise.

It probes the host as ``node start`` does and prints what the node's record would say: the
backend, the device, what its memory is (VRAM on a GPU, RAM on a CPU host, unified on Apple
silicon) with its total and free, the torch and transformers versions and, on CUDA, the
compute capability. It needs no keys, no data directory and no network.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.console import RenderableType

from gateway.client import columns
from gateway.client.columns import Column
from gateway.client.peer_view import human_bytes
from gateway.client.terminal import cell
from node.cli import tables
from node.worker.hardware import VRAM_TOTAL_ENV, probe
from protocols import Hardware

BACKENDS = {"cuda": "CUDA", "directml": "DirectML", "mps": "MPS", "cpu": "CPU"}


def register(node_actions: Any) -> None:
    """Add ``info`` to the actions of the ``node`` command group."""
    info = node_actions.add_parser("info", help="show the hardware this node would advertise")
    tables.add_flags(info, "one JSON object, memory in bytes")
    info.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    hardware = probe()
    if args.json:
        # The record's own field names and raw bytes, for scripts.
        print(json.dumps(asdict(hardware), indent=2))
    else:
        tables.show(lambda width: table(hardware, width), args.wide)
    return 0


# A name and a value per line; a long value (a device name) wraps.
COLUMNS = (Column("name", style="bold"), Column("value", wrap=20))


def table(hardware: Hardware, width: int | None = None) -> RenderableType:
    """Two aligned columns, a name and a value per line, for people."""
    # Literal text, not markup: a device name may hold brackets.
    lines: list[columns.Row] = [
        {"name": name, "value": cell(value)} for name, value in rows(hardware)
    ]
    return columns.render(COLUMNS, lines, width, header=False)


def rows(hardware: Hardware) -> list[tuple[str, str]]:
    """The lines of the table: what the record says, in words and human units."""
    shown = [
        ("backend", BACKENDS.get(hardware.backend, hardware.backend)),
        ("device", hardware.device_name),
        ("memory", _memory(hardware)),
        ("torch", hardware.torch or "not installed"),
        ("transformers", hardware.transformers or "not installed"),
    ]
    if hardware.backend == "cuda":
        shown.append(("compute capability", hardware.compute_capability or "unknown"))
    return shown


def _memory(hardware: Hardware) -> str:
    if hardware.memory_total <= 0:
        # DirectML reports only fractions in use: the size is the operator's to give.
        hint = f" (set {VRAM_TOTAL_ENV})" if hardware.backend == "directml" else ""
        return f"{hardware.memory}, size unknown{hint}"
    free, total = human_bytes(hardware.memory_free), human_bytes(hardware.memory_total)
    return f"{hardware.memory} {free} free of {total}"
