"""``bitinglip models pull|list|rm``: the models on this host, from the operator's shell.

Models go into the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``), where a
node looks first; ``list`` also shows the models a node converted in its data directory.
Exit codes: 0 done, 1 another error (e.g. a full disk), 2 no such model, 3 gated,
4 the Hub cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.text import Text

from gateway.client import columns
from gateway.client.columns import Column
from gateway.client.peer_view import human_bytes
from gateway.client.terminal import cell
from node.cli import tables
from node.worker import model_store
from node.worker.model_store import StoredModel
from node.worker.models import hub_cache_dir

EXIT_NOT_FOUND = 2
EXIT_GATED = 3
EXIT_UNREACHABLE = 4

# Shown in this order; long model ids wrap rather than push the rest off.
COLUMNS = (
    Column("MODEL", wrap=20),
    Column("TASK"),
    Column("SIZE", right=True),
    Column("PARAMS", right=True),
    Column("WEIGHTS", right=True),
    Column("FITS"),
    Column("SOURCE"),
)
# Given up from the end when the terminal is narrow: whether a model fits matters most.
KEEP = ("MODEL", "FITS", "WEIGHTS", "TASK", "SOURCE", "SIZE", "PARAMS")


def register(commands: Any) -> None:
    models = commands.add_parser("models", help="download, list and remove models on this host")
    actions = models.add_subparsers(dest="action", required=True)
    pull = actions.add_parser("pull", help="download a model into the Hugging Face cache")
    pull.add_argument("model_id", metavar="ID", help="a Hugging Face model id (owner/name)")
    pull.add_argument("--revision", help="a branch, tag or commit (default: main)")
    pull.set_defaults(func=_pull)
    listing = actions.add_parser("list", help="the models on disk, their sizes and memory needs")
    tables.add_flags(listing)
    rm = actions.add_parser("rm", help="delete a model from the cache and the data dir")
    rm.add_argument("model_id", metavar="ID")
    for parser, func in ((listing, _list), (rm, _rm)):
        parser.add_argument(
            "--data-dir",
            type=Path,
            help="where nodes keep converted models (default: the host's shared store)",
        )
        parser.set_defaults(func=func)


def _pull(args: argparse.Namespace) -> int:
    try:
        path = model_store.pull(args.model_id, args.revision)
        footprint = model_store.model_footprint(path)
    except model_store.ModelStoreError as exc:
        return _error(exc)
    needs = f", weights need {human_bytes(footprint.bytes)}" if footprint else ""
    print(f"pulled {args.model_id} into {path}{needs}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from node.worker.hardware import probe

    found = model_store.list_models(_data_dir(args))
    hardware = probe()
    memory = model_store.memory_name(hardware)
    if args.json:
        host = {
            "backend": hardware.backend,
            "device": hardware.device_name,
            "memory": memory,
            "memory_total_bytes": hardware.memory_total,
        }
        models = [_model_json(m, model_store.fits(m, hardware)) for m in found]
        print(json.dumps({"host": host, "models": models}, indent=2))
        return 0
    rows = [_row(m, model_store.fits(m, hardware)) for m in found]
    where = (
        f"FITS: the weights within this host's {human_bytes(hardware.memory_total)} {memory} "
        f"({hardware.backend}, {hardware.device_name})"
    )
    tables.show(
        lambda width: columns.render(
            COLUMNS, rows, width, keep=KEEP, title=f"models in {hub_cache_dir()}", caption=where
        ),
        args.wide,
    )
    if not found:
        print("no models yet: `bitinglip models pull ID` downloads one")
    return 0


def _row(m: StoredModel, fit: bool | None) -> dict[str, Text | str]:
    return {
        "MODEL": cell(m.id),
        "TASK": cell(m.task or "other"),
        "SIZE": human_bytes(m.size_on_disk),
        "PARAMS": _count(m.footprint.parameters) if m.footprint else "?",
        "WEIGHTS": human_bytes(m.footprint.bytes) if m.footprint else "?",
        "FITS": "?" if fit is None else Text("yes", "green") if fit else Text("no", "red"),
        "SOURCE": cell(m.source),
    }


def _rm(args: argparse.Namespace) -> int:
    try:
        removed = model_store.remove(args.model_id, _data_dir(args))
    except model_store.ModelStoreError as exc:
        return _error(exc)
    where = ", ".join(str(p) for p in removed.paths)
    print(f"removed {removed.id}: freed {human_bytes(removed.freed)} ({where})")
    return 0


def _data_dir(args: argparse.Namespace) -> Path:
    from node.worker.models import default_model_store

    return Path(args.data_dir or default_model_store())


def _error(exc: model_store.ModelStoreError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    if isinstance(exc, model_store.GatedRepo):
        return EXIT_GATED
    if isinstance(exc, model_store.HubUnreachable):
        return EXIT_UNREACHABLE
    not_found = model_store.RepoNotFound | model_store.RevisionNotFound | model_store.NotStored
    return EXIT_NOT_FOUND if isinstance(exc, not_found) else 1


def _model_json(m: StoredModel, fits: bool | None) -> dict[str, Any]:
    return {
        "id": m.id,
        "source": m.source,
        "path": str(m.path),
        "revision": m.revision,
        "size_on_disk_bytes": m.size_on_disk,
        "task": m.task,
        "parameters": m.footprint.parameters if m.footprint else None,
        "weights_bytes": m.footprint.bytes if m.footprint else None,
        "fits": fits,
    }


def _count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)
