"""The response cache on the HTTP app in process, with the accounts stack on a real SQLite
file: what a hit is charged by the plan, and that it is recorded, after its answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from gateway.accounts.database import Store
from gateway.accounts.limits import Limiter, Plan, Plans
from gateway.accounts.usage import UsageMeter
from gateway.accounts.users import Accounts
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.response_cache import ResponseCache
from gateway.api.services import Services
from tests.unit.gateway.api.test_http import PEER, FakeBackend, chat


@asynccontextmanager
async def cached_gateway(tmp_path: Path, backend: FakeBackend) -> AsyncIterator[Gateway]:
    """A gateway app with the response cache, ann's plan charging hits half their tokens."""
    signer = Ed25519PrivateKey.generate()
    plans = Plans({"half": Plan("half", cache_hit_percent=50)}, "half")
    with Store.open(tmp_path) as store:
        accounts = Accounts(store, plans, signer, cost=keys.ScryptCost(2**14))
        await accounts.load()
        limiter = Limiter(accounts.plan_of)
        services = Services(
            backend=backend,
            auth=Authenticator(keys.KeySet.of(signer.public_key()), audience=accounts.audience),
            meters=[limiter, UsageMeter(store)],
            store=store,
            accounts=accounts,
            limiter=limiter,
            cache=ResponseCache(1 << 20, 60),
        )
        token = keys.issue(signer, "ann", 3600, "inference", audience=accounts.audience)
        headers = {"Authorization": f"Bearer {token}"}
        transport = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=headers
        ) as client:
            yield Gateway(client, store, limiter, services)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    store: Store
    limiter: Limiter
    services: Services


async def test_a_hit_is_charged_the_plan_s_share_and_recorded(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with cached_gateway(tmp_path, backend) as gw:
        asked = chat(text="one two three four", temperature=0)
        first = await gw.client.post("/v1/chat/completions", json=asked)
        again = await gw.client.post("/v1/chat/completions", json=asked)
        rows = gw.store.usage_records("ann")
    limiter, services = gw.limiter, gw.services
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("miss", "hit")
    assert len(backend.calls) == 1
    assert again.json()["choices"] == first.json()["choices"]
    # The body tells the answer's own counts; the hit is charged half of them.
    assert again.json()["usage"] == first.json()["usage"]
    assert [(r.peer, r.prompt_tokens, r.completion_tokens, r.status) for r in rows] == [
        (PEER, 18, 4, 200),
        ("cache", 9, 2, 200),
    ]
    assert limiter.status("ann")["tokens_today"] == 18 + 4 + 9 + 2
    assert limiter.status("ann")["requests_this_minute"] == 2
    exported = services.metrics.exposition().decode()
    assert 'bitinglip_gateway_response_cache_total{result="hit"} 1.0' in exported
    assert 'bitinglip_gateway_response_cache_total{result="miss"} 1.0' in exported


async def test_several_choices_are_not_cached(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with cached_gateway(tmp_path, backend) as gw:
        asked = chat(text="one two", temperature=0) | {"n": 2}
        answers = [await gw.client.post("/v1/chat/completions", json=asked) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    assert all("x-cache" not in a.headers for a in answers)
    assert len(backend.calls) == 2
    assert [c["index"] for c in answers[1].json()["choices"]] == [0, 1]
