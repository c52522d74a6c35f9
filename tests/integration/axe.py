"""An accessibility audit of a page with axe-core, for any browser test.

``axe.min.js`` comes from the ``axe-playwright-python`` package (a test dependency), so
nothing is vendored or fetched; it is injected into the page and run there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

# Violations a person using a screen reader or a keyboard cannot get past.
BLOCKING = frozenset({"serious", "critical"})


def _script() -> Path:
    spec = importlib.util.find_spec("axe_playwright_python")
    if spec is None or spec.origin is None:
        raise RuntimeError("axe-playwright-python is not installed (see pyproject.toml, dev)")
    return Path(spec.origin).parent / "axe.min.js"


def audit(page: Page, selector: str | None = None) -> list[dict[str, Any]]:
    """axe-core's violations on ``page`` (within ``selector`` if given), of every impact.

    A page whose Content-Security-Policy refuses inline scripts (the dashboard's) must be
    opened with ``bypass_csp=True`` for axe-core to be injected."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=_script())
    found: dict[str, Any] = page.evaluate(
        "context => window.axe.run(context ?? document, {resultTypes: ['violations']})",
        selector,
    )
    violations: list[dict[str, Any]] = found["violations"]
    return violations


def blocking(page: Page, selector: str | None = None) -> list[str]:
    """One line per serious or critical violation: its rule, its help and where it is."""
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:5])
        for v in audit(page, selector)
        if v["impact"] in BLOCKING
    ]
