"""The suite's figures, drawn with matplotlib's Agg backend (no display) as PNG files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLORS = {
    "bare echo": "#7f7f7f",
    "swarm": "#1f77b4",
    "expected-wait": "#1f77b4",
    "LiteLLM": "#d62728",
    "LiteLLM least-busy": "#d62728",
    "round-robin": "#ff7f0e",
    "random": "#9467bd",
    "ideal": "#2ca02c",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_cdf(path: Path, panels: Mapping[str, Mapping[str, Sequence[float]]]) -> Path:
    """One panel per title; in each, the CDF of each series' latencies (seconds)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=True):
        for name, seconds in series.items():
            ms = sorted(s * 1000 for s in seconds)
            ys = [(i + 1) / len(ms) for i in range(len(ms))]
            ax.step(ms, ys, where="post", label=name, color=COLORS.get(name))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of calls")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    return _save(fig, path)


def throughput(path: Path, levels: Sequence[int], rates: Mapping[str, Sequence[float]]) -> Path:
    """Requests per second of each series against client concurrency."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, values in rates.items():
        ax.plot(levels, values, marker="o", label=name, color=COLORS.get(name))
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(levels), [str(c) for c in levels])
    ax.set_xlabel("concurrent client connections")
    ax.set_ylabel("answered requests / s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save(fig, path)


def grouped_bars(
    path: Path, groups: Sequence[str], bars: Mapping[str, Sequence[float | None]], ylabel: str
) -> Path:
    """For each group (x), one bar per series; None leaves a gap. Log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / max(1, len(bars))
    for k, (name, values) in enumerate(bars.items()):
        xs = [i + (k - (len(bars) - 1) / 2) * width for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.bar(xs, ys, width, label=name, color=COLORS.get(name))
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path
