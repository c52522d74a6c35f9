"""A small JSON file through which a peer tells whoever started it how it is doing.

``bitinglip up`` and the tests start peers on port 0 and learn their addresses, loading
progress and readiness from it, without parsing logs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keys.files import write_atomic


class StatusFile:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._fields: dict[str, Any] = {}

    def update(self, **fields: Any) -> None:
        self._fields.update(fields)
        if self._path is None:
            return
        write_atomic(self._path, json.dumps(self._fields).encode())


def read_status(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
