"""``bitinglip node start`` and ``bitinglip gateway start``: run a peer in this process.

The ``node`` group also holds ``node info`` (``node.cli.info``): what a node here would
advertise."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from node.cli import info, log_format, manage
from node.p2p import logs


def register(commands: Any) -> None:
    node = commands.add_parser("node", help="run a GPU node").add_subparsers(
        dest="action", required=True
    )
    start = node.add_parser("start", help="join the swarm and serve models")
    _peer_flags(start)
    start.add_argument(
        "--model", action="append", dest="models", help="model id or path (repeatable)"
    )
    start.add_argument(
        "--model-store",
        type=Path,
        help="directory for converted models (default: shared by the host, ~/.cache/bitinglip)",
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
    manage.register(node)
    info.register(node)

    gateway = commands.add_parser("gateway", help="run an HTTP gateway").add_subparsers(
        dest="action", required=True
    )
    gstart = gateway.add_parser("start", help="serve the HTTP API and route to nodes")
    _peer_flags(gstart)
    gstart.add_argument("--host", help="HTTP address to bind (default 127.0.0.1)")
    gstart.add_argument("--port", type=int, help="HTTP port (default 8080; 0 picks one)")
    gstart.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port alone, not on the API's (0 picks one)",
    )
    gstart.add_argument(
        "--registration",
        choices=["open", "invite", "closed"],
        help="who may register at /v1/auth/register (default closed)",
    )
    gstart.set_defaults(func=_gateway_start)


def _setup_logging(level: str, fmt: str) -> None:
    # Imported here: libp2p takes a second to import, which client commands need not pay.
    from node.p2p.host import quiet_libp2p_logs

    logs.configure(level, fmt)
    quiet_libp2p_logs(logging.DEBUG if level.lower() == "debug" else logging.CRITICAL)
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)


def _peer_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="where keys and models live")
    parser.add_argument("--config", type=Path, help="TOML file with [node]/[gateway] settings")
    parser.add_argument("--listen", action="append", help="libp2p multiaddr to listen on")
    parser.add_argument("--bootstrap", action="append", help="multiaddr of a peer to join through")
    parser.add_argument("--ready-file", type=Path, help="write status JSON here")
    parser.add_argument("--log-level", help="debug, info, warning")
    log_format.add_flag(parser)


def _overrides(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    return {n: getattr(args, n, None) for n in names}


def _node_start(args: argparse.Namespace) -> int:
    import trio

    from node.p2p.config import load
    from node.worker.config import NodeConfig
    from node.worker.runtime import Node

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
    _setup_logging(config.log_level, logs.log_format(args.log_format))
    if not config.models and not config.engines:
        from node.worker.models import DEFAULT_MODEL

        config.models = [DEFAULT_MODEL]
    trio.run(Node(config).run)
    return 0


def _gateway_start(args: argparse.Namespace) -> int:
    import trio

    from gateway.config import GatewayConfig
    from gateway.runtime import run_gateway
    from node.p2p.config import load

    config = load(
        GatewayConfig,
        "gateway",
        _overrides(
            args,
            [
                "data_dir",
                "listen",
                "bootstrap",
                "host",
                "port",
                "metrics_port",
                "registration",
                "ready_file",
                "log_level",
            ],
        ),
        args.config,
    )
    _setup_logging(config.log_level, logs.log_format(args.log_format))
    trio.run(run_gateway, config)
    return 0
