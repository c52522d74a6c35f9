"""The models a node keeps on disk: pulling them from the Hub, listing and removing them.

Two places hold models: the Hugging Face cache (``hub_cache_dir()``), where ``pull`` puts
them and where ``resolve`` looks first, and the ``models`` folder of a node's data
directory, where the default model is converted from its bundled GGUF. ``list_models``
shows both, each with what it serves and how much memory its weights need; the estimate
reads only the headers of its safetensors files, never the weights.

Errors::

    ModelStoreError                 what went wrong, as a sentence (itself: e.g. a full disk)
    ├── HubError                    the Hub would not hand the model over
    │   ├── RepoNotFound            no such repository (or a private one)
    │   ├── RevisionNotFound        the repository has no such branch, tag or commit
    │   ├── GatedRepo               its terms must be accepted, and a login made
    │   └── HubUnreachable          no network, the Hub is down, or HF_HUB_OFFLINE=1
    ├── NotStored                   ``remove`` was given an id that is not on disk
    └── BadWeightsFile              a safetensors file whose header cannot be read
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from node.worker.models import (
    converted_dir,
    download_patterns,
    hub_cache_dir,
    offline,
    progress_tqdm,
)
from node.worker.runners.base import Progress
from protocols import Hardware

if TYPE_CHECKING:
    from huggingface_hub import CachedRepoInfo, HFCacheInfo

logger = logging.getLogger(__name__)

TEXT_GENERATION = "text-generation"
TEXT_TO_IMAGE = "text-to-image"
TEXT_TO_SPEECH = "text-to-speech"
SPEECH_TO_TEXT = "speech-to-text"
IMAGE_TO_TEXT = "image-to-text"
EMBEDDING = "embedding"
# The architectures each speech runner serves (``runners.speech``, ``runners.transcribe``).
SPEECH_ARCHITECTURES = {"VitsModel", "SpeechT5ForTextToSpeech"}
TRANSCRIBE_ARCHITECTURES = {"WhisperForConditionalGeneration"}
# Heads that generate text from what an encoder saw; with a vision encoder, from pictures.
_GENERATING_HEADS = ("ForConditionalGeneration", "ForCausalLM", "ForVisionText2Text")

_HUB_TIMEOUT_S = 10.0
# safetensors refuses headers above 100 MB; so do we, before allocating them.
_MAX_HEADER_BYTES = 100_000_000
# Bits per element of every dtype the safetensors format defines.
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}


class ModelStoreError(Exception):
    """Something the person at the keyboard can act on; ``str()`` says what."""


class HubError(ModelStoreError):
    """The Hugging Face Hub did not hand the model over."""


class RepoNotFound(HubError):
    pass


class RevisionNotFound(HubError):
    pass


class GatedRepo(HubError):
    pass


class HubUnreachable(HubError):
    pass


class NotStored(ModelStoreError):
    pass


class BadWeightsFile(ModelStoreError):
    pass


@dataclass(frozen=True)
class Footprint:
    """What a model's weights take in memory: their parameters and bytes at stored dtypes."""

    parameters: int
    bytes: int


@dataclass(frozen=True)
class StoredModel:
    """One model on disk.

    ``source`` is ``"hub-cache"`` or ``"converted"``; ``task`` is what ``model_task`` tells,
    None for a model no runner serves; ``footprint`` is None without safetensors.
    """

    id: str
    source: str
    path: Path
    size_on_disk: int
    task: str | None
    footprint: Footprint | None
    revision: str | None = None


@dataclass(frozen=True)
class Removed:
    """What ``remove`` deleted and how many bytes that freed."""

    id: str
    paths: tuple[Path, ...]
    freed: int


def pull(model_id: str, revision: str | None = None, progress: Progress | None = None) -> Path:
    """Download ``model_id`` into the Hugging Face cache; return its snapshot directory.

    Fetches the files ``from_pretrained`` reads (configs, tokenizer, one weight format),
    as ``resolve`` does. Without ``progress``, huggingface_hub draws its own bars.
    """
    from huggingface_hub import HfApi, snapshot_download

    if offline():
        raise HubUnreachable(
            f"cannot download {model_id}: the network is off (HF_HUB_OFFLINE is set); "
            "unset it, or copy a Hugging Face cache that holds the model to this host"
        )
    endpoint = os.environ.get("HF_ENDPOINT") or None
    with _hub_errors(model_id, revision):
        hub_cache_dir().mkdir(parents=True, exist_ok=True)  # a cache we cannot write fails now
        info = HfApi(endpoint=endpoint).model_info(
            model_id, revision=revision, timeout=_HUB_TIMEOUT_S
        )
        files = [s.rfilename for s in info.siblings or []]
        path = snapshot_download(
            model_id,
            revision=revision,
            cache_dir=hub_cache_dir(),
            endpoint=endpoint,
            allow_patterns=download_patterns(files),
            etag_timeout=_HUB_TIMEOUT_S,
            tqdm_class=progress_tqdm(progress, f"downloading {model_id}") if progress else None,
        )
    return Path(path)


