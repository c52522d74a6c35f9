"""The ``--log-format`` flag the commands that run peers share (``node start``,
``gateway start``, ``up``)."""

from __future__ import annotations

import argparse

from node.p2p import logs


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help=f"text for people, json for machines: one object a line (default ${logs.FORMAT_ENV}"
        " or text)",
    )
