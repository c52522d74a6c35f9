"""Keeps the peers of a local swarm running: one that exits is started again, with backoff.

Each peer has a plan: its role and a function giving its flags at the moment it starts, so
a peer started again joins through the addresses the others have now (a restarted gateway
listens on a new libp2p port). A peer that exits again soon after is given 1 s, then 2, 4,
... up to 30 s before the next start; one that had run for a minute starts from 1 s again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

FIRST_BACKOFF = 1.0
LONGEST_BACKOFF = 30.0
HEALTHY_AFTER = 60.0


class Swarm(Protocol):
    """What is supervised: ``node.cli.up.LocalSwarm``."""

    procs: dict[str, subprocess.Popen[bytes]]

    def spawn(self, name: str, role: str, extra: list[str]) -> None: ...


@dataclass
class Plan:
    role: str
    flags: Callable[[], list[str]]
    started: float = 0.0
    failures: int = 0
    due: float | None = None  # when it is to be started again, once it has exited


class Supervisor:
    def __init__(self, swarm: Swarm, plans: dict[str, Plan]) -> None:
        self.swarm = swarm
        self.plans = plans

    def start(self, name: str, now: float) -> None:
        plan = self.plans[name]
        self.swarm.spawn(name, plan.role, plan.flags())
        plan.started, plan.due = now, None

    def tick(self, now: float) -> list[str]:
        """Notice peers that exited and start those whose backoff is over; say what it did."""
        said: list[str] = []
        for name, plan in self.plans.items():
            proc = self.swarm.procs.get(name)
            if proc is None or proc.poll() is None:
                continue
            if plan.due is None:
                if now - plan.started >= HEALTHY_AFTER:
                    plan.failures = 0
                plan.failures += 1
                wait = min(LONGEST_BACKOFF, FIRST_BACKOFF * 2 ** (plan.failures - 1))
                plan.due = now + wait
                said.append(f"{name} exited with code {proc.returncode}; starting it in {wait:g} s")
            elif now >= plan.due:
                self.start(name, now)
                said.append(f"{name} started again (pid {self.swarm.procs[name].pid})")
        return said
