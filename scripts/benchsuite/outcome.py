"""What each sub-benchmark gets (``Context``) and gives back (``Outcome`` with its ``Check``s)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.benchsuite.fleet import Fleet


@dataclass(frozen=True)
class Check:
    """One target: what it asks, what was measured, and whether it was met (None: not
    measured, e.g. LiteLLM did not run)."""

    target: str
    measured: str
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "not measured"}[self.met]

    def row(self) -> str:
        return f"| {self.target} | {self.measured} | {self.verdict} |"

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "measured": self.measured, "met": self.met}


def checks_table(checks: list[Check]) -> list[str]:
    return ["| target | measured | result |", "|---|---:|---|", *(c.row() for c in checks)]


@dataclass
class Outcome:
    """A sub-benchmark's result: JSON data, targets, its docs section and plots."""

    data: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    section: str | None = None
    plots: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.data | {"checks": [c.to_json() for c in self.checks]}


@dataclass
class Context:
    quick: bool
    fleet: Fleet
    plots: Path  # where PNGs go
    argv: list[str]
    client_cores: set[int]
    server_cores: set[int]

    @property
    def command(self) -> str:
        return shlex.join(["scripts/bench", *self.argv])

    def cores(self) -> str:
        def shown(cores: set[int]) -> str:
            return ",".join(str(c) for c in sorted(cores))

        return (
            f"Client on CPU {shown(self.client_cores)}, servers on CPU {shown(self.server_cores)}"
        )


def litellm_cell(reason: str) -> str:
    return f"not run: {reason}"
