"""What accelerator this node has, what kind of memory it computes in, how much of that
is free, and which torch and transformers it would run.

The node advertises the result in its record, so the probe must work on any host: a CUDA
or ROCm GPU, a DirectML GPU on Windows, Apple silicon, or a plain CPU, including a host
where torch is not installed at all (then only the CPU path runs, without importing it).
Versions come from the installed packages' metadata: reading them imports nothing.

Importing torch costs a process some 200 MB that a node serving no torch model (the echo
model, an external engine) need never pay, so the probe runs in a child process unless
torch is already imported here, and free device memory is read again only once it is.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from protocols import Hardware

logger = logging.getLogger(__name__)

# DirectML reports memory use only as fractions, so the total has to come from the operator.
VRAM_TOTAL_ENV = "BITINGLIP_VRAM_TOTAL"


# The package root, for a child process to import this module from.
_ROOT = Path(__file__).resolve().parents[2]
PROBE_TIMEOUT = 120.0  # seconds: a first CUDA initialisation can be slow


def probe() -> Hardware:
    """Detect the best backend torch can use here, with its memory and the library versions."""
    lean = not torch_imported() and importlib.util.find_spec("torch") is not None
    device = _device_apart() if lean else _device()
    return dataclasses.replace(
        device, torch=_version("torch"), transformers=_version("transformers")
    )


def torch_imported() -> bool:
    return "torch" in sys.modules


def _device_apart() -> Hardware:
    """``_device()`` as a child process finds it; in this process if that fails."""
    path = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "node.worker.hardware"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            check=True,
            env=os.environ | {"PYTHONPATH": path},
        )
        return Hardware(**json.loads(out.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError) as exc:
        logger.warning("probing the device in a child process failed (%s): probing here", exc)
        return _device()


def _device() -> Hardware:
    if importlib.util.find_spec("torch") is None:
        return _cpu()
    import torch

    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        major, minor = torch.cuda.get_device_capability(0)
        name = torch.cuda.get_device_name(0)
        return Hardware("cuda", name, "VRAM", total, free, compute_capability=f"{major}.{minor}")
    if importlib.util.find_spec("torch_directml") is not None:
        import torch_directml

        if torch_directml.is_available():
            total = _env_vram_total()
            name = str(torch_directml.device_name(torch_directml.default_device()))
            return Hardware("directml", name, "VRAM", total, _directml_free(total))
    if torch.backends.mps.is_available():
        total, free = _mps_memory()
        return Hardware("mps", _cpu_name(), "unified", total, free)
    return _cpu()


def device_for(backend: str) -> str:
    """The torch device string for a backend reported by ``probe``."""
    if backend == "directml":
        import torch_directml

        return str(torch_directml.device(torch_directml.default_device()))
    if backend in ("cuda", "mps", "cpu"):
        return backend
    raise ValueError(f"unknown backend {backend!r}")


def refresh_free(hw: Hardware, exact: bool = False) -> Hardware:
    """``hw`` with its free memory read again (cheap: no device enumeration). A device's
    memory is read only once torch is imported here, or when ``exact`` (before a model is
    admitted: loading it imports torch anyway)."""
    if hw.backend != "cpu" and not torch_imported() and not exact:
        return hw
    if hw.backend == "cuda":
        import torch

        free = int(torch.cuda.mem_get_info(0)[0])
    elif hw.backend == "directml":
        free = _directml_free(hw.memory_total)
    elif hw.backend == "mps":
        free = _mps_memory()[1]
    else:
        free = int(psutil.virtual_memory().available)
    return dataclasses.replace(hw, memory_free=free)


def _cpu() -> Hardware:
    memory = psutil.virtual_memory()
    return Hardware("cpu", _cpu_name(), "RAM", int(memory.total), int(memory.available))


def _version(package: str) -> str:
    """The installed version of ``package``, "" where it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":
        # platform.processor() only says "arm" on Apple silicon; sysctl has the chip name.
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=2,
                check=True,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            logger.debug("sysctl gave no CPU name", exc_info=True)
    return platform.processor() or platform.machine() or "unknown cpu"


def _env_vram_total() -> int:
    raw = os.environ.get(VRAM_TOTAL_ENV, "").strip()
    if not raw:
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        logger.warning("ignoring %s=%r: not a number of bytes", VRAM_TOTAL_ENV, raw)
        return 0


def _directml_free(total: int) -> int:
    """Free DirectML memory: the operator's total less the used fraction the driver reports."""
    if total == 0:
        return 0
    import torch_directml

    used: Any = torch_directml.gpu_memory(torch_directml.default_device())
    fractions = [float(f) for f in used] if isinstance(used, list | tuple) else []
    if not fractions:
        return total
    used_fraction = min(1.0, max(0.0, sum(fractions) / len(fractions)))
    return int(total * (1.0 - used_fraction))


def _mps_memory() -> tuple[int, int]:
    """(total, free) for Apple MPS: unified memory, bounded by what Metal recommends."""
    import torch

    total = int(psutil.virtual_memory().total)
    recommended = getattr(torch.mps, "recommended_max_memory", None)
    if recommended is not None:
        total = int(recommended())
    allocated = getattr(torch.mps, "current_allocated_memory", None)
    used = int(allocated()) if allocated is not None else 0
    return total, max(0, total - used)


if __name__ == "__main__":  # the child process of ``_device_apart``
    print(json.dumps(dataclasses.asdict(_device())))
