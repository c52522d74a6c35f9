"""``scripts/chaos --quick``: a node killed, one hung, one restarted and the gateway killed
under steady load lose no call and no usage row. (The seconds it reports are measured by
the script and kept in docs/benchmarks.md, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_faults_under_load_lose_no_call_and_no_usage() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos"), "--quick", "--json", "--no-write"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode in (0, 2), done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["failed"] == {}, result
    assert result["usage_rows_lost"] == 0, result
    assert result["answered"] > 100, result
