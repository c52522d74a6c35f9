"""What every peer's Prometheus metrics share: a registry of its own (never the
process-global one, so many peers can live in one process) with process and platform
series, and the per-model counters of generated work."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, PlatformCollector, ProcessCollector


def peer_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@dataclass(frozen=True)
class ModelCounters:
    prompt_tokens: Counter
    completion_tokens: Counter
    images: Counter


def model_counters(role: str, counted: str, registry: CollectorRegistry) -> ModelCounters:
    """``bitinglip_<role>_{prompt_tokens,completion_tokens,images}`` by model; ``counted``
    says whose prompt tokens they are (answered calls, finished generations)."""

    def counter(name: str, doc: str) -> Counter:
        return Counter(f"bitinglip_{role}_{name}", doc, ["model"], registry=registry)

    return ModelCounters(
        counter("prompt_tokens", f"Prompt tokens of {counted}, by model"),
        counter("completion_tokens", "Generated tokens, by model"),
        counter("images", "Generated images, by model"),
    )
