"""``bitinglip node load|unload MODEL``: manage a running node's models from the operator's
shell.

The command joins the swarm as a light client holding an ``operator`` certificate (made
from the operator key in the data dir, kept in ``<data dir>/peers/operator``), finds the
nodes, and calls ``load_model`` or ``unload_model`` on one of them. Without ``--peer``,
``load`` picks the node with the most free memory that does not have the model yet, and
``unload`` the one node that has it. Exit codes: 0 done, 1 another error, 2 no such model
or peer, 3 the model does not fit the node's memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import trio

import keys
from keys.keyring import CERTIFICATE, OPERATOR_KEY
from node.cli.light_client import LightClient, Unreachable, open_light_client
from node.cli.peers import read_swarm_file
from node.p2p.rpc_client import CallFailed, RemoteError
from protocols import ErrorCode
from protocols.operator import DTYPES, ModelSpec, Unload
from protocols.peers import PeerStatus

OPERATOR_DIR = Path("peers") / "operator"
EXIT_NOT_FOUND = 2
EXIT_NO_MEMORY = 3
# Loading may download and convert a model first: give it time.
LOAD_TIMEOUT = 3600.0


class Refused(Exception):
    """The command cannot go on; the message says why, the code how it ends."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def register(node: Any) -> None:
    """Add ``load`` and ``unload`` to the ``bitinglip node`` group."""
    load = node.add_parser("load", help="load a model on a running node")
    load.add_argument("model", metavar="MODEL", help="a Hugging Face id or a path on the node")
    load.add_argument("--slots", type=int, default=0, help="generations at once (default: auto)")
    load.add_argument("--dtype", choices=DTYPES, help="default: the device's own")
    load.add_argument("--device", default="", help="e.g. cuda:1 (default: the node's device)")
    load.set_defaults(func=_run)
    unload = node.add_parser("unload", help="drain a model's calls and free its memory")
    unload.add_argument("model", metavar="MODEL")
    unload.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to let running calls finish before they are cancelled (30)",
    )
    unload.set_defaults(func=_run)
    for parser in (load, unload):
        parser.add_argument("--peer", metavar="ID", help="the node (its id, or a unique part)")
        parser.add_argument(
            "--data-dir", type=Path, help="the operator's data dir (holds operator.key)"
        )
        parser.add_argument(
            "--bootstrap",
            action="append",
            metavar="MULTIADDR",
            help="join through this peer (default: the swarm `bitinglip up` started)",
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _run(args: argparse.Namespace) -> int:
    from node.p2p.host import quiet_libp2p_logs

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(message)s")
    quiet_libp2p_logs()
    try:
        data_dir: Path = args.data_dir or keys.default_data_dir()
        directory = operator_dir(data_dir)
        bootstrap = args.bootstrap or read_swarm_file(data_dir).bootstrap
        if not bootstrap:
            raise Refused("no swarm to join: pass --bootstrap MULTIADDR, or start `bitinglip up`")
        if args.action == "load":
            request: ModelSpec | Unload = ModelSpec(
                args.model, args.dtype or "", args.slots, args.device
            )
        else:
            request = Unload(args.model, args.timeout)
        result = trio.run(_main, directory, bootstrap, args, request)
    except (Refused, keys.NotAdmitted, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, Refused) else 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_summary(args.action, result))
    return 0


def operator_dir(data_dir: Path) -> Path:
    """The operator identity: made from the operator key, or one admitted with
    ``bitinglip keys admit ID --role operator`` and copied here."""
    own = data_dir / OPERATOR_DIR
    if (data_dir / OPERATOR_KEY).exists():
        keys.ensure_admitted(own, data_dir, "operator")  # renewed past half its life
        return own
    if (own / CERTIFICATE).exists():
        return own
    raise keys.NotAdmitted(
        f"no operator key in {data_dir}: run this where the swarm's operator keys are "
        f"(--data-dir), or admit {keys.peer_id(own)} with `bitinglip keys admit "
        f"{keys.peer_id(own)} --role operator --out {CERTIFICATE}` and copy it and "
        f"operator.pub into {own}"
    )


