"""The response cache on a real gateway with an echo node, asked with the ``openai``
package: deterministic calls asked again are hits (whole or streamed), ``no-cache``
bypasses it, users do not share entries, a plan may turn it off, hits cost no tokens."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.accounts.database import Store
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes
from tests.unit.gateway.accounts.test_accounts import bearer

MESSAGES = [{"role": "user", "content": "the same question"}]


def ask(
    client: openai.OpenAI, *, temperature: float | None = 0, **extra: object
) -> tuple[str, str | None, str]:
    """The answer's text, its X-Cache header and the node that answered."""
    completions: Any = client.chat.completions  # the keyword arguments vary by call
    raw = completions.with_raw_response.create(
        model="echo", messages=MESSAGES, temperature=temperature, **extra
    )
    text = raw.parse().choices[0].message.content or ""
    return text, raw.headers.get("x-cache"), raw.headers["x-bitinglip-node"]


def test_deterministic_calls_are_answered_from_the_cache(
    swarm: LocalSwarmFixture, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway.plans.nocache]\nresponse_cache = 0\n")
    swarm.start_gateway(config=config)
    swarm.start_node("node-0", [swarm.addr("gateway")], ["echo"])
    swarm.wait_ready(["node-0"])
    url = swarm.url()
    wait_nodes(url, 1)
    node = swarm.peer_id("node-0")
    alice = openai.OpenAI(base_url=f"{url}/v1", api_key=swarm.token("alice"), max_retries=0)
    bob = openai.OpenAI(base_url=f"{url}/v1", api_key=swarm.token("bob"), max_retries=0)

    assert ask(alice) == ("the same question", "miss", node)
    assert ask(alice) == ("the same question", "hit", "cache")
    assert ask(alice, seed=7) == ("the same question", "miss", node)  # another request
    assert ask(alice, extra_headers={"Cache-Control": "no-cache"}) == (
        "the same question",
        "bypass",
        node,
    )
    assert ask(bob) == ("the same question", "miss", node)  # not alice's entry
    # Sampled at the model's own temperature: not cacheable.
    assert ask(alice, temperature=None) == ("the same question", None, node)
    assert ask(alice, temperature=0.8) == ("the same question", None, node)

    # A streamed call asked again streams the hit, chunk for chunk.
    def streamed() -> tuple[list[str], str | None]:
        completions: Any = alice.chat.completions
        with completions.with_streaming_response.create(
            model="echo",
            messages=MESSAGES,
            temperature=0,
            max_tokens=2,
            stream=True,
        ) as response:
            chunks = [c.choices[0].delta.content or "" for c in response.parse() if c.choices]
            return chunks, response.headers.get("x-cache")

    first, missed = streamed()
    again, hit = streamed()
    assert (missed, hit) == ("miss", "hit")
    assert again == first and "".join(first) == "the same"
    # A plain call keeps an entry of its own: its node answers it in one piece.
    assert ask(alice, max_tokens=2) == ("the same", "miss", node)
    assert ask(alice, max_tokens=2) == ("the same", "hit", "cache")

    # A plan may turn the cache off.
    with swarm.accounts() as store:
        swarm.token("carol")
        store.set_plan("carol", "nocache")
    carol = swarm.token("carol")
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/v1/auth/me", headers=bearer(carol)).json()["plan"]["name"] != "nocache":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=carol, max_retries=0)
    assert ask(client) == ask(client) == ("the same question", None, node)

    # A hit counts as a request and costs no tokens.
    with Store.open(swarm.data_dir / "peers" / "gateway") as store:
        rows = store.usage_records("alice")
    hits = [r for r in rows if r.peer == "cache"]
    assert len(hits) == 3
    assert all(r.prompt_tokens == r.completion_tokens == 0 and r.status == 200 for r in hits)
