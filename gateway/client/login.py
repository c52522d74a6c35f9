"""``bitinglip login``, and the saved login that terminal tools start from.

The gateway URL and a token live in ``<config dir>/credentials.json``, mode 0600. The
config dir is ``$BITINGLIP_HOME``, else ``$XDG_CONFIG_HOME/bitinglip``, else
``~/.config/bitinglip``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.client.api_client import DEFAULT_GATEWAY, ClientError, GatewayClient, normalize_url
from keys.files import default_config_dir, write_private


@dataclass(frozen=True)
class Credentials:
    gateway: str
    token: str
    username: str | None = None
    expires_at: str | float | None = None


def credentials_path() -> Path:
    return default_config_dir() / "credentials.json"


def load_credentials() -> Credentials | None:
    """The saved login, or None; ``ValueError`` if the file is there but unreadable."""
    path = credentials_path()
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"cannot read {path} ({exc}): log in again with `bitinglip login`"
        ) from exc
    if not (
        isinstance(body, dict)
        and isinstance(body.get("gateway"), str)
        and isinstance(body.get("token"), str)
    ):
        raise ValueError(f"{path} is not a saved login: log in again with `bitinglip login`")
    username = body.get("username")
    return Credentials(
        body["gateway"],
        body["token"],
        username if isinstance(username, str) else None,
        _expiry(body.get("expires_at")),
    )


def save_credentials(credentials: Credentials) -> Path:
    path = credentials_path()
    write_private(path, json.dumps(asdict(credentials), indent=2).encode() + b"\n")
    return path


def saved_login(gateway: str | None) -> tuple[str | None, str | None]:
    """The gateway to use (``gateway``, else the saved one; None if neither) and the saved
    token for it; ``ValueError`` if the saved login is damaged.

    The saved token goes only to the gateway it was issued by: naming another one with
    ``--gateway`` must not hand it a credential for the first.
    """
    saved = load_credentials()
    wanted = gateway or (saved.gateway if saved else None)
    if wanted is None:
        return None, None
    url = normalize_url(wanted)
    if saved is not None and normalize_url(saved.gateway) == url:
        return url, saved.token
    return url, None


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
        _expiry(body.get("expires_at")),
    )


def _expiry(value: Any) -> str | float | None:
    """The contract leaves its form open: an ISO date or a Unix time."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("password: ")
