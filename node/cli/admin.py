"""``bitinglip users ...`` and ``bitinglip tokens ...``: a gateway's accounts, from the
operator's shell, on the gateway's database through the accounts' own rules.

``--data-dir`` names the gateway's data directory, or one holding ``peers/gateway`` (the
layout ``bitinglip up`` makes), which is then used; a ``--config`` that sets
``database_dir`` wins. A running gateway sees the changes within a second. Tables are for
people; ``--json`` is for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

import keys
from gateway.accounts.database import FILENAME, KeyRecord, Store, UserRecord
from gateway.accounts.errors import Refused
from gateway.accounts.invites import new_invite
from gateway.accounts.tokens import operator_token
from gateway.accounts.users import create_user
from gateway.client import columns
from gateway.client.columns import Column
from gateway.client.terminal import cell
from gateway.config import GatewayConfig
from node.cli import tables

EXIT_NOT_FOUND = 2
# Tables, their columns given up from the end on a narrow terminal.
USER_COLUMNS = tuple(
    Column(name, right=name == "LIVE KEYS")
    for name in ("USER", "PLAN", "STATE", "LIVE KEYS", "PASSWORD", "CREATED")
)
KEY_COLUMNS = (
    Column("ID"),
    Column("USER"),
    Column("NAME", wrap=16),
    Column("CREATED"),
    Column("EXPIRES"),
    Column("STATE"),
)
# An id (what `tokens revoke` takes) and whether it still works matter most.
KEY_KEEP = ("ID", "STATE", "USER", "NAME", "EXPIRES", "CREATED")


def gateway_dir(data_dir: Path | None) -> Path:
    """Where the gateway's database is for ``--data-dir`` (see the module docstring)."""
    base = data_dir or keys.default_data_dir()
    nested = base / "peers" / "gateway"
    if not (base / FILENAME).exists() and nested.is_dir():
        return nested
    return base


def register(commands: Any) -> None:
    users = commands.add_parser("users", help="a gateway's users and their plans")
    actions = users.add_subparsers(dest="action", required=True)
    add = _command(actions, "add", "create a user", _users_add)
    add.add_argument("name")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password (one line) from stdin"
    )
    add.add_argument("--plan", help="the user's plan (default: the gateway's default plan)")
    add.add_argument("--admin", action="store_true", help="may use the admin routes")
    add.add_argument("--config", type=Path, help="the gateway's TOML file, where plans are")
    listing = _command(actions, "list", "list the users", _users_list)
    tables.add_flags(listing)
    for name, helps in (("disable", "refuse every token of a user"), ("enable", "undo disable")):
        _command(actions, name, helps, _users_disable).add_argument("name")
    plan = _command(actions, "set-plan", "move a user to another plan", _users_set_plan)
    plan.add_argument("name")
    plan.add_argument("plan")
    plan.add_argument("--config", type=Path, help="the gateway's TOML file, where plans are")
    admin = _command(actions, "admin", "let a user use the admin routes", _users_admin)
    admin.add_argument("name")
    admin.add_argument("--off", action="store_true", help="take the right away again")
    invite = _command(actions, "invite", "print a single-use registration code", _users_invite)
    invite.add_argument("--ttl", default="7d", help="how long the code is good (30d at most)")


def register_tokens(commands: Any) -> None:
    """``tokens issue|list|revoke``: users' access tokens and API keys."""
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
        help="admin: the /v1/admin routes, for a user marked admin (`users admin NAME`)",
    )
    issue.add_argument("--data-dir", type=Path)
    issue.add_argument("--config", type=Path, help="the gateway's TOML file (max_token_ttl)")
    issue.set_defaults(func=_tokens_issue)
    listing = _command(tokens, "list", "list the API keys users made", _tokens_list)
    listing.add_argument("--user")
    tables.add_flags(listing)
    revoke = _command(tokens, "revoke", "refuse a token from now on", _tokens_revoke)
    revoke.add_argument("token", metavar="JTI", help="a key id or token id, or the token itself")


def _command(actions: Any, name: str, helps: str, func: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=helps)
    parser.add_argument("--data-dir", type=Path, help="the gateway's data dir (or up's)")
    parser.set_defaults(func=func)
    return parser


def _config(args: argparse.Namespace) -> GatewayConfig:
    from node.p2p.config import load

    return load(GatewayConfig, "gateway", {}, getattr(args, "config", None))


def _store(args: argparse.Namespace) -> Store:
    return Store.open(_config(args).database_dir or gateway_dir(args.data_dir))


def _check_plan(plan: str, config_file: Path | None) -> str:
    from gateway.accounts.limits import Plans
    from node.p2p.config import load

    config = load(GatewayConfig, "gateway", {}, config_file)
    plans = Plans.from_config(config.plans, config.default_plan)
    if plan not in plans:
        where = f" in {config_file}" if config_file else " (pass the gateway's --config)"
        raise ValueError(f"no plan {plan!r}{where}; known: {', '.join(plans.names())}")
    return plan


def _tokens_issue(args: argparse.Namespace) -> int:
    """A token for a user of this gateway's table, bound to it (see ``operator_token``)."""
    data_dir = args.data_dir or keys.default_data_dir()
    signing = keys.jwt_keys(data_dir).private
    if signing is None:
        print(
            f"error: no token signing key in {data_dir}; run `bitinglip keys init`", file=sys.stderr
        )
        return 1
    config = _config(args)
    with _store(args) as store:
        try:
            token = operator_token(
                store,
                signing,
                args.user,
                keys.parse_ttl(args.ttl),
                args.scope,
                max_ttl=config.max_token_ttl,
            )
        except Refused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND if exc.code == "no_account" else 1
    print(token)
    return 0


