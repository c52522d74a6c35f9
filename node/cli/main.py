"""The ``bitinglip`` command: ``main(argv) -> int`` over one module per command group, each
adding its subcommands with ``register(commands)``."""

from __future__ import annotations

import argparse
import os
import sys

from node.cli import admin, jobs, login, models, operator, peers, repl, start, up

# In the order ``bitinglip --help`` lists them.
REGISTER = [
    start.register,
    up.register,
    admin.register_tokens,
    operator.register,
    peers.register,
    repl.register,
    login.register,
    jobs.register,
    admin.register,
    models.register,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitinglip", description="A peer-to-peer swarm serving AI models."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for register in REGISTER:
        register(commands)
    return parser


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