def list_models(data_dir: Path | None = None) -> list[StoredModel]:
    """Every model in the Hugging Face cache and converted in ``data_dir``, sorted by id."""
    found = [*_cached_models(hub_cache_dir())]
    if data_dir is not None:
        found += _converted_models(data_dir)
    return sorted(found, key=lambda m: (m.id.casefold(), m.source))


def remove(model_id: str, data_dir: Path | None = None) -> Removed:
    """Delete ``model_id`` from the Hugging Face cache and from ``data_dir``'s converted models.

    Raises ``NotStored`` when it is in neither.
    """
    paths: list[Path] = []
    freed = 0
    repo, scan = _cached_repo(hub_cache_dir(), model_id)
    if repo is not None and scan is not None:
        strategy = scan.delete_revisions(*(r.commit_hash for r in repo.revisions))
        freed += strategy.expected_freed_size
        strategy.execute()  # every revision: the repository's whole folder goes
        paths.append(repo.repo_path)
    if data_dir is not None:
        converted = converted_dir(data_dir, model_id)
        if converted.is_dir():
            freed += _tree_size(converted)
            shutil.rmtree(converted)
            paths.append(converted)
    if not paths:
        where = f"the Hugging Face cache ({hub_cache_dir()})"
        if data_dir is not None:
            where += f" or among the models converted in {data_dir}"
        raise NotStored(f"{model_id} is not in {where}; `bitinglip models list` shows what is")
    return Removed(model_id, tuple(paths), freed)


def model_task(path: Path) -> str | None:
    """What the model in ``path`` serves, from its files alone: a diffusers pipeline makes
    images; a config's architectures tell speech models apart; a generating head with a
    vision encoder reads pictures, and a causal language model writes text. A model saved
    in sentence-transformers' layout (``modules.json``) makes embeddings, whatever its
    architecture: some embedding models are causal language models pooled at the last token."""
    if (path / "model_index.json").is_file():
        return TEXT_TO_IMAGE
    if (path / "modules.json").is_file():
        return EMBEDDING
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not isinstance(config.get("architectures"), list):
        return None
    architectures = {a for a in config["architectures"] if isinstance(a, str)}
    if architectures & SPEECH_ARCHITECTURES:
        return TEXT_TO_SPEECH
    if architectures & TRANSCRIBE_ARCHITECTURES:
        return SPEECH_TO_TEXT
    generating = any(a.endswith(_GENERATING_HEADS) for a in architectures)
    if generating and isinstance(config.get("vision_config"), dict):
        return IMAGE_TO_TEXT
    if any(a.endswith("ForCausalLM") for a in architectures):
        return TEXT_GENERATION
    return None


def model_footprint(path: Path) -> Footprint | None:
    """The memory the weights in ``path`` need, from their safetensors headers.

    Where a folder has a file in several variants (``x.safetensors`` and
    ``x.fp16.safetensors``), only the plain one counts: loaders pick one, not both.
    None when the model has no safetensors files.
    """
    chosen: list[Path] = []
    folders: dict[Path, list[Path]] = {}
    for file in sorted(path.rglob("*.safetensors")):
        folders.setdefault(file.parent, []).append(file)
    for files in folders.values():
        plain = [f for f in files if "." not in f.name.removesuffix(".safetensors")]
        chosen += plain or files
    if not chosen:
        return None
    sizes = [safetensors_footprint(file) for file in chosen]
    return Footprint(sum(s.parameters for s in sizes), sum(s.bytes for s in sizes))


