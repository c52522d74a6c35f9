"""``bitinglip up``: a whole swarm on this machine, one gateway and N nodes.

Each peer is its own process (libp2p saturates a core when many hosts share one
process). Peers report through status files, so addresses bound on port 0 and model
loading progress come back without parsing logs. A peer that dies is started again
(``node.cli.supervise``) while the others keep serving; Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import keys
from keys.files import write_atomic
from node.cli import log_format as log_format_flag
from node.cli.supervise import Plan, Supervisor
from node.p2p import logs
from node.p2p.readiness import read_status

logger = logging.getLogger(__name__)

READY_TIMEOUT = 600.0
# How often the peers' certificates are looked at: each is renewed past half its life.
RENEW_INTERVAL = 600.0
# Where a running local swarm can be found, and the identity `bitinglip peers` joins it as.
SWARM_FILE = "swarm.json"
CLIENT_DIR = Path("peers") / "cli"
LOCAL_USER = "local"  # who the token `up` prints is for


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _to_stderr(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


class LocalSwarm:
    """Peer processes on this machine. ``say`` tells of their progress (to stderr, unless
    ``bitinglip up`` logs it)."""

    def __init__(self, data_dir: Path, say: Callable[[str], None] = _to_stderr) -> None:
        self.data_dir = data_dir
        self.say = say
        self.run_dir = data_dir / "run"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.roles: dict[Path, str] = {}  # each peer directory and its role

    def spawn(
        self,
        name: str,
        role: str,
        extra: list[str],
        env: dict[str, str] | None = None,
        *,
        listen: str = "/ip4/127.0.0.1/tcp/0",
        wrap: list[str] | None = None,
    ) -> None:
        """Start peer ``name``; ``wrap`` prefixes the command (``ip netns exec NS``: run
        it on another network)."""
        peer_dir = self.data_dir / "peers" / name
        keys.provision(peer_dir, self.data_dir, role)
        self.roles[peer_dir] = role
        status = self.run_dir / f"{name}.json"
        status.unlink(missing_ok=True)
        log = (self.data_dir / "logs").joinpath(f"{name}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *(wrap or []), sys.executable, "-m", "node.cli", role, "start",
            "--data-dir", str(peer_dir),
            "--listen", listen,
            "--ready-file", str(status),
            *extra,
        ]  # fmt: skip
        environment = os.environ | (env or {})
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=environment
            )

    def status(self, name: str) -> dict[str, object]:
        return read_status(self.run_dir / f"{name}.json")

    def wait(self, names: list[str], state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shown: dict[str, str] = {}
        while True:
            pending = []
            for name in names:
                status = self.status(name)
                if self.procs[name].poll() is not None or status.get("state") == "failed":
                    log = self.data_dir / "logs" / f"{name}.log"
                    raise RuntimeError(f"{name} stopped: {status.get('message', f'see {log}')}")
                message = str(status.get("message") or status.get("state") or "starting")
                if shown.get(name) != message:
                    shown[name] = message
                    self.say(f"{name}: {message}")
                if status.get("state") != state:
                    pending.append(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(pending)} not {state} after {timeout:.0f} s")
            time.sleep(0.2)

    def renew(self) -> None:
        """Renew the certificates past half their life: the running peers take them up."""
        for peer_dir, role in self.roles.items():
            keys.ensure_admitted(peer_dir, self.data_dir, role)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_routable(url: str, model: str, nodes: int, timeout: float) -> None:
    """Ready means routable: the gateway sees every node with the model ready."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/health", timeout=2).json()
            if health.get("nodes", 0) >= nodes and model in health.get("models", []):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the gateway did not see {nodes} nodes with {model} in {timeout:.0f} s")


def _prepare(model: str, data_dir: Path) -> None:
    """Resolve (download or convert) the model once, here, so N nodes do not all do it."""
    if model == "echo" or model.startswith("echo-"):
        return
    from node.worker.models import resolve

    def progress(message: str, fraction: float | None) -> None:
        shown = f" ({fraction:.0%})" if fraction is not None else ""
        logger.info("%s: %s%s", model, message, shown)

    resolve(model, data_dir, progress)


def _sets(config: Path | None, section: str, name: str) -> bool:
    """Whether the TOML file ``config`` sets ``[section] name``."""
    if config is None:
        return False
    with config.open("rb") as f:
        table = tomllib.load(f).get(section, {})
    return isinstance(table, dict) and name in table


def register(commands: Any) -> None:
    up = commands.add_parser("up", help="start a local swarm: one gateway and N nodes")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument(
        "--model", default=None, help="model id (default: the bundled SmolLM2-135M-Instruct)"
    )
    up.add_argument("--data-dir", type=Path)
    up.add_argument(
        "--config",
        type=Path,
        help="TOML file for every peer: [gateway] (plans, registration, ...) and [node]",
    )
    up.add_argument(
        "--model-store",
        type=Path,
        help="converted models (default: shared by every data dir, ~/.cache/bitinglip)",
    )
    up.add_argument("--json", action="store_true", help="print the ready line as JSON")
    log_format_flag.add_flag(up)
    up.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    log_format = logs.log_format(args.log_format)
    logs.configure("info", log_format)
    return run_up(
        args.port,
        args.nodes,
        args.model,
        args.data_dir,
        args.json,
        config=args.config,
        model_store=args.model_store,
        log_format=log_format,
    )


