"""Every process a suite run starts: bare echoes, LiteLLM's proxy, local swarms. One owner,
so that all of them stop when the run ends, however it ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from scripts.benchlib import Swarm, start_swarm
from scripts.benchsuite import litellm_proxy
from scripts.benchsuite.loadgen import pin


class Fleet:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.echoes: dict[str, str] = {}  # name -> URL
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}  # pid -> its log, to show when it dies
        self._dead: list[str] = []  # found stopped in swarms since dropped
        self._reported: set[int] = set()
        self._swarms: list[Swarm] = []
        self.litellm: litellm_proxy.Proxy | None = None
        self.litellm_reason = "not started"  # why LiteLLM is not there, when it is not

    def echo(self, name: str, delay: float = 0.0, slots: int = 0) -> str:
        """Start a bare echo server; its URL."""
        command = [sys.executable, "-m", "scripts.benchsuite.echo_server"]
        command += ["--delay", str(delay), "--slots", str(slots)]
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        self._procs.append(proc)
        self._logs[proc.pid] = self.logs / f"{name}.log"
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()  # printed once bound
        if not line.startswith("http://"):
            raise RuntimeError(f"the echo server {name} did not start: see {self.logs}")
        self.echoes[name] = line
        return line

    def start_litellm(
        self, groups: Mapping[str, Sequence[litellm_proxy.Deployment]], install: bool
    ) -> None:
        """Spawn LiteLLM's proxy if it is (or can be) installed; ``litellm_ready`` waits."""
        reason = litellm_proxy.ready_reason(install)
        if reason is not None:
            self.litellm_reason = reason
            return
        self.litellm = litellm_proxy.start(groups, self.work / "litellm")
        self._procs.append(self.litellm.proc)
        self._logs[self.litellm.proc.pid] = self.litellm.log

    def litellm_ready(self) -> litellm_proxy.Proxy | None:
        """The proxy once it answers; None (and ``litellm_reason``) when it cannot."""
        if self.litellm is None:
            return None
        try:
            litellm_proxy.wait(self.litellm)
        except RuntimeError as exc:
            self.litellm_reason = f"LiteLLM did not start: {exc}"
            self.litellm = None
            return None
        return self.litellm

    def swarm(
        self,
        name: str,
        nodes: dict[str, list[str]],
        gateways: dict[str, dict[str, str]] | None = None,
    ) -> Swarm:
        print(f"starting swarm {name!r} (logs: {self.work / name / 'logs'})", file=sys.stderr)
        started = time.monotonic()
        swarm = start_swarm(self.work / name, nodes, gateways)
        self._swarms.append(swarm)
        print(f"swarm {name!r} ready in {time.monotonic() - started:.1f} s", file=sys.stderr)
        return swarm

    def drop(self, swarm: Swarm) -> None:
        self._dead += self._stopped(self._of_swarm(swarm))
        swarm.stop()
        self._swarms.remove(swarm)

    def pids(self) -> list[int]:
        running = [p.pid for p in self._procs if p.poll() is None]
        for swarm in self._swarms:
            running += [p.pid for p in swarm.local.procs.values() if p.poll() is None]
        return running

    def dead(self) -> list[str]:
        """Every process of this run that stopped on its own since the last call, with the
        end of its log."""
        found = [(p, self._logs.get(p.pid)) for p in self._procs]
        for swarm in self._swarms:
            found += self._of_swarm(swarm)
        dead, self._dead = self._dead + self._stopped(found), []
        return dead

    @staticmethod
    def _of_swarm(swarm: Swarm) -> list[tuple[subprocess.Popen[bytes], Path | None]]:
        logs = swarm.local.data_dir / "logs"
        return [(p, logs / f"{name}.log") for name, p in swarm.local.procs.items()]

    def _stopped(self, found: list[tuple[subprocess.Popen[bytes], Path | None]]) -> list[str]:
        report = []
        for proc, log in found:
            if proc.poll() is None or proc.pid in self._reported:
                continue
            self._reported.add(proc.pid)
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log else []
            shown = log.name if log else str(proc.args)
            report.append(f"{shown} exited with {proc.returncode}: " + " / ".join(tail))
        return report

    def pin(self, cores: set[int]) -> None:
        """Every server process started so far onto ``cores``."""
        for pid in self.pids():
            pin(pid, cores)

    def stop(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: still clean
        try:
            for swarm in self._swarms:
                swarm.stop()
            self._swarms.clear()
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in self._procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._procs.clear()
        finally:
            signal.signal(signal.SIGINT, previous)
