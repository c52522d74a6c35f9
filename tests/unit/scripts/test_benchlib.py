"""The benchmark scripts' shared helpers: percentiles, the docs section they replace, the
gateway config they write, and the venv they run in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import scripts.benchlib
from gateway.config import GatewayConfig
from node.p2p.config import load
from scripts.benchlib import Stats, gateway_config, percentile, reexec_in_venv, write_section


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError, match="percentile of no values"):
        percentile([], 50)


def test_stats_are_in_milliseconds() -> None:
    stats = Stats.of([0.001, 0.002, 0.003])
    assert (stats.p50, stats.mean, stats.count) == (2.0, 2.0, 3)
    assert stats.rounded()["p99_ms"] == pytest.approx(2.98)


DOC = """# Benchmarks

Intro.

## Gateway overhead

old numbers

## Gateway overhead: where the time goes

kept

## Chaos

kept too
"""


def test_a_section_is_replaced_and_every_other_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    write_section("## Gateway overhead\n\nnew numbers\n", doc)
    assert doc.read_text() == DOC.replace("old numbers", "new numbers")


def test_a_new_section_goes_at_the_end(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    write_section("## Routing\n\np99\n", doc)
    assert doc.read_text() == DOC + "\n## Routing\n\np99\n"


def test_the_last_section_is_replaced_to_the_end(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(DOC)
    write_section("## Chaos\n\nnew\n", doc)
    assert doc.read_text().endswith("## Chaos\n\nnew\n")
    assert "kept too" not in doc.read_text()


def test_the_gateway_config_never_refuses_and_carries_settings(tmp_path: Path) -> None:
    path = gateway_config(tmp_path / "gateway.toml", {"routing": "round-robin"})
    config = load(GatewayConfig, "gateway", {}, path)
    assert config.routing == "round-robin"
    assert config.default_plan == "bench"
    assert config.plans["bench"]["concurrent"] >= 256


def test_a_venv_that_is_a_link_to_the_running_one_is_not_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout whose .venv links to the venv running now: exec'ing its python would land
    # here again, for ever.
    (tmp_path / ".venv").symlink_to(Path(sys.prefix).resolve())
    monkeypatch.setattr(scripts.benchlib, "VENV_PYTHON", tmp_path / ".venv" / "bin" / "python")

    def no_exec(*args: object) -> None:
        raise AssertionError(f"started again: {args}")

    monkeypatch.setattr("os.execv", no_exec)
    reexec_in_venv(__file__)