def safetensors_footprint(file: Path) -> Footprint:
    """Parameters and bytes of one safetensors file, read from its header alone."""
    parameters = bits = 0
    for dtype, count in _tensor_counts(file):
        parameters += count
        bits += count * DTYPE_BITS[dtype]
    return Footprint(parameters, (bits + 7) // 8)


def memory_name(hardware: Hardware) -> str:
    """What the host's model memory is called: RAM on a CPU host, VRAM on a GPU, unified
    memory on Apple silicon (the probe's kind, made a phrase for people)."""
    return "unified memory" if hardware.memory == "unified" else hardware.memory


def fits(model: StoredModel, hardware: Hardware) -> bool | None:
    """Whether the model's weights fit the host's total memory; None when unknown."""
    if model.footprint is None or hardware.memory_total <= 0:
        return None
    return model.footprint.bytes <= hardware.memory_total


def _tensor_counts(file: Path) -> list[tuple[str, int]]:
    """(dtype, number of elements) of each tensor in a safetensors file."""
    try:
        with file.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise BadWeightsFile(f"{file} is too short to be a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise BadWeightsFile(f"{file} claims a {length}-byte header: not safetensors")
            raw = f.read(length)
    except OSError as exc:
        raise BadWeightsFile(f"cannot read {file}: {exc}") from exc
    if len(raw) < length:
        raise BadWeightsFile(f"{file} ends inside its header")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise BadWeightsFile(f"{file} has a header that is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadWeightsFile(f"{file} has a header that is not a JSON object")
    counts: list[tuple[str, int]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if dtype not in DTYPE_BITS or not isinstance(shape, list):
            raise BadWeightsFile(f"{file}: tensor {name!r} has no known dtype and shape")
        count = 1
        for dim in shape:
            if not isinstance(dim, int) or dim < 0:
                raise BadWeightsFile(f"{file}: tensor {name!r} has a bad shape {shape}")
            count *= dim
        counts.append((dtype, count))
    return counts


@contextmanager
def _hub_errors(model_id: str, revision: str | None) -> Iterator[None]:
    """Turns huggingface_hub's exceptions into ``HubError`` sentences."""
    try:
        yield
    except ModelStoreError:
        raise
    except Exception as exc:
        raise _hub_error(model_id, revision, exc) from exc


def _hub_error(model_id: str, revision: str | None, exc: Exception) -> ModelStoreError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return GatedRepo(
            f"{model_id} is gated on the Hugging Face Hub: accept its terms on its page "
            "and log in with `hf auth login`"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return RepoNotFound(
            f"the Hugging Face Hub has no model {model_id} "
            "(or it is private: log in with `hf auth login`)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return RevisionNotFound(f"{model_id} has no revision {revision!r} on the Hugging Face Hub")
    if isinstance(exc, HFValidationError):
        return RepoNotFound(f"{model_id!r} is not a valid Hugging Face model id")
    if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the network
        return ModelStoreError(f"cannot store {model_id} in {hub_cache_dir()}: {exc}")
    if isinstance(exc, OfflineModeIsEnabled):
        return HubUnreachable(f"cannot download {model_id}: the network is off (HF_HUB_OFFLINE)")
    logger.debug("download of %s failed", model_id, exc_info=exc)
    return HubUnreachable(
        f"cannot download {model_id}: the Hugging Face Hub cannot be reached "
        f"({type(exc).__name__}: {_first_line(exc)})"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _cached_repo(cache: Path, model_id: str) -> tuple[CachedRepoInfo | None, HFCacheInfo | None]:
    """The ``CachedRepoInfo`` of ``model_id`` and the scan it came from, or (None, None)."""
    scan = _scan(cache)
    if scan is None:
        return None, None
    for repo in scan.repos:
        if repo.repo_type == "model" and repo.repo_id == model_id:
            return repo, scan
    return None, None


def _scan(cache: Path) -> HFCacheInfo | None:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        scan = scan_cache_dir(cache)
    except CacheNotFound:
        return None
    for warning in scan.warnings:
        logger.warning("skipping a damaged entry of the Hugging Face cache: %s", warning)
    return scan


def _cached_models(cache: Path) -> list[StoredModel]:
    scan = _scan(cache)
    if scan is None:
        return []
    found = []
    for repo in scan.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        # The revision ``main`` points at, else the newest one.
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        snapshot = Path(revision.snapshot_path)
        found.append(
            StoredModel(
                id=repo.repo_id,
                source="hub-cache",
                path=snapshot,
                size_on_disk=repo.size_on_disk,
                task=model_task(snapshot),
                footprint=_footprint_or_none(snapshot),
                revision=revision.commit_hash,
            )
        )
    return found


def _converted_models(data_dir: Path) -> list[StoredModel]:
    folder = converted_dir(data_dir, "x").parent
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or path.name.startswith("."):  # "." : a conversion under way
            continue
        found.append(
            StoredModel(
                id=path.name.replace("--", "/", 1),
                source="converted",
                path=path,
                size_on_disk=_tree_size(path),
                task=model_task(path),
                footprint=_footprint_or_none(path),
            )
        )
    return found


def _footprint_or_none(path: Path) -> Footprint | None:
    try:
        return model_footprint(path)
    except BadWeightsFile as exc:
        logger.warning("cannot estimate the memory of %s: %s", path, exc)
        return None


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
