"""``bitinglip jobs submit|status|wait|cancel|list``: calls a gateway runs later (``/v1/jobs``).

Each prints a line a person reads, or the gateway's JSON with ``--json``. ``wait`` polls
until the job ends and exits 0 only if it is done; every other failure exits 1 with the
reason on standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.client.api_client import DEFAULT_GATEWAY, ClientError, GatewayClient
from gateway.client.login import saved_login

FINISHED = ("done", "failed", "cancelled")
Command = Callable[[GatewayClient, argparse.Namespace], dict[str, Any]]


def register(commands: Any) -> None:
    """Add ``jobs`` and its subcommands to the ``bitinglip`` command."""
    jobs = commands.add_parser(
        "jobs", help="submit calls to run later, follow them, cancel them"
    ).add_subparsers(dest="jobs_command", required=True)

    submit = _command(jobs, "submit", "queue a call; prints its job id", _submit)
    submit.add_argument("--kind", choices=["chat", "completion", "image"], default="chat")
    submit.add_argument("--model", help="the model (needed unless --body names it)")
    submit.add_argument("--prompt", help="the user's message, the prompt, or the picture to make")
    submit.add_argument(
        "--body", type=Path, help="a JSON file with the route's whole body instead of --prompt"
    )
    submit.add_argument("--max-tokens", type=int, help="for chat and completion")
    submit.add_argument("--priority", type=int, default=0, help="higher runs sooner")
    submit.add_argument("--webhook", metavar="URL", help="POSTed the job when it ends")
    submit.add_argument("--wait", action="store_true", help="then wait for it to end")
    submit.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)

    status = _command(jobs, "status", "show a job: its state, then its result", _status)
    status.add_argument("id")
    wait = _command(jobs, "wait", "wait for a job to end; exit 0 if it is done", _wait)
    wait.add_argument("id")
    wait.add_argument("--interval", type=float, default=1.0, help="seconds between looks")
    cancel = _command(jobs, "cancel", "cancel a job that has not ended", _cancel)
    cancel.add_argument("id")
    listed = _command(jobs, "list", "your jobs, newest first", _list)
    listed.add_argument("--limit", type=int, default=20, help="how many (at most 100)")
    listed.add_argument("--before", metavar="ID", help="the page after this job")


def _command(group: Any, name: str, help_: str, run: Command) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_)
    parser.add_argument(
        "--gateway", help=f"gateway URL (default: the saved login, else {DEFAULT_GATEWAY})"
    )
    parser.add_argument("--token", help="token (default: $BITINGLIP_TOKEN, then the saved login)")
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")
    parser.set_defaults(func=lambda args: _run(run, args))
    return parser


def _run(command: Command, args: argparse.Namespace) -> int:
    try:
        url, saved_token = saved_login(args.gateway)
        token = args.token or os.environ.get("BITINGLIP_TOKEN") or saved_token
        with GatewayClient(url or DEFAULT_GATEWAY, token, timeout=30.0) as client:
            shown = command(client, args)
    except (ClientError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(shown, indent=2))
    elif "data" in shown:
        for job in shown["data"]:
            print(_line(job))
        if shown.get("has_more"):
            print(f"(more: --before {shown['next']})")
    else:
        print(_line(shown))
        if shown["state"] in FINISHED:
            print(_outcome(shown))
    waited = args.jobs_command == "wait" or getattr(args, "wait", False)
    return 1 if waited and shown.get("state") != "done" else 0


def _submit(client: GatewayClient, args: argparse.Namespace) -> dict[str, Any]:
    job = client.submit_job(_job_body(args))
    return _waited(client, job["id"], args.interval) if args.wait else job


def _job_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.body is not None:
        request = json.loads(args.body.read_text())
        if not isinstance(request, dict):
            raise ValueError(f"{args.body} does not hold a JSON object")
    elif args.prompt is None or args.model is None:
        raise ValueError("give --model and --prompt, or --body")
    elif args.kind == "chat":
        request = {"messages": [{"role": "user", "content": args.prompt}]}
    else:
        request = {"prompt": args.prompt}
    if args.model is not None:
        request["model"] = args.model
    if args.max_tokens is not None:
        request["max_tokens"] = args.max_tokens
    body: dict[str, Any] = {"kind": args.kind, "request": request, "priority": args.priority}
    return body | ({"webhook": args.webhook} if args.webhook else {})


def _status(client: GatewayClient, args: argparse.Namespace) -> dict[str, Any]:
    return client.job(args.id)


def _wait(client: GatewayClient, args: argparse.Namespace) -> dict[str, Any]:
    return _waited(client, args.id, args.interval)


def _waited(client: GatewayClient, job_id: str, interval: float) -> dict[str, Any]:
    while (job := client.job(job_id))["state"] not in FINISHED:
        time.sleep(max(0.05, interval))
    return job


def _cancel(client: GatewayClient, args: argparse.Namespace) -> dict[str, Any]:
    return client.cancel_job(args.id)


def _list(client: GatewayClient, args: argparse.Namespace) -> dict[str, Any]:
    return client.jobs(args.limit, args.before)


def _line(job: dict[str, Any]) -> str:
    """``job_…  queued  chat echo  (2 ahead, ~30 s)``."""
    where = ""
    if job.get("state") == "queued":
        where = f"  ({job.get('position', '?')} ahead"
        eta = job.get("eta_seconds")
        where += f", ~{eta:g} s)" if isinstance(eta, int | float) else ")"
    return f"{job['id']}  {job['state']:<9}  {job.get('kind', '')} {job.get('model', '')}{where}"


def _outcome(job: dict[str, Any]) -> str:
    """What a job that ended gave: its text, its pictures, or why not."""
    if job["state"] != "done":
        error = job.get("error") or {}
        return f"  {error.get('message', job['state'])}"
    result = job.get("result") or {}
    if job.get("kind") == "image":
        return "\n".join(f"  {d.get('url') or '(b64 image)'}" for d in result.get("data", []))
    choice = (result.get("choices") or [{}])[0]
    text = choice.get("message", {}).get("content") if "message" in choice else choice.get("text")
    return str(text)
