"""A node's config file lists its models as ids or as tables with dtype, slots and device."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.p2p.config import load
from node.worker.config import NodeConfig
from protocols.operator import ModelSpec


def config(tmp_path: Path, text: str, **flags: object) -> NodeConfig:
    file = tmp_path / "node.toml"
    file.write_text(text)
    return load(NodeConfig, "node", dict(flags), file)


def test_models_are_ids_or_tables_and_slots_fill_in_the_rest(tmp_path: Path) -> None:
    node = config(
        tmp_path,
        """
        [node]
        slots = 4
        models = [
          "echo",
          { id = "owner/llm", dtype = "bfloat16", slots = 16, device = "cuda:1" },
          { id = "owner/sd" },
        ]
        """,
    )
    assert node.model_specs() == [
        ModelSpec("echo", slots=4),
        ModelSpec("owner/llm", "bfloat16", 16, "cuda:1"),
        ModelSpec("owner/sd", slots=4),
    ]


def test_array_of_tables_works_too(tmp_path: Path) -> None:
    node = config(tmp_path, '[[node.models]]\nid = "a"\nslots = 2\n[[node.models]]\nid = "b"\n')
    assert node.model_specs() == [ModelSpec("a", slots=2), ModelSpec("b")]


def test_flags_still_name_models(tmp_path: Path) -> None:
    node = config(tmp_path, "[node]\n", models=["echo", "echo-2"])
    assert node.model_specs() == [ModelSpec("echo"), ModelSpec("echo-2")]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ('[{ id = "a", gpu = 1 }]', "unknown model settings: gpu"),
        ('[{ id = "a", dtype = "fp8" }]', "dtype 'fp8' is not one of"),
        ("[{ slots = 2 }]", "id is missing"),
        ('["a", { id = "a" }]', "models listed twice: a"),
        ("[3]", "a model is an id or a table, not 3"),
    ],
)
def test_a_wrong_model_entry_is_named(tmp_path: Path, models: str, message: str) -> None:
    node = config(tmp_path, f"[node]\nmodels = {models}\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        node.model_specs()