def run_up(
    port: int,
    nodes: int,
    model: str | None,
    data_dir: Path | None,
    as_json: bool,
    *,
    config: Path | None = None,
    model_store: Path | None = None,
    log_format: str = "text",
) -> int:
    from node.worker.models import DEFAULT_MODEL, default_model_store

    model = model or DEFAULT_MODEL
    data_dir = (data_dir or keys.default_data_dir()).resolve()
    store = (model_store or default_model_store()).resolve()
    if config is not None and not config.is_file():
        logger.error("no config file %s", config)
        return 1
    shared = ["--config", str(config.resolve())] if config is not None else []
    shared += ["--log-format", log_format]
    # A swarm on this machine is for its owner: anyone who can reach it may sign up, unless
    # the config says otherwise.
    registration = [] if _sets(config, "gateway", "registration") else ["--registration", "open"]
    keys.init_operator(data_dir)
    swarm = LocalSwarm(data_dir, logger.info)
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        logger.info(
            "starting a gateway and %d node(s) serving %s (logs: %s)",
            nodes,
            model,
            data_dir / "logs",
        )
        gateway_port = [str(port)]

        def addrs(names: list[str]) -> list[str]:
            found = [swarm.status(n).get("addrs") for n in names]
            return [x for a in found if isinstance(a, list) and a for x in ("--bootstrap", a[0])]

        names = [f"node-{i}" for i in range(nodes)]
        plans = {
            # Started again, a gateway keeps its HTTP port and finds the nodes that stayed.
            "gateway": Plan(
                "gateway",
                lambda: ["--port", gateway_port[0], *registration, *shared, *addrs(names)],
            ),
        }
        model_flags = ["--model", model, "--model-store", str(store), *shared]
        for name in names:
            plans[name] = Plan("node", lambda: [*addrs(["gateway", *names]), *model_flags])
        supervisor = Supervisor(swarm, plans)
        supervisor.start("gateway", time.monotonic())
        swarm.wait(["gateway"], "ready", 60)
        gateway = swarm.status("gateway")
        url = str(gateway["url"])
        gateway_port[0] = url.rsplit(":", 1)[1]
        _prepare(model, store)
        for name in names:
            supervisor.start(name, time.monotonic())
        swarm.wait(names, "ready", READY_TIMEOUT)
        _wait_routable(url, model, nodes, 60)
        token = local_token(data_dir, data_dir / "peers" / "gateway")
        write_swarm_file(swarm, ["gateway", *names], url)
        _announce(url, model, nodes, token, as_json)
        renew_at = time.monotonic() + RENEW_INTERVAL
        while True:
            for line in supervisor.tick(time.monotonic()):
                logger.info("%s", line)
            if time.monotonic() >= renew_at:
                swarm.renew()
                renew_at = time.monotonic() + RENEW_INTERVAL
            time.sleep(0.25)
    except (KeyboardInterrupt, _Stop):
        return 0
    except (RuntimeError, OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        (data_dir / SWARM_FILE).unlink(missing_ok=True)
        swarm.stop()
        signal.signal(signal.SIGTERM, previous)
        logger.info("swarm stopped")


def local_token(data_dir: Path, gateway_dir: Path, user: str = LOCAL_USER) -> str:
    """A week's token for ``user`` (made once, with no password, so nobody can register
    the name), bound to the gateway's accounts."""
    from gateway.accounts import Store, create_user, operator_token

    signer = keys.jwt_keys(data_dir).private
    if signer is None:
        raise RuntimeError(f"no jwt.key in {data_dir}")
    with Store.open(gateway_dir) as store:
        if store.user(user) is None:
            create_user(store, user, None, "default", time.time())
        return operator_token(store, signer, user, 7 * 86400)


def write_swarm_file(swarm: LocalSwarm, names: list[str], url: str) -> None:
    """Tell `bitinglip peers` where this swarm is, and give it a client identity to join as."""
    keys.provision(swarm.data_dir / CLIENT_DIR, swarm.data_dir, "client")
    swarm.roles[swarm.data_dir / CLIENT_DIR] = "client"
    addrs = [swarm.status(name).get("addrs") for name in names]
    bootstrap = [str(a[0]) for a in addrs if isinstance(a, list) and a]
    body = json.dumps({"gateway": url, "bootstrap": bootstrap}, indent=2) + "\n"
    write_atomic(swarm.data_dir / SWARM_FILE, body.encode())


def _announce(url: str, model: str, nodes: int, token: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"url": url, "model": model, "nodes": nodes, "token": token}), flush=True)
        return
    question = {"role": "user", "content": "What is the capital of France?"}
    body = json.dumps({"model": model, "messages": [question], "temperature": 0})
    print(
        f"ready: {url} ({nodes} nodes serving {model})\n"
        f"token: {token}\n"
        f"try:   curl {url}/v1/chat/completions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'",
        flush=True,
    )
