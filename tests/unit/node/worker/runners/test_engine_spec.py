"""``[[node.engines]]`` tables become engine specs, or a sentence saying what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.p2p.config import load
from node.worker.config import NodeConfig
from node.worker.runners import EngineSpec

TABLE = """
[[node.engines]]
id = "big-model"
engine = "vllm"
command = ["vllm", "serve", "org/model", "--port", "{port}"]
slots = 64
ready_timeout = 900
env = { CUDA_VISIBLE_DEVICES = "1" }

[[node.engines]]
id = "small"
engine = "llama-server"
command = "llama-server -m /models/small.gguf --port {port} --metrics"
"""


def test_tables_from_the_node_config(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(TABLE)
    specs = [EngineSpec.from_config(t) for t in load(NodeConfig, "node", {}, config).engines]
    big, small = specs
    assert (big.id, big.engine, big.slots, big.ready_timeout) == ("big-model", "vllm", 64, 900)
    assert big.command == ("vllm", "serve", "org/model", "--port", "{port}")
    assert dict(big.env) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert small.command[:3] == ("llama-server", "-m", "/models/small.gguf")  # split like a shell
    assert (small.port, small.slots, small.host) == (0, 1, "127.0.0.1")


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"command": ["x"]}, "an engine needs an id"),
        ({"id": "m"}, "engine 'm': command must be a list of strings"),
        ({"id": "m", "command": ["x", 3]}, "command must be a list of strings"),
        ({"id": "m", "command": []}, "engine 'm': the command is empty"),
        ({"id": "m", "command": ["x"], "engine": "tgi"}, "unknown engine 'tgi'"),
        ({"id": "m", "command": ["x"], "slots": 0}, "needs at least one slot"),
        ({"id": "m", "command": ["x"], "slots": "many"}, "slots must be a whole number"),
        ({"id": "m", "command": ["x"], "slots": True}, "slots must be a whole number"),
        ({"id": "m", "command": ["x"], "port": 1.5}, "port must be a whole number"),
        ({"id": "m", "command": ["x"], "ready_timeout": "1h"}, "ready_timeout must be a number"),
        ({"id": "m", "command": ["x"], "env": {"A": 1}}, "env must map names to strings"),
        ({"id": "m", "command": ["x"], "gpu": 0}, "unknown engine settings: gpu"),
    ],
)
def test_mistakes_are_named(table: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        EngineSpec.from_config(table)
