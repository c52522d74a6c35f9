"""The operator's listings print what users and the disk name literally: an API key's name,
a model id, a device name are text, never rich markup or terminal control sequences."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import keys
from gateway.accounts.database import KeyRecord, Store
from node.cli.main import main
from node.worker import model_store
from node.worker.model_store import StoredModel
from protocols import Hardware

MARKUP = "[bold red]x[/]"
LINK = "[link=https://evil.example]click[/link]"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    out: str = capsys.readouterr().out
    return out


def test_tokens_list_prints_key_names_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    keys.init_operator(tmp_path)
    with Store.open(tmp_path) as store:
        store.add_user("alice", None, "default", 1.0)
        for jti, name in (("k1", MARKUP), ("k2", LINK), ("k3", "tab\x1b]0;owned\x07")):
            store.add_key(KeyRecord(jti, "alice", name, 1.0, time.time() + 100, None))
    out = run(capsys, "tokens", "list", "--data-dir", str(tmp_path))
    assert MARKUP in out and LINK in out
    assert "tab" in out and "\x1b" not in out and "owned" not in out


def test_models_list_prints_ids_and_the_device_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    found = [StoredModel(MARKUP, LINK, tmp_path, 1, "text-generation", None)]
    monkeypatch.setattr(model_store, "list_models", lambda data_dir: found)
    device = Hardware("cpu", f"cpu {MARKUP}", "RAM", 1 << 30, 1 << 29)
    monkeypatch.setattr("node.worker.hardware.probe", lambda: device)
    out = run(capsys, "models", "list", "--data-dir", str(tmp_path))
    assert out.count(MARKUP) == 2 and LINK in out
