"""``bitinglip login``: check a token (or trade a username and password for one) and save it."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from gateway.client.api_client import DEFAULT_GATEWAY, ClientError, GatewayClient, normalize_url
from gateway.client.login import Credentials, load_credentials, parse_expiry, save_credentials


def register(commands: Any) -> None:
    login = commands.add_parser(
        "login", help="save a gateway URL and token for `bitinglip repl` and other tools"
    )
    login.add_argument("--gateway", help=f"gateway URL (default: the saved one, {DEFAULT_GATEWAY})")
    how = login.add_mutually_exclusive_group(required=True)
    how.add_argument("--token", help="a token from `bitinglip tokens issue` or an API key")
    how.add_argument("--username", help="log in with a username and password")
    login.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    login.set_defaults(func=_login)


def _login(args: argparse.Namespace) -> int:
    try:
        saved = load_credentials() if args.gateway is None else None
    except ValueError:
        saved = None  # logging in again is how a damaged file gets replaced
    url = normalize_url(args.gateway or (saved.gateway if saved else DEFAULT_GATEWAY))
    if args.password_stdin and args.username is None:
        print("error: --password-stdin goes with --username", file=sys.stderr)
        return 2
    try:
        if args.token is not None:
            credentials = _check_token(url, args.token.strip())
        else:
            credentials = _with_password(url, args.username, _password(args.password_stdin))
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    path = save_credentials(credentials)
    who = f" as {credentials.username}" if credentials.username else ""
    print(f"logged in to {url}{who}; saved in {path}")
    return 0


def _check_token(url: str, token: str) -> Credentials:
    """A token is saved only once the gateway has accepted it."""
    with GatewayClient(url, token) as client:
        client.models()
    return Credentials(url, token)


def _with_password(url: str, username: str, password: str) -> Credentials:
    with GatewayClient(url) as client:
        body = client.login(username, password)
    user = body.get("user")
    name = user.get("username") if isinstance(user, dict) else None
    return Credentials(
        url,
        body["token"],
        name if isinstance(name, str) else username,
        parse_expiry(body.get("expires_at")),
    )


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("password: ")
