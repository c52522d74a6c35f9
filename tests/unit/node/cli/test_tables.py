"""Every table the command line prints fits the terminal: at 80 and 40 columns each line
fits and the columns left out are named; ``--wide`` shows them all; ``--json`` is for
scripts; printed to a pipe, a table takes 80 columns as a terminal would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import keys
import node.cli.info
from gateway.accounts.database import KeyRecord, Store
from node.cli.main import main
from node.worker import model_store
from node.worker.model_store import Footprint, StoredModel
from protocols import Hardware

GiB = 1 << 30
HOST = Hardware(
    "cuda",
    "NVIDIA GeForce RTX 4090 Laptop GPU",
    "VRAM",
    16 * GiB,
    12 * GiB,
    "2.5.1",
    "4.57.0",
    "8.9",
)


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    """A gateway's database with users and API keys of long names."""
    keys.init_operator(tmp_path)
    now = time.time()
    with Store.open(tmp_path) as store:
        for name in ("alice", "bartholomew-the-second", "carol"):
            store.add_user(name, None, "default", now)
        store.add_key(KeyRecord("k-0123456789abcdef", "alice", "laptop", now, now + 3600, None))
        store.add_key(
            KeyRecord(
                "k-fedcba9876543210",
                "carol",
                "the build server in the basement",
                now,
                now + 3600,
                now,
            )
        )
    return tmp_path


@pytest.fixture
def host_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two models on disk and a GPU, whatever this host has."""
    footprint = Footprint(135_000_000, 540_000_000)
    found = [
        StoredModel(
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "hub-cache",
            tmp_path,
            270_000_000,
            "text-generation",
            footprint,
        ),
        StoredModel("stabilityai/sd-turbo", "converted", tmp_path, 2 * GiB, "text-to-image", None),
    ]
    monkeypatch.setattr(model_store, "list_models", lambda data_dir: found)
    monkeypatch.setattr("node.worker.hardware.probe", lambda: HOST)
    monkeypatch.setattr(node.cli.info, "probe", lambda: HOST)


def note_under(lines: list[str]) -> str:
    """The note naming the columns left out, its wrapped lines joined."""
    start = next(i for i, line in enumerate(lines) if "not shown" in line)
    return " ".join(line.strip() for line in lines[start:])


def printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: int, *argv: str
) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


Command = Callable[[Path], list[str]]
# Each table: its command, and the first column's values, which always show.
TABLES: dict[str, tuple[Command, list[str]]] = {
    "users": (lambda d: ["users", "list", "--data-dir", str(d)], ["alice", "carol"]),
    "tokens": (lambda d: ["tokens", "list", "--data-dir", str(d)], ["k-0123456789abcdef"]),
    "models": (lambda d: ["models", "list", "--data-dir", str(d)], ["stabilityai/sd-turbo"]),
    "node info": (lambda d: ["node", "info"], ["backend", "memory", "compute capability"]),
}


@pytest.mark.usefixtures("host_models")
@pytest.mark.parametrize("width", [80, 40])
@pytest.mark.parametrize("name", list(TABLES))
def test_each_table_fits_the_terminal(
    name: str,
    width: int,
    gateway_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, always = TABLES[name]
    lines = printed(capsys, monkeypatch, width, *argv(gateway_dir))
    assert all(len(line.rstrip()) <= width for line in lines), "\n".join(lines)
    for value in always:
        assert any(line.lstrip().startswith(value[:10]) for line in lines), (value, lines)
    wide = printed(capsys, monkeypatch, width, *argv(gateway_dir), "--wide")
    assert not any("not shown" in line for line in wide)
    if any("not shown" in line for line in lines):
        note = note_under(lines)
        assert note.endswith("(--wide shows all)")
        assert max(len(x.rstrip()) for x in wide) > width  # --wide: every column, past the edge


@pytest.mark.usefixtures("host_models")
def test_a_narrow_terminal_names_the_columns_it_left_out(
    gateway_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = printed(capsys, monkeypatch, 40, "tokens", "list", "--data-dir", str(gateway_dir))
    header = next(line for line in lines if line.startswith("ID"))
    assert header.split() == [
        "ID",
        "USER",
        "STATE",
    ]  # what `tokens revoke` needs, and whether it works
    note = note_under(lines)
    assert note == "not shown for width: NAME, CREATED, EXPIRES (--wide shows all)"
    lines = printed(capsys, monkeypatch, 40, "models", "list")
    header = next(line for line in lines if line.startswith("MODEL"))
    assert header.split() == ["MODEL", "WEIGHTS", "FITS"]


@pytest.mark.usefixtures("host_models")
@pytest.mark.parametrize("name", list(TABLES))
def test_each_table_has_json_for_scripts(
    name: str,
    gateway_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv, always = TABLES[name]
    lines = printed(capsys, monkeypatch, 40, *argv(gateway_dir), "--json")
    text = json.dumps(json.loads("\n".join(lines)))
    assert always[0] in text or name == "node info"


def test_printed_to_a_pipe_a_table_takes_80_columns_or_all_with_wide(gateway_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}

    def run(*flags: str) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "node.cli",
            "tokens",
            "list",
            "--data-dir",
            str(gateway_dir),
        ]
        done = subprocess.run(
            [*command, *flags], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    piped = run()
    assert max(len(line.rstrip()) for line in piped) <= 80
    assert "\x1b[" not in "\n".join(piped)  # no colours into a pipe
    wide = run("--wide")
    header = next(line for line in wide if line.startswith("ID"))
    assert header.split() == ["ID", "USER", "NAME", "CREATED", "EXPIRES", "STATE"]
    assert any("the build server in the basement" in line for line in wide)
