"""``bitinglip repl``: chat with the swarm's models from a terminal (``gateway.client.repl``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.client.api_client import DEFAULT_GATEWAY, TEXT_TASK, ClientError, GatewayClient
from gateway.client.login import saved_login
from gateway.client.repl import Repl
from gateway.client.repl_commands import Session, unchattable
from gateway.client.repl_render import Screen


def register(commands: Any) -> None:
    repl = commands.add_parser("repl", help="chat with the swarm's models in this terminal")
    repl.add_argument(
        "--gateway", help=f"gateway URL (default: the saved login, else {DEFAULT_GATEWAY})"
    )
    repl.add_argument("--token", help="token (default: $BITINGLIP_TOKEN, then the saved login)")
    repl.add_argument("--model", help="model to chat with (default: the first one served)")
    repl.add_argument("--system", help="system prompt")
    repl.add_argument("--image-model", help="model for /image (default: the first one served)")
    repl.add_argument("--image-size", help="WxH of /image's pictures (default: the gateway's)")
    repl.add_argument(
        "--image-dir", type=Path, default=Path(), help="where /image saves (default: here)"
    )
    repl.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    screen = Screen()
    url, saved_token = saved_login(args.gateway)
    url = url or DEFAULT_GATEWAY
    token = args.token or os.environ.get("BITINGLIP_TOKEN") or saved_token
    with GatewayClient(url, token) as client:
        try:
            session = _open_session(client, args)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        Repl(client, session, screen).run()
    return 0


def _open_session(client: GatewayClient, args: argparse.Namespace) -> Session:
    """Check the gateway and the token before the first prompt, and pick the model."""
    tasks = client.tasks()
    available = [m for m, task in tasks.items() if task == TEXT_TASK]
    if args.model is not None and (problem := unchattable(tasks, args.model)):
        raise ValueError(problem)  # the command's error line, like any bad argument
    model = args.model or (available[0] if available else None)
    return Session(
        model,
        system=args.system,
        image_model=args.image_model,
        image_dir=args.image_dir,
        image_size=args.image_size,
        models=available,
    )
