"""Where a gateway keeps the images it answers with as URLs.

Each image is a file named by 128 random bits, readable by the gateway's user only (0600, in
a 0700 directory): the name is the only thing guarding it over HTTP, and the disk should not
hand it to every local user either. An image lives ``ttl`` seconds; all of them together
take at most ``max_bytes``, the oldest deleted first to make room, so a user asking for
images by URL cannot fill the gateway's disk. The methods block: routes run them on a
worker thread.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from contextlib import suppress
from pathlib import Path

from keys.files import write_private

NAME = re.compile(r"[0-9a-f]{32}")
DEFAULT_TTL = 3600.0
DEFAULT_MAX_BYTES = 1 << 30


class ImageStore:
    def __init__(
        self, directory: Path, ttl: float = DEFAULT_TTL, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self.max_bytes = max_bytes
        # Saves at once would each count the directory before the other wrote.
        self._saving = threading.Lock()

    def save(self, images: list[bytes], now: float) -> list[str]:
        """Write ``images`` under fresh names, after making room for them; their names.
        One answer's images are kept even if they alone are over ``max_bytes``."""
        with self._saving:
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            self._make_room(sum(map(len, images)), now)
            names = []
            for image in images:
                name = secrets.token_hex(16)
                write_private(self.directory / f"{name}.png", image)
                names.append(name)
        return names

    def read(self, name: str, now: float) -> bytes | None:
        """The image called ``name`` unless it is not one of ours, missing or expired."""
        if not NAME.fullmatch(name):  # nothing else under (or above) the directory
            return None
        path = self.directory / f"{name}.png"
        try:
            if now - path.stat().st_mtime > self.ttl:
                return None
            return path.read_bytes()
        except OSError:  # missing, or not a file
            return None

    def _make_room(self, room: int, now: float) -> None:
        """Delete what has expired, then the oldest until ``room`` more bytes fit."""
        kept: list[tuple[float, int, Path]] = []
        for path in self.directory.iterdir():
            with suppress(OSError):  # gone already, or not a file
                stat = path.stat()
                if now - stat.st_mtime > self.ttl:
                    path.unlink()
                else:
                    kept.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in kept)
        for _, size, path in sorted(kept):
            if total + room <= self.max_bytes:
                return
            with suppress(OSError):
                path.unlink()
            total -= size
