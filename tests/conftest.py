"""Shared fixtures: real peer processes on 127.0.0.1, cleaned up whatever happens."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.types import ASGIApp

import keys
from node.cli.up import LocalSwarm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Peer processes inherit this: one torch thread each on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")


class Swarm:
    """A local swarm started by a test: a gateway and named nodes."""

    def __init__(self, data_dir: Path) -> None:
        self.local = LocalSwarm(data_dir)
        self.data_dir = data_dir
        keys.init_operator(data_dir)

    def start_gateway(
        self, name: str = "gateway", bootstrap: list[str] | None = None
    ) -> dict[str, object]:
        extra = ["--port", "0"] + [x for b in bootstrap or [] for x in ("--bootstrap", b)]
        self.local.spawn(name, "gateway", extra)
        self.local.wait([name], "ready", 60)
        return self.local.status(name)

    def start_node(
        self, name: str, bootstrap: list[str], models: list[str], extra: list[str] | None = None
    ) -> None:
        args = [x for b in bootstrap for x in ("--bootstrap", b)]
        args += [x for m in models for x in ("--model", m)]
        args += ["--model-store", str(self.data_dir), *(extra or [])]
        self.local.spawn(name, "node", args)

    def wait_ready(self, names: list[str], timeout: float = 120) -> None:
        self.local.wait(names, "ready", timeout)

    def addr(self, name: str) -> str:
        addrs = self.local.status(name)["addrs"]
        assert isinstance(addrs, list)
        return str(addrs[0])

    def peer_id(self, name: str) -> str:
        return str(self.local.status(name)["peer_id"])

    def url(self, name: str = "gateway") -> str:
        return str(self.local.status(name)["url"])

    def token(self, user: str = "tester", ttl: float = 3600) -> str:
        signing = keys.jwt_keys(self.data_dir).private
        assert signing is not None
        return keys.issue(signing, user, ttl)

    def kill(self, name: str) -> None:
        proc = self.local.procs[name]
        proc.kill()
        proc.wait()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI a skipped test is a failure: a missing browser or tool must not pass
    unnoticed. Only tests marked ``gpu`` may skip there (no accelerator in CI)."""
    report = yield
    if os.environ.get("CI") == "true" and report.skipped and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        report.longrepr = f"skipped under CI, where every required part must run: {reason}"
    return report


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` on a real hypercorn server on 127.0.0.1 (port 0); yields its base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        yield str(binds[0])
        stop.set()


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    s = Swarm(tmp_path / "swarm")
    try:
        yield s
    finally:
        s.local.stop()
