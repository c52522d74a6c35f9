"""LiteLLM's proxy, what an operator would run instead of a gateway, in front of bare echoes.

It lives in its own venv, ``.venv-litellm`` (its dependencies are not the project's), made by
``scripts/setup-litellm``. The proxy runs as an operator would set it up without a database:
a master key, ``least-busy`` routing and an ``rpm`` limit on each deployment. Virtual keys
(per-user keys and budgets) need PostgreSQL, so they are not used; one uvicorn worker, as a
gateway is one process; uvicorn's access log is off, as the gateway's is.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.benchlib import ROOT

VENV = ROOT / ".venv-litellm"
SPEC = "litellm[proxy]==1.80.0"  # as in scripts/setup-litellm
SETUP = ROOT / "scripts" / "setup-litellm"
MASTER_KEY = "sk-bench"
START_TIMEOUT = 180.0


def version() -> str:
    return SPEC.rsplit("==", 1)[1]


def ready_reason(install: bool) -> str | None:
    """None when the proxy can run; otherwise why not. With ``install``, a missing venv is
    made first (a minute or so, from PyPI)."""
    stamp = VENV / ".bitinglip-setup"  # written by scripts/setup-litellm once installed
    if stamp.exists() and stamp.read_text().strip() == SPEC:
        return None
    if not install:
        return f"{VENV.name} is missing (scripts/setup-litellm makes it)"
    print(f"installing {SPEC} into {VENV.name} (scripts/setup-litellm)", file=sys.stderr)
    try:
        done = subprocess.run([str(SETUP)], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not install {SPEC}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"could not install {SPEC}: {last}"
    return None


@dataclass(frozen=True)
class Deployment:
    """One backend of a model group: an OpenAI-compatible base URL and its rpm limit."""

    url: str
    rpm: int


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    spawned: float  # time.monotonic() when started
    start_s: float | None = None  # from spawn to answering its liveness probe

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {MASTER_KEY}"}


def config(groups: Mapping[str, Sequence[Deployment]]) -> dict[str, object]:
    """The proxy's config (YAML, written as JSON, which YAML reads)."""
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": f"{d.url}/v1",
                "api_key": "none",
                "rpm": d.rpm,
            },
        }
        for name, deployments in groups.items()
        for d in deployments
    ]
    return {
        "model_list": models,
        "router_settings": {"routing_strategy": "least-busy"},
        "general_settings": {"master_key": MASTER_KEY},
    }


_QUIET_ACCESS_LOG = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"uvicorn.access": {"level": "WARNING"}},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(groups: Mapping[str, Sequence[Deployment]], work: Path) -> Proxy:
    """Spawn the proxy; call ``wait`` before sending it anything."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "litellm.yaml").write_text(json.dumps(config(groups), indent=1))
    (work / "litellm-log.json").write_text(json.dumps(_QUIET_ACCESS_LOG))
    port = free_port()
    command = [
        str(VENV / "bin" / "litellm"),
        "--config", str(work / "litellm.yaml"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--num_workers", "1",
        "--telemetry", "False",
        "--log_config", str(work / "litellm-log.json"),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    with (work / "litellm.log").open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Proxy(proc, f"http://127.0.0.1:{port}", work / "litellm.log", time.monotonic())


def wait(proxy: Proxy) -> None:
    """Until the proxy answers its liveness probe; ``RuntimeError`` if it stops first."""
    import httpx

    while proxy.start_s is None:
        if proxy.proc.poll() is not None:
            tail = proxy.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"LiteLLM stopped while starting: {' / '.join(tail)}")
        if time.monotonic() - proxy.spawned > START_TIMEOUT:
            raise RuntimeError(f"no answer after {START_TIMEOUT:.0f} s (see {proxy.log})")
        try:
            if httpx.get(f"{proxy.url}/health/liveliness", timeout=2).status_code == 200:
                proxy.start_s = time.monotonic() - proxy.spawned
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