def _users_add(args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    config = _config(args)
    plan = _check_plan(args.plan, args.config) if args.plan else config.default_plan
    cost = keys.ScryptCost(config.scrypt_n)
    with _store(args) as store:
        try:
            user = create_user(
                store, args.name, password, plan, time.time(), admin=args.admin, cost=cost
            )
        except Refused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    login = "can log in" if password else "no password: issue tokens with `bitinglip tokens issue`"
    admin = ", an admin" if user.admin else ""
    print(f"added user {user.name} on plan {plan}{admin} ({login}) in {store.path}")
    return 0


def _users_admin(args: argparse.Namespace) -> int:
    done = f"user {args.name} {'is no longer' if args.off else 'is now'} an admin"
    return _change_user(args, lambda store: store.set_admin(args.name, not args.off), done)


def _users_invite(args: argparse.Namespace) -> int:
    ttl = keys.parse_ttl(args.ttl)
    with _store(args) as store:
        try:
            code, expires_at = new_invite(store, ttl, time.time())
        except Refused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(code)
    print(f"single use, good until {_when(expires_at)}", file=sys.stderr)
    return 0


def _users_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        users, all_keys = store.users(), store.keys()
    live = {u.name.casefold(): 0 for u in users}
    now = time.time()
    for key in all_keys:
        if key.revoked_at is None and key.expires_at > now:
            live[key.user.casefold()] = live.get(key.user.casefold(), 0) + 1
    if args.json:
        print(json.dumps([_user_json(u, live[u.name.casefold()]) for u in users], indent=2))
        return 0
    rows = [
        {
            "USER": cell(u.name),
            "PLAN": cell(u.plan),
            "STATE": ("disabled" if u.disabled else "active") + (", admin" if u.admin else ""),
            "PASSWORD": "set" if u.password else "none",
            "LIVE KEYS": str(live[u.name.casefold()]),
            "CREATED": _when(u.created),
        }
        for u in users
    ]
    title = f"users in {store.path}"
    tables.show(lambda width: columns.render(USER_COLUMNS, rows, width, title=title), args.wide)
    return 0


def _users_disable(args: argparse.Namespace) -> int:
    disabled = args.action == "disable"
    done = f"{'disabled' if disabled else 'enabled'} user {args.name}"
    return _change_user(args, lambda store: store.set_disabled(args.name, disabled), done)


def _users_set_plan(args: argparse.Namespace) -> int:
    plan = _check_plan(args.plan, args.config)
    done = f"user {args.name} is now on plan {plan}"
    return _change_user(args, lambda store: store.set_plan(args.name, plan), done)


def _change_user(args: argparse.Namespace, change: Callable[[Store], bool], done: str) -> int:
    """Apply ``change`` to the user ``args.name``; say ``done``, or that there is no such user."""
    with _store(args) as store:
        found = change(store)
    if not found:
        return _not_found(f"no user {args.name!r}")
    print(done)
    return 0


def _tokens_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        user = store.user(args.user) if args.user else None
        found = store.keys(user.name if user else None)
    if args.user and user is None:
        return _not_found(f"no user {args.user!r}")
    if args.json:
        print(json.dumps([_key_json(k) for k in found], indent=2))
        return 0
    now = time.time()
    # A key's name is whatever its user chose: literal text, never markup.
    rows = [
        {
            "ID": cell(k.jti),
            "USER": cell(k.user),
            "NAME": cell(k.name),
            "STATE": "revoked" if k.revoked_at else "expired" if k.expires_at <= now else "live",
            "EXPIRES": _when(k.expires_at),
            "CREATED": _when(k.created),
        }
        for k in found
    ]
    title = f"API keys in {store.path}"
    tables.show(
        lambda width: columns.render(KEY_COLUMNS, rows, width, keep=KEY_KEEP, title=title),
        args.wide,
    )
    return 0


def _tokens_revoke(args: argparse.Namespace) -> int:
    jti, expires_at = args.token, None
    if args.token.count(".") == 2:  # a whole token: its id and expiry are in its claims
        try:
            claims = jwt.decode(args.token, options={"verify_signature": False})
            jti, expires_at = str(claims["jti"]), float(claims["exp"])
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a token with an id and an expiry: {exc}") from exc
    with _store(args) as store:
        key = store.key(jti)
        if key is not None:
            expires_at = key.expires_at
        store.revoke(jti, expires_at, time.time())
    what = f"key {key.name!r} of {key.user}" if key else "token"
    print(f"revoked {what} ({jti})")
    return 0


def _not_found(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_NOT_FOUND


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _user_json(user: UserRecord, live_keys: int) -> dict[str, Any]:
    return {
        "name": user.name,
        "plan": user.plan,
        "disabled": user.disabled,
        "admin": user.admin,
        "password": user.password is not None,
        "live_keys": live_keys,
        "created": user.created,
    }


def _key_json(key: KeyRecord) -> dict[str, Any]:
    return {
        "id": key.jti,
        "user": key.user,
        "name": key.name,
        "created": key.created,
        "expires_at": key.expires_at,
        "revoked": key.revoked_at is not None,
    }
