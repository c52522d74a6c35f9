"""``bitinglip peers``: the swarm's peers at a glance, once or refreshed in place.

Two ways to look, the same view either way:

- through a gateway: ``GET /v1/peers`` with a user token (``--gateway``, ``--token``);
- from inside the swarm, as a light client with a ``client`` certificate (``--bootstrap``),
  trusting no gateway: records come from the DHT and verify against the operator's key.

With neither, ``<data dir>/swarm.json`` (written by ``bitinglip up``) says where the swarm
is, and the light client is preferred when a client certificate is at hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

import keys
from gateway.client import errors as client_errors
from gateway.client.api_client import GatewayClient
from gateway.client.peer_view import render
from gateway.client.terminal import cell
from keys.keyring import CERTIFICATE, OPERATOR_KEY
from node.cli import tables
from node.cli.light_client import Unreachable, client_certificate, open_light_client
from node.cli.up import CLIENT_DIR, SWARM_FILE
from protocols.peers import PeerStatus, arrange, to_json

TOKEN_ENV = "BITINGLIP_TOKEN"
HTTP_TIMEOUT = 10.0
DEFAULT_INTERVAL = 2.0


class Refused(Exception):
    """There is no way to look at the swarm, or the gateway refused to show it."""


class Source(Protocol):
    """Where peers are seen from: a gateway, or the swarm itself."""

    @property
    def where(self) -> str: ...

    async def snapshot(self) -> list[PeerStatus]: ...


Opener = Callable[[], AbstractAsyncContextManager[Source]]


def register(commands: Any) -> None:
    """Add ``peers`` to the ``bitinglip`` command."""
    peers = commands.add_parser(
        "peers",
        help="show the swarm's peers: hardware, models, load",
        description="Show every peer of the swarm with its hardware, models and load. "
        "Exits non-zero when no peer can be reached.",
    )
    peers.add_argument("--gateway", metavar="URL", help="ask this gateway (GET /v1/peers)")
    peers.add_argument(
        "--token", help=f"user token for the gateway (default: ${TOKEN_ENV} or the saved login)"
    )
    peers.add_argument(
        "--bootstrap",
        action="append",
        metavar="MULTIADDR",
        help="join the swarm through this peer as a light client (repeatable)",
    )
    peers.add_argument(
        "--data-dir",
        type=Path,
        help="holds swarm.json from `bitinglip up` and the client certificate",
    )
    peers.add_argument("--model", metavar="ID", help="only peers that list this model")
    tables.add_flags(peers, "print JSON: peers and a summary")
    peers.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"refresh in place every SECONDS (default {DEFAULT_INTERVAL:g}) until Ctrl-C",
    )
    peers.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from node.p2p.host import quiet_libp2p_logs

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(message)s")
    quiet_libp2p_logs()
    if args.watch is not None and args.watch <= 0:
        print("error: --watch needs a positive number of seconds", file=sys.stderr)
        return 2
    try:
        opener = choose(args)
    except (Refused, keys.NotAdmitted) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return trio.run(_main, opener, args)


# Choosing where to look.


@dataclass(frozen=True)
class SavedSwarm:
    """What ``bitinglip up`` wrote about the swarm it started."""

    gateway: str | None = None
    bootstrap: list[str] = field(default_factory=list)


def read_swarm_file(data_dir: Path) -> SavedSwarm:
    try:
        body = json.loads((data_dir / SWARM_FILE).read_text())
    except (OSError, ValueError):
        return SavedSwarm()
    if not isinstance(body, dict):
        return SavedSwarm()
    gateway, bootstrap = body.get("gateway"), body.get("bootstrap")
    return SavedSwarm(
        gateway if isinstance(gateway, str) else None,
        [b for b in bootstrap if isinstance(b, str)] if isinstance(bootstrap, list) else [],
    )


def client_dir(data_dir: Path, *, admit: bool) -> Path | None:
    """Where this machine's client identity lives, if it holds a client certificate.

    That is ``<data dir>/peers/cli`` (as ``bitinglip up`` provisions it), or the data
    directory itself when its certificate is a client's. With ``admit``, an operator's data
    directory admits a client of its own.
    """
    own = data_dir / CLIENT_DIR
    if (own / CERTIFICATE).exists():
        if (data_dir / OPERATOR_KEY).exists():
            keys.ensure_admitted(own, data_dir, "client")  # renewed past half its life
        return own
    if (data_dir / CERTIFICATE).exists():
        try:
            client_certificate(data_dir)
            return data_dir
        except keys.NotAdmitted:
            pass  # a node's or a gateway's directory: never run a second host as that peer
    if admit and (data_dir / OPERATOR_KEY).exists():
        keys.provision(own, data_dir, "client")
        return own
    return None


def choose(args: argparse.Namespace) -> Opener:
    """Pick where to look from the flags, then the saved swarm and login."""
    data_dir: Path = args.data_dir or keys.default_data_dir()
    if args.bootstrap and not (args.gateway or args.token):
        found = client_dir(data_dir, admit=True)
        if found is None:
            own = data_dir / CLIENT_DIR
            raise keys.NotAdmitted(
                f"no client certificate in {data_dir}: on the operator's machine run "
                f"`bitinglip keys admit {keys.peer_id(own)} --role client --out "
                f"{CERTIFICATE}`, then copy {CERTIFICATE} and operator.pub into {own}"
            )
        return _light(found, args.bootstrap)
    saved = read_swarm_file(data_dir)
    if not (args.gateway or args.token):
        found = client_dir(data_dir, admit=False)
        if found is not None and saved.bootstrap:
            return _light(found, saved.bootstrap)
    from gateway.client.login import saved_login

    try:
        login_url, login_token = saved_login(args.gateway or saved.gateway)
    except ValueError:  # a damaged saved login: as if there were none
        login_url, login_token = None, None
    url = args.gateway or saved.gateway or login_url
    if url is None:
        raise Refused(
            "no swarm to look at: start one with `bitinglip up`, or pass --gateway URL "
            "or --bootstrap MULTIADDR"
        )
    token = args.token or os.environ.get(TOKEN_ENV) or login_token
    if not token:
        raise Refused(
            f"no token for the gateway at {url}: pass --token, set {TOKEN_ENV}, "
            "or `bitinglip login`"
        )
    return lambda: _open_gateway(url, token)


def _light(directory: Path, bootstrap: list[str]) -> Opener:
    client_certificate(directory)  # a certificate that will not do: say so before joining
    return lambda: open_light_client(directory, bootstrap)


class GatewaySource:
    """Peers as a gateway lists them (``GatewayClient.peers``), asked off the event loop."""

    def __init__(self, client: GatewayClient) -> None:
        self._client = client
        self.url = client.url

    @property
    def where(self) -> str:
        return f"gateway {self.url}"

    async def snapshot(self) -> list[PeerStatus]:
        try:
            data = await trio.to_thread.run_sync(self._client.peers, abandon_on_cancel=True)
            return [PeerStatus.from_json(entry) for entry in data]
        except client_errors.Unreachable as exc:
            raise Unreachable(str(exc)) from exc
        except (client_errors.BadResponse, ValueError) as exc:
            raise Refused(
                f"the gateway at {self.url} sent a peer list we cannot read: {exc}"
            ) from exc
        except client_errors.Refused as exc:
            if exc.status in (401, 403):
                raise Refused(f"the gateway at {self.url} refused the token: {exc.detail}") from exc
            raise Refused(f"the gateway at {self.url} answered {exc.status}: {exc.detail}") from exc


@asynccontextmanager
async def _open_gateway(url: str, token: str) -> AsyncIterator[Source]:
    with GatewayClient(url, token, timeout=HTTP_TIMEOUT) as client:
        yield GatewaySource(client)


# Showing what was found.


async def _main(opener: Opener, args: argparse.Namespace) -> int:
    """Show the peers; Ctrl-C ends a watch cleanly (exit 0) and a single look with 130."""
    code: int | None = None
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            try:
                async with opener() as source:
                    code = await (_watch(source, args) if args.watch else _once(source, args))
            except* (Unreachable, Refused, keys.NotAdmitted, OSError) as group:
                print(f"error: {_first(group)}", file=sys.stderr)
                code = 1
            nursery.cancel_scope.cancel()
    if code is None:
        return 0 if args.watch else 130
    return code


async def _cancel_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _once(source: Source, args: argparse.Namespace) -> int:
    found = await source.snapshot()
    peers = arrange(found, args.model)
    if not peers:
        why = f"no peer lists model {args.model!r}" if found else "no peers found"
        print(f"error: {why} (asked {source.where})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_json(peers), indent=2))
    else:
        tables.show(lambda width: render(peers, width), args.wide)
    return 0


async def _watch(source: Source, args: argparse.Namespace) -> int:
    """Refresh until cancelled; after the first look, failures show and are retried."""
    console = tables.console(args.wide)
    peers = arrange(await source.snapshot(), args.model)
    error: str | None = None
    # Redraw in place on a terminal; a pipe or a log gets one frame after another.
    redraw = console.is_terminal and not args.json
    live = Live(console=console, auto_refresh=False) if redraw else None
    with live or nullcontext():
        while True:
            if args.json:
                if error is None:
                    print(json.dumps(to_json(peers)), flush=True)
                else:
                    print(f"error: {error}", file=sys.stderr, flush=True)
            elif live is not None:
                frame = _frame(source, peers, args, error, console.width)
                live.update(frame, refresh=True)
            else:
                console.print(_frame(source, peers, args, error, console.width))
            await trio.sleep(args.watch)
            try:
                peers, error = arrange(await source.snapshot(), args.model), None
            except* (Unreachable, Refused) as group:
                error = str(_first(group))


def _frame(
    source: Source,
    peers: list[PeerStatus],
    args: argparse.Namespace,
    error: str | None,
    width: int,
) -> RenderableType:
    shown = f" · model {args.model}" if args.model else ""
    header = Text(
        f"{source.where}{shown} · every {args.watch:g}s · {time.strftime('%H:%M:%S')}"
        " · Ctrl-C to stop",
        style="dim",
    )
    parts: list[RenderableType] = [header, render(peers, None if args.wide else width)]
    if error is not None:
        parts.append(cell(f"{error} (showing the last answer)", "bold red"))
    return Group(*parts)
