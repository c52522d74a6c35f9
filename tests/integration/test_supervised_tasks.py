"""Background tasks of a live gateway fail, and the gateway keeps serving: discovery, the
gateway-to-gateway sync, the advertiser and the accounts refresh each raise once, are
logged, and run again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import keys
from gateway.accounts.users import Accounts
from gateway.config import GatewayConfig
from gateway.mesh.subscriptions import MeshSubscriptions
from gateway.routing.tracker import Tracker
from gateway.runtime import run_gateway
from node.p2p import tasks
from node.p2p.advertise import Advertiser


def inject(monkeypatch: pytest.MonkeyPatch, cls: type, runs: dict[str, int]) -> None:
    """``cls.run`` raises once, after it started, then runs as before."""
    real = cls.run  # type: ignore[attr-defined]
    name = cls.__name__

    async def run(self: Any, *args: Any, **kwargs: Any) -> None:
        runs[name] = runs.get(name, 0) + 1
        if runs[name] == 1:
            status = kwargs.get("task_status")
            if status is not None:
                status.started()
            raise RuntimeError(f"injected into {name}")
        await real(self, *args, **kwargs)

    monkeypatch.setattr(cls, "run", run)


async def test_a_gateway_outlives_a_failure_of_each_background_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "FIRST_BACKOFF", 0.05)
    runs: dict[str, int] = {}
    for cls in (Tracker, MeshSubscriptions, Advertiser, Accounts):
        inject(monkeypatch, cls, runs)
    keys.init_operator(tmp_path)
    peer = tmp_path / "gateway"
    keys.provision(peer, tmp_path, "gateway")
    ready = tmp_path / "gateway.json"
    config = GatewayConfig(data_dir=peer, port=0, listen=["/ip4/127.0.0.1/tcp/0"], ready_file=ready)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_gateway, config)
        with trio.fail_after(30):
            while set(runs.values()) != {2} or len(runs) != 4:
                await trio.sleep(0.05)
            while not ready.exists() or "url" not in json.loads(ready.read_text()):
                await trio.sleep(0.05)
        url = json.loads(ready.read_text())["url"]
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{url}/health")
        assert health.status_code == 200
        nursery.cancel_scope.cancel()
    for name in ("discovery", "gateway sync", "advertiser", "accounts"):
        assert f"{name} failed; starting it again in 0.05 s" in caplog.text
    assert caplog.text.count("RuntimeError: injected into") == 4  # tracebacks logged
