"""Under CI a skip is a failure, except for tests that need an accelerator."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

def test_needs_a_browser():
    pytest.skip("no browser here")

@pytest.mark.gpu
def test_needs_a_gpu():
    pytest.skip("no accelerator here")
"""


def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None) -> str:
    pytester.makeconftest(
        "from tests.conftest import pytest_runtest_makereport  # noqa: F401\n"
        'def pytest_configure(config):\n    config.addinivalue_line("markers", "gpu: gpu")\n'
    )
    pytester.makepyfile(SKIPPING)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    return "\n".join(result.outlines)


def test_a_skip_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run(pytester, monkeypatch, "true")
    assert "1 failed, 1 skipped" in out
    assert "skipped under CI, where every required part must run: no browser here" in out


def test_a_skip_is_a_skip_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "2 skipped" in run(pytester, monkeypatch, None)
