"""The official ``openai`` client against a real swarm: a gateway process on hypercorn and
echo node processes on 127.0.0.1, found through the DHT and reached over libp2p.

One swarm serves the whole module (starting processes takes seconds). Its tests do not
disturb each other: each uses its own user, and the one that kills a node kills a node
of its own, serving a model nobody else asks for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import openai
import pytest

from gateway.accounts.database import Store
from tests.integration.conftest import LocalSwarmFixture

# A plan for one user only, set in the gateway's TOML file as an operator would.
CONFIG = """\
[gateway.plans.tight]
requests_per_minute = 2
"""
TIGHT_USER = "tightwad"
SLOW_MODEL = "echo-slow"  # served by a node that takes 0.1 s per word, killed mid-answer


def wait_models(url: str, token: str, wanted: set[str], timeout: float = 60) -> None:
    """Until the gateway routes every model in ``wanted`` to a ready, healthy node."""
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    while time.monotonic() < deadline:
        listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"})
        ready = {
            m["id"]
            for m in listed.json()["data"]
            if any(p["state"] == "ready" and p["healthy"] for p in m["peers"])
        }
        if wanted <= ready:
            return
        time.sleep(0.2)
    raise AssertionError(f"the gateway routes {sorted(ready)}, not all of {sorted(wanted)}")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSwarmFixture]:
    s = LocalSwarmFixture(tmp_path_factory.mktemp("e2e") / "swarm")
    try:
        config = s.data_dir / "gateway.toml"
        config.write_text(CONFIG)
        # The tight plan's user exists before the gateway starts: her first call is metered.
        with Store.open(s.data_dir / "peers" / "gateway") as store:
            store.add_user(TIGHT_USER, None, "tight", time.time())
        s.local.spawn("gateway", "gateway", ["--port", "0", "--config", str(config)])
        s.local.wait(["gateway"], "ready", 60)
        boot = [s.addr("gateway")]
        s.start_node("steady", boot, ["echo"])
        s.start_node("victim", boot, [SLOW_MODEL], ["--echo-delay", "0.1"])
        s.wait_ready(["steady", "victim"])
        wait_models(s.url(), s.token(), {"echo", SLOW_MODEL})
        yield s
    finally:
        s.local.stop()


def client(
    swarm: LocalSwarmFixture, user: str = "tester", token: str | None = None
) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{swarm.url()}/v1",
        api_key=token or swarm.token(user),
        max_retries=0,
        timeout=30,
    )


def test_chat(swarm: LocalSwarmFixture) -> None:
    raw = client(swarm, "chatter").chat.completions.with_raw_response.create(
        model="echo",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello over the swarm"},
        ],
    )
    assert raw.headers["x-bitinglip-node"] == swarm.peer_id("steady")
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello over the swarm"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    # The echo model counts each message's words plus one, and answers word by word.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3 + 5, 4)
    assert completion.usage.total_tokens == 12


def test_streamed_chat_with_usage(swarm: LocalSwarmFixture) -> None:
    stream = client(swarm, "streamer").chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "streamed words arrive one by one"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=4,
    )
    pieces: list[str] = []
    finish: list[str] = []
    usage: list[tuple[int, int]] = []
    for chunk in stream:
        if chunk.usage is not None:
            usage.append((chunk.usage.prompt_tokens, chunk.usage.completion_tokens))
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert "".join(pieces) == "streamed words arrive one"
    assert finish == ["length"]
    assert usage == [(7, 4)]


def test_completions_plain_and_streamed(swarm: LocalSwarmFixture) -> None:
    api = client(swarm, "completer")
    answer = api.completions.create(model="echo", prompt="once upon a time", max_tokens=3)
    assert answer.choices[0].text == "once upon a"
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 3

    pieces: list[str] = []
    usage: list[int] = []
    for chunk in api.completions.create(
        model="echo", prompt="a b c", max_tokens=8, stream=True,
        stream_options={"include_usage": True},
    ):  # fmt: skip
        pieces += [c.text for c in chunk.choices]
        if chunk.usage is not None:
            usage.append(chunk.usage.completion_tokens)
    assert "".join(pieces) == "a b c"
    assert usage == [3]


def test_models_list_names_the_models_served(swarm: LocalSwarmFixture) -> None:
    listed = client(swarm, "browser").models.list()
    # The slow model leaves the list once its node is killed (another test does that).
    assert {m.id for m in listed.data} in ({"echo"}, {"echo", SLOW_MODEL})
    (echo,) = [m for m in listed.data if m.id == "echo"]
    assert echo.owned_by == "bitinglip"
    extra = echo.model_extra or {}
    assert extra["task"] == "text-generation"
    assert [p["peer_id"] for p in extra["peers"]] == [swarm.peer_id("steady")]


def test_bad_token_is_authentication_error(swarm: LocalSwarmFixture) -> None:
    good = swarm.token("mallory")
    header, claims, signature = good.split(".")
    forged = f"{header}.{claims}.{'A' * len(signature)}"
    for token in (forged, "not-a-jwt"):
        with pytest.raises(openai.AuthenticationError) as caught:
            client(swarm, token=token).chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == 401
        assert caught.value.code == "invalid_api_key"


def test_unknown_model_is_not_found_naming_what_is_served(swarm: LocalSwarmFixture) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(swarm, "lost").chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model_not_found"
    assert "'gpt-9'" in caught.value.message
    assert "available: echo" in caught.value.message


def test_rate_limit_is_rate_limit_error_with_retry_after(swarm: LocalSwarmFixture) -> None:
    api = client(swarm, TIGHT_USER)
    messages: Any = [{"role": "user", "content": "again"}]
    for _ in range(2):  # the tight plan's requests per minute
        assert api.chat.completions.create(model="echo", messages=messages).choices
    with pytest.raises(openai.RateLimitError) as caught:
        api.chat.completions.create(model="echo", messages=messages)
    refused = caught.value
    assert refused.status_code == 429
    assert refused.code == "rate_limit_exceeded"
    retry_after = int(refused.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert refused.response.headers["x-ratelimit-limit"] == "2"
    assert refused.response.headers["x-ratelimit-remaining"] == "0"
    # Another user on the default plan is not held back by her limit.
    assert client(swarm, "bystander").chat.completions.create(model="echo", messages=messages)


def test_node_killed_mid_stream_makes_the_client_raise(swarm: LocalSwarmFixture) -> None:
    words = " ".join(f"w{i}" for i in range(100))  # 10 s at the victim's pace
    stream = client(swarm, "unlucky").chat.completions.create(
        model=SLOW_MODEL, messages=[{"role": "user", "content": words}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            text = "".join(c.delta.content or "" for c in chunk.choices)
            if text and not received:  # the first words are out: the node dies now
                swarm.kill("victim")
            received += text
    assert received.startswith("w0")
    assert received != words  # cut off, not completed
    assert "mid-answer" in caught.value.message
    body = cast(dict[str, Any], caught.value.body)
    assert body["code"] == "unavailable"
