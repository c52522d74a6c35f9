"""End to end with the real default model: a swarm answers the openai client with Paris."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from node.worker.models import DEFAULT_MODEL
from tests.integration.conftest import LocalSwarmFixture
from tests.tiny_models import converted_default_model

QUESTION = "What is the capital of France?"


def test_swarm_answers_with_the_default_model(
    swarm: LocalSwarmFixture, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = converted_default_model(tmp_path_factory).data_dir
    gateway = swarm.start_gateway()
    boot = str(gateway["addrs"][0])  # type: ignore[index]
    swarm.start_node("node-0", [boot], [DEFAULT_MODEL], ["--model-store", str(store)])
    swarm.wait_ready(["node-0"], timeout=180)
    url = swarm.url()
    deadline = time.monotonic() + 90  # discovery can take tens of seconds on a busy host
    while DEFAULT_MODEL not in httpx.get(f"{url}/health").json()["models"]:
        assert time.monotonic() < deadline, "gateway never saw the node"
        time.sleep(0.2)

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=swarm.token(), max_retries=0)
    answer = client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        temperature=0,
        max_tokens=24,
    )
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.completion_tokens > 0

    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=[{"role": "user", "content": QUESTION}],
            temperature=0,
            max_tokens=24,
            stream=True,
        )
        if chunk.choices
    ]
    assert len([p for p in pieces if p]) > 1  # streamed token by token
    assert "Paris" in "".join(pieces)
