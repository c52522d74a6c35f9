"""Model resolution: local directories, the Hugging Face cache, the network, the GGUF fallback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import node.worker.models
from node.worker.models import (
    DEFAULT_MODEL,
    ModelNotAvailable,
    bundled_gguf,
    converted_dir,
    progress_tqdm,
    resolve,
)
from node.worker.runners.base import no_progress
from tests.tiny_models import Converted, build_tiny_llama, converted_default_model

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Converted:
    return converted_default_model(tmp_path_factory)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, with the Hub switched off."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _cache_entry(cache: Path, model_id: str) -> Path:
    """The snapshot directory of ``model_id`` in the cache's layout, with refs/main to it."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    return snapshot


def refuse_to_convert(*args: object) -> Path:
    raise AssertionError("converted again")


def test_local_directory_is_used_as_is(tmp_path: Path) -> None:
    model = build_tiny_llama(tmp_path / "my-model")
    assert resolve(str(model), tmp_path / "data", no_progress) == model


def test_found_in_hub_cache_offline(hub_cache: Path, tmp_path: Path) -> None:
    snapshot = build_tiny_llama(_cache_entry(hub_cache, "someone/tiny-llama"))
    found = resolve("someone/tiny-llama", tmp_path / "data", no_progress)
    assert found == snapshot

    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(found).num_hidden_layers == 2


def test_cache_entry_without_weights_is_not_used(hub_cache: Path, tmp_path: Path) -> None:
    snapshot = _cache_entry(hub_cache, "someone/config-only")
    (snapshot / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailable):
        resolve("someone/config-only", tmp_path / "data", no_progress)


def test_unknown_model_offline_says_what_to_do(hub_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable) as caught:
        resolve("nobody/no-such-model", tmp_path / "data", no_progress)
    assert caught.value.model_id == "nobody/no-such-model"
    message = str(caught.value)
    assert "HF_HUB_OFFLINE" in message
    assert "hf download nobody/no-such-model" in message
    assert "HF_HUB_CACHE" in message


def test_missing_local_path_is_not_a_model_id(hub_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable, match="neither a local directory"):
        resolve(str(tmp_path / "no" / "such" / "dir"), tmp_path / "data", no_progress)


def test_unreachable_hub_fails_fast(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(ModelNotAvailable, match="cannot be reached"):
        resolve("nobody/no-such-model", tmp_path / "data", no_progress)
    # No retries with back-off: the error comes in seconds (a generous bound for a busy host).
    assert time.monotonic() - started < 20.0


def test_download_progress_reaches_the_callback() -> None:
    events: list[tuple[str, float | None]] = []
    bar_class = progress_tqdm(lambda m, f: events.append((m, f)), "downloading x", interval=0)
    bar = bar_class(total=200, desc="Downloading bytes", disable=True)
    bar.update(50)
    bar.update(150)
    bar.close()
    assert events == [
        ("downloading x: Downloading bytes", 0.25),
        ("downloading x: Downloading bytes", 1.0),
    ]


@pytest.mark.slow  # converts the real default model
def test_default_model_converted_once_from_bundled_gguf(
    default_model: Converted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = default_model.path
    assert path == converted_dir(default_model.data_dir, DEFAULT_MODEL)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary leftovers
    fractions = [f for _, f in default_model.progress if f is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert isinstance(prompt, str)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")

    # A later start finds the converted copy at once.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(node.worker.models, "_convert_gguf", refuse_to_convert)
    assert resolve(DEFAULT_MODEL, default_model.data_dir, no_progress) == path


def test_interrupted_conversion_leaves_nothing_behind(
    hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert bundled_gguf() is not None
    data = tmp_path / "data"
    target = converted_dir(data, DEFAULT_MODEL)
    stale = target.parent / f".converting-{target.name}-old"
    stale.mkdir(parents=True)  # left by a conversion killed earlier

    def crash(gguf: Path, out: Path, progress: object) -> None:
        (out / "model.safetensors").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(node.worker.models, "_write_converted", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve(DEFAULT_MODEL, data, no_progress)
    assert list(target.parent.iterdir()) == []


def test_converted_models_have_one_store_per_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from node.worker.models import default_model_store

    for name in ("BITINGLIP_MODEL_STORE", "BITINGLIP_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_model_store() == tmp_path / ".cache" / "bitinglip"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_model_store() == tmp_path / "cache" / "bitinglip"
    monkeypatch.setenv("BITINGLIP_HOME", str(tmp_path / "home"))
    assert default_model_store() == tmp_path / "home"
    monkeypatch.setenv("BITINGLIP_MODEL_STORE", str(tmp_path / "store"))
    assert default_model_store() == tmp_path / "store"
