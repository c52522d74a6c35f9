"""The ``bitinglip`` command: ``node start``, ``gateway start``, ``up``, ``tokens``, ``keys``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any


def _setup_logging(level: str) -> None:
    # Imported here: libp2p takes a second to import, which client commands need not pay.
    from node.swarm import quiet_libp2p_logs

    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    quiet_libp2p_logs(logging.DEBUG if level.lower() == "debug" else logging.CRITICAL)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)


def _peer_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="where keys and models live")
    parser.add_argument("--config", type=Path, help="TOML file with [node]/[gateway] settings")
    parser.add_argument("--listen", action="append", help="libp2p multiaddr to listen on")
    parser.add_argument("--bootstrap", action="append", help="multiaddr of a peer to join through")
    parser.add_argument("--ready-file", type=Path, help="write status JSON here")
    parser.add_argument("--log-level", help="debug, info, warning")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitinglip", description="A peer-to-peer swarm serving AI models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    node = commands.add_parser("node", help="run a GPU node").add_subparsers(
        dest="action", required=True
    )
    start = node.add_parser("start", help="join the swarm and serve models")
    _peer_flags(start)
    start.add_argument(
        "--model", action="append", dest="models", help="model id or path (repeatable)"
    )
    start.add_argument(
        "--model-store", type=Path, help="directory for converted models (default: data dir)"
    )
    start.add_argument(
        "--capacity", type=int, help="concurrent calls (default: the models' batch sizes)"
    )
    start.add_argument(
        "--slots",
        type=int,
        help="generations one text model runs at once (default: from its size and free memory)",
    )
    start.add_argument(
        "--max-queue", type=int, help="calls that may wait for a slot before OVERLOADED (16)"
    )
    start.add_argument("--echo-delay", type=float, help="seconds per token for echo models")
    start.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (0 picks one)"
    )
    start.set_defaults(func=_node_start)

    gateway = commands.add_parser("gateway", help="run an HTTP gateway").add_subparsers(
        dest="action", required=True
    )
    gstart = gateway.add_parser("start", help="serve the HTTP API and route to nodes")
    _peer_flags(gstart)
    gstart.add_argument("--host", help="HTTP address to bind (default 127.0.0.1)")
    gstart.add_argument("--port", type=int, help="HTTP port (default 8080; 0 picks one)")
    gstart.set_defaults(func=_gateway_start)

    up = commands.add_parser("up", help="start a local swarm: one gateway and N nodes")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument(
        "--model", default=None, help="model id (default: the bundled SmolLM2-135M-Instruct)"
    )
    up.add_argument("--data-dir", type=Path)
    up.add_argument("--json", action="store_true", help="print the ready line as JSON")
    up.set_defaults(func=_up)

    tokens = commands.add_parser("tokens", help="user access tokens").add_subparsers(
        dest="action", required=True
    )
    issue = tokens.add_parser("issue", help="print a signed token for a user")
    issue.add_argument("--user", required=True)
    issue.add_argument("--ttl", default="1h", help="lifetime: 30m, 1h, 7d")
    issue.add_argument(
        "--scope",
        choices=["inference", "session", "admin"],
        default="inference",
        help="admin: the operator's views (GET /v1/admin/usage)",
    )
    issue.add_argument("--data-dir", type=Path)
    issue.set_defaults(func=_tokens_issue)
    from node import cli_admin

    cli_admin.register_tokens(tokens)

    keys_ = commands.add_parser("keys", help="operator keys and admission").add_subparsers(
        dest="action", required=True
    )
    init = keys_.add_parser("init", help="create the operator and token keys")
    init.add_argument("--data-dir", type=Path)
    init.set_defaults(func=_keys)
    admit = keys_.add_parser("admit", help="issue a membership certificate for a peer")
    admit.add_argument("peer_id")
    admit.add_argument("--role", choices=["node", "gateway", "client"], default="node")
    admit.add_argument("--data-dir", type=Path)
    admit.add_argument("--out", type=Path, required=True, help="certificate file to write")
    admit.set_defaults(func=_keys)
    rotate = keys_.add_parser(
        "rotate-jwt", help="sign tokens with a new key; tokens signed before stay valid"
    )
    rotate.add_argument("--data-dir", type=Path)
    rotate.set_defaults(func=_keys)

    for extension in _extensions():
        extension.register(commands)
    return parser


def _extensions() -> list[Any]:
    """Modules that add their own subcommands with ``register(commands)``."""
    from gateway import repl, repl_login
    from node import cli_admin, cli_models, peers_cli

    return [peers_cli, repl, repl_login, cli_admin, cli_models]


def _up(args: argparse.Namespace) -> int:
    from node.up import run_up

    return run_up(args.port, args.nodes, args.model, args.data_dir, args.json)


def _overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {n: getattr(args, n, None) for n in names}


def _node_start(args: argparse.Namespace) -> int:
    import trio

    from node.config import NodeConfig, load
    from node.runtime import Node

    config = load(
        NodeConfig,
        "node",
        _overrides(
            args,
            [
                "data_dir",
                "listen",
                "bootstrap",
                "models",
                "model_store",
                "capacity",
                "slots",
                "max_queue",
                "echo_delay",
                "metrics_port",
                "ready_file",
                "log_level",
            ],
        ),
        args.config,
    )
    _setup_logging(config.log_level)
    if not config.models:
        from node.models import DEFAULT_MODEL

        config.models = [DEFAULT_MODEL]
    trio.run(Node(config).run)
    return 0


def _gateway_start(args: argparse.Namespace) -> int:
    import trio

    from gateway.runtime import run_gateway
    from node.config import GatewayConfig, load

    config = load(
        GatewayConfig,
        "gateway",
        _overrides(
            args, ["data_dir", "listen", "bootstrap", "host", "port", "ready_file", "log_level"]
        ),
        args.config,
    )
    _setup_logging(config.log_level)
    trio.run(run_gateway, config)
    return 0


def _tokens_issue(args: argparse.Namespace) -> int:
    import keys

    data_dir = args.data_dir or keys.default_data_dir()
    signing = keys.jwt_keys(data_dir).private
    if signing is None:
        print(
            f"error: no token signing key in {data_dir}; run `bitinglip keys init`", file=sys.stderr
        )
        return 1
    print(keys.issue(signing, args.user, keys.parse_ttl(args.ttl), args.scope))
    return 0


def _keys(args: argparse.Namespace) -> int:
    import keys

    data_dir = args.data_dir or keys.default_data_dir()
    if args.action == "init":
        keys.init_operator(data_dir)
        print(f"operator keys ready in {data_dir}")
        return 0
    if args.action == "rotate-jwt":
        kid = keys.rotate_jwt(data_dir)
        print(f"tokens are now signed with key {kid}; restart gateways (bitinglip up does it)")
        return 0
    cert = keys.admit(data_dir, args.peer_id, args.role)
    args.out.write_bytes(cert)
    print(f"admitted {args.peer_id} as {args.role}: wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`bitinglip peers --json | head`): not an error to report.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a person reads this: one line, no traceback
        from keys import NotAdmitted

        if isinstance(exc, NotAdmitted | ValueError | OSError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