async def _main(
    directory: Path, bootstrap: list[str], args: argparse.Namespace, request: ModelSpec | Unload
) -> dict[str, Any]:
    try:
        async with open_light_client(directory, bootstrap, role="operator") as client:
            nodes = [p for p in await client.snapshot() if p.role == "node" and p.healthy]
            peer = choose(nodes, args.model, args.action, args.peer)
            if isinstance(request, ModelSpec):
                result = await _load(client, peer, request, quiet=args.json)
            else:
                result = await _call(client, peer, "unload_model", request.to_wire())
    except* (Refused, Unreachable, CallFailed, OSError) as group:
        error = _first(group)
        if isinstance(error, Refused):
            raise error from None
        if isinstance(error, RemoteError):
            code = {ErrorCode.NO_MEMORY: EXIT_NO_MEMORY, ErrorCode.MODEL_NOT_FOUND: 2}
            raise Refused(f"{peer.peer_id}: {error.message}", code.get(error.code, 1)) from None
        raise Refused(str(error)) from None
    return {"peer": peer.peer_id} | result


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def choose(nodes: list[PeerStatus], model: str, action: str, wanted: str | None) -> PeerStatus:
    """The node to act on: ``wanted`` (an id or a unique part of one), else the best fit."""
    if wanted:
        matches = [n for n in nodes if wanted in n.peer_id]
        if len(matches) != 1:
            known = ", ".join(n.peer_id for n in nodes) or "none"
            found = "no node" if not matches else "several nodes"
            raise Refused(f"{found} answering match {wanted!r} (nodes: {known})", EXIT_NOT_FOUND)
        return matches[0]
    having = [n for n in nodes if any(m.id == model for m in n.models)]
    if action == "unload":
        if len(having) != 1:
            where = ", ".join(n.peer_id for n in having)
            found = f"{len(having)} nodes have it ({where}): pass --peer" if having else "no node"
            raise Refused(f"{model}: {found}", EXIT_NOT_FOUND if not having else 1)
        return having[0]
    free = [n for n in nodes if n not in having]
    if not free and having:
        raise Refused(f"{model} is already on every node that answers: pass --peer to retry one")
    if not free:
        raise Refused("no node answers", EXIT_NOT_FOUND)
    return max(free, key=lambda n: n.hardware.memory_free if n.hardware else 0)


async def _load(
    client: LightClient, peer: PeerStatus, spec: ModelSpec, quiet: bool
) -> dict[str, Any]:
    rpc = await client.rpc(peer.peer_id)
    live = sys.stderr.isatty() and not quiet
    async with rpc.open_call("load_model", spec.to_wire(), timeout=LOAD_TIMEOUT) as call:
        async for step in call:
            if quiet:
                continue
            fraction = step.get("fraction")
            shown = f" {fraction:.0%}" if isinstance(fraction, int | float) else ""
            line = f"{peer.peer_id[-8:]}: {step.get('message', '')}{shown}"
            print(f"\r\x1b[2K{line}" if live else line, end="" if live else "\n", file=sys.stderr)
        if live:
            print(file=sys.stderr)
        assert call.result is not None  # the loop ends only at the call's end
        return call.result


async def _call(
    client: LightClient, peer: PeerStatus, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    rpc = await client.rpc(peer.peer_id)
    timeout = float(params.get("timeout", 30.0)) + 30.0
    return await rpc.call(method, params, timeout=timeout)


def _summary(action: str, result: dict[str, Any]) -> str:
    peer = str(result.get("peer", "?"))
    if action == "load":
        info = result.get("model", {})
        return (
            f"loaded {info.get('id')} on {peer} ({info.get('dtype')}, "
            f"{info.get('max_batch')} slots) in {result.get('seconds')} s"
        )
    cancelled = result.get("calls_cancelled", 0)
    note = f", {cancelled} cancelled" if cancelled else ""
    from node.worker.memory import human

    return (
        f"unloaded {result.get('model')} from {peer}: {result.get('calls_drained', 0)} calls "
        f"finished{note}, {human(int(result.get('freed_bytes', 0)))} freed"
    )
