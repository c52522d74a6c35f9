"""One run of an inference engine's command: a process group of its own, and the last
lines of its output for the message when it fails."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO

from node.worker.runners.engine_wire import EngineStartError

logger = logging.getLogger(__name__)

# Lines of output kept for the message when the engine fails.
TAIL_LINES = 40
# Longer output lines are split: a progress bar redrawn with carriage returns is one line.
MAX_LINE_BYTES = 64 * 1024
# Between SIGTERM to the process group and SIGKILL.
STOP_GRACE = 15.0


class EngineProcess:
    """``command`` running in its own process group (engines start workers: all of them
    stop together), its output read into the log and a short tail."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str] | None) -> None:
        """Start ``command``; raises ``EngineStartError`` when it cannot be run at all."""
        self.name = name
        self.program = command[0]
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        try:
            self._popen = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=None if env is None else {**os.environ, **env},
                start_new_session=True,
            )
        except OSError as exc:
            raise EngineStartError(f"{name}: could not run {self.program}: {exc}") from exc
        assert self._popen.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self._popen.stdout,), name=f"{name} output", daemon=True
        )
        self._reader.start()
        self._stopped = False

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        """The exit code (negative: the signal that killed it), or None while it runs."""
        return self._popen.poll()

    def tail(self) -> str:
        """The last lines of its output, to append to a message."""
        self._reader.join(timeout=2.0)  # after an exit: wait for its last words
        lines = list(self._tail)
        return "; its last output:\n" + "\n".join(lines) if lines else "; it printed nothing"

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after a grace period, and reap
        the process. Workers it started die with it even when it is already gone."""
        if self._stopped:
            return  # its process group id may belong to a new process by now
        _signal_group(self._popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=STOP_GRACE)
        _signal_group(self._popen.pid, signal.SIGKILL)
        self._popen.wait()
        self._stopped = True
        self._reader.join(timeout=2.0)

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
                line = raw.decode(errors="replace").rstrip()
                self._tail.append(line)
                logger.debug("%s: %s", self.name, line)


def describe_exit(code: int) -> str:
    """``exited with code 3``, or ``was killed by SIGKILL``."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)
