"""``bitinglip models pull|list|rm`` and the store under them, against a fake Hub on 127.0.0.1.

The fake Hub answers the routes huggingface_hub's ``snapshot_download`` calls, so the real
download code runs; nothing leaves the machine. Tests that use it, or start the CLI as a
process, are marked ``integration``; the rest read hand-made files.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import node.worker.hardware
from node.cli import main
from node.worker import model_store
from node.worker.model_store import Footprint, StoredModel
from node.worker.models import ModelNotAvailable, resolve
from node.worker.runners.base import no_progress
from protocols import Hardware
from tests.tiny_models import build_tiny_llama

REPO = "someone/tiny-llama"
GATED = "someone/gated"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FakeHub:
    """A Hub serving one repository, ``REPO`` at ``COMMIT``, from a local directory."""

    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def handle(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        self.requests.append(f"{request.command} {path}")
        api = "/api/models/"
        if path.startswith(api):
            repo, _, rest = path[len(api) :].partition("/")
            name, _, rest = rest.partition("/")
            self._api(request, f"{repo}/{name}", rest, body)
            return
        repo_id, sep, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        if not sep or not self._known(request, repo_id, revision):
            return
        if filename not in self.files:
            self._error(request, 404, "EntryNotFound")
            return
        data = self.files[filename]
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream",
        }
        self._send(request, 200, headers, data if body else b"")

    def _api(self, request: BaseHTTPRequestHandler, repo_id: str, rest: str, body: bool) -> None:
        # ``model_info``: /api/models/{repo}[/revision/{rev}]; the file list: /tree/{rev}.
        kind, _, revision = rest.partition("/")
        if not self._known(request, repo_id, revision or "main"):
            return
        if kind in ("", "revision"):
            siblings = [{"rfilename": name} for name in self.files]
            answer: object = {"id": repo_id, "sha": COMMIT, "private": False, "siblings": siblings}
        elif kind == "tree":
            answer = [
                {"type": "file", "path": name, "size": len(data), "oid": _git_sha(data)}
                for name, data in self.files.items()
            ]
        else:
            self._error(request, 404, "")
            return
        payload = json.dumps(answer).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        self._send(request, 200, headers, payload if body else b"")

    def _known(self, request: BaseHTTPRequestHandler, repo_id: str, revision: str) -> bool:
        if repo_id == GATED:
            self._error(request, 401, "GatedRepo")
        elif repo_id != REPO:
            self._error(request, 404, "RepoNotFound")
        elif revision not in ("main", COMMIT):
            self._error(request, 404, "RevisionNotFound")
        else:
            return True
        return False

    def _error(self, request: BaseHTTPRequestHandler, status: int, code: str) -> None:
        payload = json.dumps({"error": code or "not found"}).encode()
        headers = {"X-Error-Code": code, "Content-Length": str(len(payload))} if code else {}
        self._send(request, status, headers, payload if request.command == "GET" else b"")

    @staticmethod
    def _send(
        request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes
    ) -> None:
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(payload)


def _git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hub.handle(self, body=True)

        def do_HEAD(self) -> None:
            hub.handle(self, body=False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def fake_hub(
    tiny_model: Path, hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHub]:
    """The fake Hub, running, with the network switched on for huggingface_hub."""
    import huggingface_hub.constants

    files = {p.name: p.read_bytes() for p in tiny_model.iterdir() if p.is_file()}
    files["README.md"] = b"# tiny llama\n"  # not a file the node reads: never downloaded
    hub = FakeHub(files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub read HF_HUB_OFFLINE when first imported; the test suite sets it.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _parameters(model_dir: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for t in load_file(model_dir / "model.safetensors").values())


def test_pull_list_rm(fake_hub: FakeHub, hub_cache: Path, tiny_model: Path) -> None:
    snapshot = model_store.pull(REPO)
    assert snapshot == hub_cache / "models--someone--tiny-llama" / "snapshots" / COMMIT
    wanted = {name for name in fake_hub.files if name != "README.md"}
    assert {p.name for p in snapshot.iterdir()} == wanted
    assert f"GET /api/models/{REPO}/tree/{COMMIT}" in fake_hub.requests
    assert f"GET /{REPO}/resolve/{COMMIT}/model.safetensors" in fake_hub.requests

    [listed] = model_store.list_models(hub_cache.parent / "no-data-dir")
    parameters = _parameters(tiny_model)
    assert listed == StoredModel(
        id=REPO,
        source="hub-cache",
        path=snapshot,
        size_on_disk=sum(len(fake_hub.files[name]) for name in wanted),
        task=model_store.TEXT_GENERATION,
        footprint=Footprint(parameters, parameters * 4),  # float32
        revision=COMMIT,
    )

    removed = model_store.remove(REPO)
    assert removed.freed == listed.size_on_disk
    assert model_store.list_models() == []
    assert not (hub_cache / "models--someone--tiny-llama").exists()


def _sharded(files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` with model.safetensors split in two shards and an index, as big models are."""
    from safetensors.torch import load, save

    tensors = load(files["model.safetensors"])
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2]}
    shards["model-00002-of-00002.safetensors"] = names[1::2]
    sharded = {k: v for k, v in files.items() if k != "model.safetensors"}
    for shard, keys in shards.items():
        sharded[shard] = save({k: tensors[k] for k in keys})
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    sharded["model.safetensors.index.json"] = json.dumps({"weight_map": weight_map}).encode()
    return sharded


