"""The local swarm's supervisor: a peer that exits is started again, later each time it
exits soon, and from 1 s again once it had run a while."""

from __future__ import annotations

from typing import Any

from node.cli.supervise import HEALTHY_AFTER, LONGEST_BACKOFF, Plan, Supervisor


class Proc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class Swarm:
    def __init__(self) -> None:
        self.procs: dict[str, Any] = {}
        self.started: list[tuple[str, str, list[str]]] = []

    def spawn(self, name: str, role: str, extra: list[str]) -> None:
        self.procs[name] = Proc(len(self.started) + 100)
        self.started.append((name, role, extra))


def test_a_peer_that_keeps_dying_waits_longer_each_time() -> None:
    swarm = Swarm()
    flags = iter([["--bootstrap", "a"], ["--bootstrap", "b"], ["--bootstrap", "c"]])
    supervisor = Supervisor(swarm, {"node-0": Plan("node", lambda: next(flags))})
    supervisor.start("node-0", 0.0)
    assert supervisor.tick(1.0) == []  # running: nothing to do
    swarm.procs["node-0"].returncode = -9
    assert supervisor.tick(2.0) == ["node-0 exited with code -9; starting it in 1 s"]
    assert supervisor.tick(2.5) == []  # not yet
    assert supervisor.tick(3.0) == ["node-0 started again (pid 101)"]
    swarm.procs["node-0"].returncode = 1
    assert supervisor.tick(4.0) == ["node-0 exited with code 1; starting it in 2 s"]
    assert supervisor.tick(6.0) == ["node-0 started again (pid 102)"]
    # Flags are asked for at each start: a peer joins through the addresses of now.
    assert [extra for _, _, extra in swarm.started] == [
        ["--bootstrap", "a"],
        ["--bootstrap", "b"],
        ["--bootstrap", "c"],
    ]


def test_backoff_is_capped_and_forgotten_after_a_healthy_run() -> None:
    swarm = Swarm()
    supervisor = Supervisor(swarm, {"g": Plan("gateway", list)})
    now = 0.0
    supervisor.start("g", now)
    waits = []
    for _ in range(8):
        swarm.procs["g"].returncode = 1
        said = supervisor.tick(now)
        waits.append(float(said[0].rsplit(" in ", 1)[1].removesuffix(" s")))
        now = supervisor.plans["g"].due or now
        supervisor.tick(now)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    assert max(waits) == LONGEST_BACKOFF
    swarm.procs["g"].returncode = 1
    assert supervisor.tick(now + HEALTHY_AFTER) == ["g exited with code 1; starting it in 1 s"]
