"""Several choices and model capabilities through a real gateway and node process serving a
tiny random Llama (with a chat template) to the ``openai`` client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_media_swarm import wait_tasks
from tests.tiny_models import build_tiny_llama


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSwarmFixture, str]]:
    base = tmp_path_factory.mktemp("choices")
    model = str(build_tiny_llama(base / "tiny-llama"))
    swarm = LocalSwarmFixture(base / "swarm")
    try:
        swarm.start_gateway()
        swarm.start_node("node-0", [swarm.addr("gateway")], [model])
        swarm.wait_ready(["node-0"])
        wait_tasks(swarm.url(), swarm.token(), {model: "text-generation"})
        yield swarm, model
    finally:
        swarm.local.stop()


def client(swarm: LocalSwarmFixture) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{swarm.url()}/v1", api_key=swarm.token(), max_retries=0)


def test_sampled_choices_differ_and_a_seed_repeats_them(
    llama: tuple[LocalSwarmFixture, str],
) -> None:
    swarm, model = llama
    asked = {"model": model, "messages": [{"role": "user", "content": "the cat"}]}
    first = client(swarm).chat.completions.create(
        **asked, n=3, max_tokens=6, temperature=1.0, seed=11
    )  # type: ignore[call-overload]
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert {c.finish_reason for c in first.choices} == {"length"}
    assert first.usage is not None and first.usage.completion_tokens == 18
    again = client(swarm).chat.completions.create(
        **asked, n=3, max_tokens=6, temperature=1.0, seed=11
    )  # type: ignore[call-overload]
    assert [c.message.content for c in again.choices] == texts
    greedy = client(swarm).chat.completions.create(**asked, n=2, max_tokens=6, temperature=0)  # type: ignore[call-overload]
    assert greedy.choices[0].message.content == greedy.choices[1].message.content


def test_streamed_choices_and_completions(llama: tuple[LocalSwarmFixture, str]) -> None:
    swarm, model = llama
    stream = client(swarm).completions.create(
        model=model, prompt="the cat", n=2, max_tokens=5, temperature=1.0, stream=True
    )
    texts: dict[int, str] = {}
    finished: dict[int, str | None] = {}
    for event in stream:
        for choice in event.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert set(texts) == {0, 1} and all(texts.values())
    assert finished == {0: "length", 1: "length"}
    with pytest.raises(openai.BadRequestError, match="n is at most 4"):
        client(swarm).completions.create(model=model, prompt="the cat", n=5)


def test_the_model_says_what_it_can_do(llama: tuple[LocalSwarmFixture, str]) -> None:
    swarm, model = llama
    headers = {"Authorization": f"Bearer {swarm.token()}"}
    [listed] = httpx.get(f"{swarm.url()}/v1/models", headers=headers).json()["data"]
    able = {name for name, yes in listed["capabilities"].items() if yes}
    # Its template does not render tools.
    assert able == {"chat", "completion", "json"}
    [entry] = client(swarm).models.list().data
    assert entry.id == model and entry.object == "model"