def test_pulled_model_resolves_offline(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    fake_hub.files = _sharded(fake_hub.files)
    snapshot = model_store.pull(REPO)
    assert not (snapshot / "README.md").exists()  # the Hub's file list has more than this
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert resolve(REPO, tmp_path / "data", no_progress) == snapshot

    # As if the download had been cut short: one shard of two is there.
    (snapshot / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelNotAvailable, match="not in the Hugging Face cache"):
        resolve(REPO, tmp_path / "data", no_progress)


def test_pull_errors_are_sentences_with_exit_codes(
    fake_hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["nobody/nothing"], 2, "the Hugging Face Hub has no model nobody/nothing"),
        ([REPO, "--revision", "v9"], 2, "has no revision 'v9'"),
        ([GATED], 3, "is gated"),
    ]
    for args, code, sentence in cases:
        assert main(["models", "pull", *args]) == code
        err = capsys.readouterr().err
        assert err.startswith("error: ") and sentence in err
        assert "Traceback" not in err and err.count("\n") == 1


def test_pull_into_a_cache_that_cannot_be_written(
    fake_hub: FakeHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("HF_HUB_CACHE", str(blocker / "hf-cache"))
    assert main(["models", "pull", REPO]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot store {REPO} in {blocker / 'hf-cache'}")
    assert err.count("\n") == 1 and fake_hub.requests == []  # before any download


def test_pull_unreachable_hub_fails_fast(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    assert main(["models", "pull", REPO]) == 4
    assert "cannot be reached" in capsys.readouterr().err
    assert time.monotonic() - started < 20.0

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "pull", REPO]) == 4
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def test_cli_pull_list_json_rm(
    fake_hub: FakeHub,
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table's width, for rich
    monkeypatch.setattr(
        node.worker.hardware, "probe", lambda: Hardware("cpu", "a cpu", "RAM", 8 << 30, 0)
    )
    data = tmp_path / "data"
    converted = build_tiny_llama(data / "models" / "owner--converted")
    assert main(["models", "pull", REPO]) == 0
    assert f"pulled {REPO} into" in capsys.readouterr().out

    assert main(["models", "list", "--json", "--data-dir", str(data)]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["host"] == {
        "backend": "cpu",
        "device": "a cpu",
        "memory": "RAM",
        "memory_total_bytes": 8 << 30,
    }
    parameters = _parameters(tiny_model)
    by_id = {m["id"]: m for m in listing["models"]}
    assert by_id.keys() == {REPO, "owner/converted"}
    for entry in by_id.values():
        assert entry["task"] == "text-generation"
        assert entry["parameters"] == parameters
        assert entry["weights_bytes"] == parameters * 4
        assert entry["fits"] is True
    assert by_id["owner/converted"]["path"] == str(converted)

    assert main(["models", "list", "--data-dir", str(data)]) == 0
    table = capsys.readouterr().out
    assert "within this host's 8.0 GiB RAM (cpu, a cpu)" in table and "VRAM" not in table
    rows = [line.split() for line in table.splitlines()]
    assert [REPO, "text-generation"] in [row[:2] for row in rows]
    assert ["owner/converted", "text-generation"] in [row[:2] for row in rows]
    assert [row[-2:] for row in rows if row[0] == REPO] == [["yes", "hub-cache"]]

    small_gpu = Hardware("cuda", "a gpu", "VRAM", 1 << 10, 0)  # too small for any of them
    monkeypatch.setattr(node.worker.hardware, "probe", lambda: small_gpu)
    assert main(["models", "list", "--data-dir", str(data)]) == 0
    table = capsys.readouterr().out
    assert "within this host's 1.0 KiB VRAM (cuda, a gpu)" in table
    rows = [line.split() for line in table.splitlines()]
    assert [row[-2:] for row in rows if row[0] == REPO] == [["no", "hub-cache"]]

    assert main(["models", "rm", REPO]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"removed {REPO}: freed ")
    assert main(["models", "rm", REPO]) == 2
    assert "is not in the Hugging Face cache" in capsys.readouterr().err
    assert main(["models", "rm", "owner/converted", "--data-dir", str(data)]) == 0
    assert not converted.exists()


def test_cli_list_json_in_a_real_process(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "data"
    build_tiny_llama(data / "models" / "owner--converted")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "models", "list", "--json", "--data-dir", str(data)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert listing["host"]["memory"] == model_store.memory_name(node.worker.hardware.probe())
    [entry] = listing["models"]
    assert entry["id"] == "owner/converted" and entry["source"] == "converted"
    assert entry["weights_bytes"] == _parameters(tiny_model) * 4


def _safetensors(path: Path, header: dict[str, object], data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_footprint_of_several_dtypes(tmp_path: Path) -> None:
    header: dict[str, object] = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [3, 5], "data_offsets": [0, 60]},
        "b": {"dtype": "BF16", "shape": [7], "data_offsets": [60, 74]},
        "c": {"dtype": "F16", "shape": [2, 2, 2], "data_offsets": [74, 90]},
        "d": {"dtype": "I8", "shape": [11], "data_offsets": [90, 101]},
        "e": {"dtype": "F64", "shape": [], "data_offsets": [101, 109]},
        "f": {"dtype": "F8_E4M3", "shape": [4, 0], "data_offsets": [109, 109]},
        "g": {"dtype": "I64", "shape": [2], "data_offsets": [109, 125]},
    }
    file = _safetensors(tmp_path / "model.safetensors", header, bytes(125))
    assert model_store.safetensors_footprint(file) == Footprint(
        15 + 7 + 8 + 11 + 1 + 0 + 2, 15 * 4 + 7 * 2 + 8 * 2 + 11 + 8 + 0 + 2 * 8
    )


def test_footprint_matches_what_safetensors_writes(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {
        "f32": torch.zeros(4, 6, dtype=torch.float32),
        "bf16": torch.zeros(10, dtype=torch.bfloat16),
        "f16": torch.zeros(3, 3, dtype=torch.float16),
        "u8": torch.zeros(5, dtype=torch.uint8),
        "i32": torch.zeros(2, 2, dtype=torch.int32),
    }
    model = tmp_path / "unet"
    model.mkdir()
    save_file(tensors, str(model / "diffusion_pytorch_model.safetensors"))
    # Another variant of the same weights: loaders read one, so only the plain file counts.
    save_file({"x": torch.zeros(100)}, str(model / "diffusion_pytorch_model.fp16.safetensors"))
    expected = Footprint(
        sum(t.numel() for t in tensors.values()),
        sum(t.numel() * t.element_size() for t in tensors.values()),
    )
    assert model_store.model_footprint(tmp_path) == expected


def test_unreadable_headers_are_errors(tmp_path: Path, hub_cache: Path) -> None:
    cases = {
        "too short": b"\x01\x02",
        "claims a 1099511627776-byte header": struct.pack("<Q", 1 << 40) + b"{}",
        "ends inside its header": struct.pack("<Q", 100) + b"{}",
        "not JSON": struct.pack("<Q", 3) + b"abc",
        "not a JSON object": struct.pack("<Q", 2) + b"[]",
    }
    for number, (why, content) in enumerate(cases.items()):
        file = tmp_path / f"{number}.safetensors"
        file.write_bytes(content)
        with pytest.raises(model_store.BadWeightsFile, match=why):
            model_store.safetensors_footprint(file)
    odd = _safetensors(tmp_path / "odd.safetensors", {"x": {"dtype": "Q9", "shape": [1]}})
    with pytest.raises(model_store.BadWeightsFile, match="no known dtype"):
        model_store.safetensors_footprint(odd)

    # A listing shows such a model all the same, with its memory unknown.
    bad = tmp_path / "data" / "models" / "owner--bad"
    bad.mkdir(parents=True)
    (bad / "model.safetensors").write_bytes(b"\x01\x02")
    [listed] = model_store.list_models(tmp_path / "data")
    assert (listed.id, listed.footprint) == ("owner/bad", None)


def test_task_of_a_model_directory(tmp_path: Path) -> None:
    pipeline, causal, other = (tmp_path / n for n in ("pipeline", "causal", "other"))
    for folder in (pipeline, causal, other):
        folder.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    (causal / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (other / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    assert model_store.model_task(pipeline) == model_store.TEXT_TO_IMAGE
    assert model_store.model_task(causal) == model_store.TEXT_GENERATION
    assert model_store.model_task(other) is None


def test_memory_is_named_for_the_host() -> None:
    model = StoredModel("m", "hub-cache", Path("m"), 0, None, Footprint(10, 2000))
    cpu = Hardware("cpu", "some cpu", "RAM", 1000, 500)
    gpu = Hardware("cuda", "some gpu", "VRAM", 4000, 100)
    apple = Hardware("mps", "Apple M3", "unified", 4000, 100)
    assert model_store.memory_name(cpu) == "RAM"
    assert model_store.memory_name(gpu) == "VRAM"
    assert model_store.memory_name(apple) == "unified memory"
    assert model_store.fits(model, cpu) is False
    assert model_store.fits(model, gpu) is True
    unknown = StoredModel("m", "hub-cache", Path("m"), 0, None, None)
    assert model_store.fits(unknown, gpu) is None
