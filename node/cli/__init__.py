"""The ``bitinglip`` command line: one ``main(argv) -> int``, one module per command group."""

from __future__ import annotations

from node.cli.main import main

__all__ = ["main"]
