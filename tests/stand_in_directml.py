"""A stand-in for ``torch_directml``, which installs only on Windows.

Tests put it in ``sys.modules`` to drive the node's DirectML code paths on any host: the
probe, the device a DirectML node loads its models on, and the runners on that device.
"""

from __future__ import annotations

import importlib.machinery
import types

NAME = "AMD Radeon Test"


def stand_in_directml(
    used: list[float] | None = None, device: str | None = None
) -> types.ModuleType:
    """A ``torch_directml`` with one adapter, ``NAME``, whose memory use is ``used``
    (a fraction per tile, read at each call, so a test can change it).

    Its device is ``device`` if given, else DirectML's own ``privateuseone:<id>``, which
    only the real module can compute on: runner tests pass ``"cpu"``. The module's
    ``asked`` lists the adapter ids it was asked a device for.
    """
    fractions = used if used is not None else [0.0]
    asked: list[int | None] = []

    def device_of(device_id: int | None = None) -> str:
        asked.append(device_id)
        return device or f"privateuseone:{device_id or 0}"

    module = types.ModuleType("torch_directml")
    module.asked = asked  # type: ignore[attr-defined]
    module.__spec__ = importlib.machinery.ModuleSpec("torch_directml", None)
    module.is_available = lambda: True  # type: ignore[attr-defined]
    module.default_device = lambda: 0  # type: ignore[attr-defined]
    module.device_name = lambda device_id: NAME  # type: ignore[attr-defined]
    module.device = device_of  # type: ignore[attr-defined]
    module.gpu_memory = lambda device_id=0, mb_per_tile=1: list(fractions)  # type: ignore[attr-defined]
    return module
