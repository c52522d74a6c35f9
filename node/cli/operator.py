"""``bitinglip keys init|admit|revoke|rotate-jwt|retire-jwt``: the swarm operator's keys and
admission."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# How long `keys revoke` gives the swarm to hear of a revocation before it leaves.
SPREAD_TIMEOUT = 30.0


def register(commands: Any) -> None:
    keys_ = commands.add_parser("keys", help="operator keys and admission").add_subparsers(
        dest="action", required=True
    )
    init = keys_.add_parser("init", help="create the operator and token keys")
    init.add_argument("--data-dir", type=Path)
    init.set_defaults(func=_keys)
    admit = keys_.add_parser("admit", help="issue a membership certificate for a peer")
    admit.add_argument("peer_id")
    # ``operator``: a client that may also load and unload models on nodes.
    admit.add_argument("--role", choices=["node", "gateway", "client", "operator"], default="node")
    admit.add_argument(
        "--ttl", default="24h", help="how long it is valid (default 24h; admit again to renew)"
    )
    admit.add_argument("--data-dir", type=Path)
    admit.add_argument("--out", type=Path, required=True, help="certificate file to write")
    admit.set_defaults(func=_keys)
    revoke = keys_.add_parser(
        "revoke", help="revoke a peer: every peer disconnects it and refuses it from then on"
    )
    revoke.add_argument("peer_id")
    revoke.add_argument("--data-dir", type=Path)
    revoke.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="a peer of the swarm to tell (default: the swarm `bitinglip up` runs here)",
    )
    revoke.set_defaults(func=_revoke)
    rotate = keys_.add_parser(
        "rotate-jwt", help="sign tokens with a new key; tokens signed before stay valid"
    )
    rotate.add_argument("--data-dir", type=Path)
    rotate.set_defaults(func=_keys)
    retire = keys_.add_parser(
        "retire-jwt", help="refuse every token signed by a previous token key, for good"
    )
    retire.add_argument("kid", help="the key's id (a token's kid; jwt.<kid>.pub)")
    retire.add_argument("--data-dir", type=Path)
    retire.set_defaults(func=_retire)


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
    try:
        lifetime = keys.parse_ttl(args.ttl)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cert = keys.admit(data_dir, args.peer_id, args.role, lifetime)
    args.out.write_bytes(cert)
    print(f"admitted {args.peer_id} as {args.role}: wrote {args.out}")
    return 0


def _retire(args: argparse.Namespace) -> int:
    """Retire the key in the operator's directory and in the peer directories under it
    that hold token keys (the layout ``bitinglip up`` makes): running gateways there
    refuse its tokens within a second. Elsewhere copy ``jwt.retired`` to each gateway."""
    import keys
    from keys.keyring import JWT_PUB

    data_dir = args.data_dir or keys.default_data_dir()
    try:
        keys.retire_jwt(data_dir, args.kid)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    peers = sorted(p for p in (data_dir / "peers").glob("*") if (p / JWT_PUB).is_file())
    for peer_dir in peers:
        keys.retire_jwt(peer_dir, args.kid, check=False)
    where = ", ".join(str(p) for p in [data_dir, *peers])
    print(f"tokens signed by {args.kid} are refused from now on ({where})")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    """Sign the new list, then tell the swarm: each peer passes it on to its own peers."""
    import trio

    import keys
    from node.cli.peers import read_swarm_file

    data_dir = args.data_dir or keys.default_data_dir()
    try:
        blob = keys.revoke(data_dir, args.peer_id)
    except keys.NotAdmitted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"revoked {args.peer_id} in {data_dir / 'revoked.list'}")
    bootstrap = args.bootstrap or read_swarm_file(data_dir).bootstrap
    if not bootstrap:
        print(
            "no swarm to tell (pass --bootstrap MULTIADDR): peers learn of it from any peer "
            "that has it, or from revoked.list copied into their data directory",
            file=sys.stderr,
        )
        return 0
    try:
        told = trio.run(_tell, data_dir, bootstrap, blob)
    except Exception as exc:  # unreachable, not admitted: the list is saved all the same
        print(f"error: could not reach the swarm: {exc}", file=sys.stderr)
        return 1
    print(f"told {told} peer(s); each passes it on")
    return 0


async def _tell(data_dir: Path, bootstrap: list[str], blob: bytes) -> int:
    import trio

    from node.cli.light_client import open_light_client
    from node.cli.manage import operator_dir

    async with open_light_client(operator_dir(data_dir), bootstrap, role="operator") as client:
        with trio.move_on_after(SPREAD_TIMEOUT):
            return await client.host.publish_revocations(blob)
    return 0
