"""What the benchmark scripts share: the venv they run in, a local echo swarm, percentiles,
where the run happened, and writing one ``## ...`` section of docs/benchmarks.md.

Imported as ``scripts.benchlib`` (each script puts the repository root on ``sys.path``;
``use_checkout`` does it for the processes a script starts too).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.cli.up import LocalSwarm

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "plots"
VERSIONED = ("hypercorn", "fastapi", "libp2p", "httpx", "trio")


def reexec_in_venv(script: str) -> None:
    """Run ``script`` under the project's venv whatever ``python3`` started it."""
    venv = VENV_PYTHON.parent.parent.resolve()  # the venv may be a link to another one
    if not VENV_PYTHON.exists() or Path(sys.prefix).resolve() == venv:
        return
    os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(script).resolve()), *sys.argv[1:]])


def use_checkout() -> None:
    """Import this checkout's packages, here and in every process started from here."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


# --- numbers --------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), interpolating linearly between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    at = (len(ordered) - 1) * p / 100
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass(frozen=True)
class Stats:
    """Latency percentiles in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    count: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Stats:
        ms = [s * 1000 for s in seconds]
        return cls(
            percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), sum(ms) / len(ms), len(ms)
        )

    def rounded(self) -> dict[str, float]:
        return {
            "p50_ms": round(self.p50, 3),
            "p90_ms": round(self.p90, 3),
            "p99_ms": round(self.p99, 3),
            "mean_ms": round(self.mean, 3),
            "count": self.count,
        }


# --- where and when -------------------------------------------------------------------------


def machine() -> str:
    """CPUs, OS, Python and the load average now: call it before anything starts."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, load average before the run {load}"
    )


def versions(names: Sequence[str] = VERSIONED) -> str:
    from importlib.metadata import PackageNotFoundError, version

    shown = []
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            shown.append(f"{name} {version(name)}")
    return ", ".join(shown)


def header(title: str, command: str, host: str, extra_versions: str = "") -> list[str]:
    """A section's first lines: its title, when, on what, with which versions, and how."""
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    shown = ", ".join(filter(None, [versions(), extra_versions]))
    return [title, "", f"Measured {when} on {host}; {shown}.", "", f"Command: `{command}`", ""]


def write_section(section: str, doc: Path = DOC) -> None:
    """Replace the section titled by ``section``'s first line (or add it at the end); every
    other section stays as it is."""
    title = section.splitlines()[0].rstrip()
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == title), None)
    body = section.rstrip("\n") + "\n"
    if start is None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(text.rstrip("\n") + "\n\n" + body)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    after = "".join(lines[end:])
    doc.write_text("".join(lines[:start]) + body + ("\n" + after if after else ""))


# --- a local echo swarm ---------------------------------------------------------------------

AMPLE_PLAN = (
    "requests_per_minute = 100000000\ntokens_per_day = 1000000000\n"
    "images_per_day = 1000\nconcurrent = 100000\nmax_choices = 16\n"
)


def gateway_config(path: Path, settings: dict[str, str] | None = None) -> Path:
    """A gateway config whose default plan never refuses: benchmarks measure the path."""
    # One user drives every connection: no waiting line of the gateway's may refuse it.
    lines = [
        "[gateway]",
        'default_plan = "bench"',
        "queue_limit = 100000",
        "queue_per_user = 100000",
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (settings or {}).items()]
    path.write_text("\n".join(lines) + "\n\n[gateway.plans.bench]\n" + AMPLE_PLAN)
    return path


def bench_token(data_dir: Path, accounts: Path, user: str = "bench") -> str:
    """A week's token for ``user`` (on the ample plan) of the accounts database in
    ``accounts``, as the operator issues one."""
    import keys
    from gateway.accounts.database import Store
    from gateway.accounts.tokens import operator_token
    from gateway.accounts.users import create_user

    signing = keys.jwt_keys(data_dir).private
    assert signing is not None
    with Store.open(accounts) as store:
        if store.user(user) is None:
            create_user(store, user, None, "bench", time.time())
        return operator_token(store, signing, user, 7 * 86400)


@dataclass
class Swarm:
    """A started local swarm: its processes, each gateway's URL and a user token."""

    local: LocalSwarm
    urls: dict[str, str]
    token: str

    def stop(self) -> None:
        self.local.stop()


def start_swarm(
    data_dir: Path,
    nodes: dict[str, list[str]],
    gateways: dict[str, dict[str, str]] | None = None,
    timeout: float = 120,
) -> Swarm:
    """Gateways (name -> ``[gateway]`` settings), then nodes (name -> ``node start`` flags)
    bootstrapping from every gateway, all started at once; returns when every gateway
    is connected to every node. The caller stops it (``Swarm.stop``), on error too."""
    import httpx

    import keys
    from node.cli.up import LocalSwarm

    gateways = gateways if gateways is not None else {"gateway": {}}
    keys.init_operator(data_dir)
    # One accounts database for every gateway, so one token is good at each of them.
    accounts = data_dir / "accounts"
    accounts.mkdir(parents=True, exist_ok=True)
    gateways = {name: {"database_dir": str(accounts)} | s for name, s in gateways.items()}
    local = LocalSwarm(data_dir)
    swarm = Swarm(local, {}, "")
    try:
        for name, settings in gateways.items():
            config = gateway_config(data_dir / f"{name}.toml", settings)
            local.spawn(name, "gateway", ["--port", "0", "--config", str(config)])
        local.wait(list(gateways), "ready", 60)
        boot = [str(local.status(name)["addrs"][0]) for name in gateways]  # type: ignore[index]
        joins = [flag for addr in boot for flag in ("--bootstrap", addr)]
        for name, flags in nodes.items():
            local.spawn(name, "node", [*flags, *joins])
        local.wait(list(nodes), "ready", timeout)
        swarm.urls = {name: str(local.status(name)["url"]) for name in gateways}
        swarm.token = bench_token(data_dir, accounts)
        deadline = time.monotonic() + timeout
        for url in swarm.urls.values():
            while httpx.get(f"{url}/health", timeout=5).json().get("nodes", 0) < len(nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway at {url} did not see {len(nodes)} nodes")
                time.sleep(0.1)
        return swarm
    except BaseException:
        local.stop()
        raise
