"""What every test shares: under CI a skip is a failure, and a real server for an ASGI app."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.types import ASGIApp


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
