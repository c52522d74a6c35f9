"""Property-based fuzzing of the HTTP API from its own OpenAPI description.

Schemathesis generates requests for every documented operation and sends them to a real
gateway process with a live echo node, carrying a valid token signed with the swarm's
token key; whatever it sends, the gateway must not answer with a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from starlette.testclient import TestClient

import keys
from gateway.accounts.tokens import audience_of
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Backend, Services
from tests.integration.conftest import LocalSwarmFixture
from tests.integration.test_swarm import wait_nodes

EXAMPLES = 20  # per operation: the whole run stays well under a minute
USER = "fuzzer"


@dataclass(frozen=True)
class Gateway:
    url: str
    data_dir: Path
    audience: str  # the gateway's accounts: tokens for others are refused before any route

    def headers(self, scope: str, user: str = USER) -> dict[str, str]:
        """A token of ``scope`` for ``user``, signed with the swarm's token key."""
        signing = keys.jwt_keys(self.data_dir).private
        assert signing is not None
        token = keys.issue(signing, user, 3600, scope, audience=self.audience)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway, an echo node and a registered user (an admin too), for the whole module."""
    swarm = LocalSwarmFixture(tmp_path_factory.mktemp("fuzz"))
    try:
        status = swarm.start_gateway()
        swarm.start_node("node-0", [str(status["addrs"][0])], ["echo"])  # type: ignore[index]
        swarm.wait_ready(["node-0"])
        url = swarm.url()
        wait_nodes(url, 1)
        account = {"username": USER, "password": "a long enough password"}
        registered = httpx.post(f"{url}/v1/auth/register", json=account, timeout=30)
        assert registered.status_code == 201, registered.text
        with swarm.accounts() as store:
            store.set_admin(USER, True)
            audience = audience_of(store)
        yield Gateway(url, swarm.data_dir, audience)
    finally:
        swarm.local.stop()


def _schema() -> BaseSchema:
    """The API description every gateway serves, read from an app built here: the
    operations must be known when tests are collected, before any gateway runs."""
    services = Services(
        backend=cast(Backend, None), auth=Authenticator(Ed25519PrivateKey.generate().public_key())
    )
    with TestClient(create_app(services), backend="trio") as client:
        return schemathesis.openapi.from_dict(client.get("/openapi.json").json())


schema = _schema()
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same requests every run: a failure here is reproducible
)


@schema.exclude(path_regex="^/v1/admin/").parametrize()
@FUZZ
def test_no_request_is_a_server_error(case: Case[Any], gateway: Gateway) -> None:
    headers = gateway.headers("session")
    case.call_and_validate(
        base_url=gateway.url, headers=headers, checks=[not_a_server_error], timeout=30
    )


@schema.include(path_regex="^/v1/admin/").parametrize()
@FUZZ
def test_no_admin_request_is_a_server_error(case: Case[Any], gateway: Gateway) -> None:
    headers = gateway.headers("admin")
    case.call_and_validate(
        base_url=gateway.url, headers=headers, checks=[not_a_server_error], timeout=30
    )


def test_the_fuzzed_description_is_the_gateway_s(gateway: Gateway) -> None:
    served = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert served == schema.raw_schema


def test_a_key_for_a_user_without_an_account_is_refused(gateway: Gateway) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/keys",
        json={"name": "k"},
        headers=gateway.headers("session", user="no-account"),
        timeout=30,
    )
    # Found by fuzzing with an operator-issued token: this was a 500 (a foreign key), then a
    # 403; a token naming no account is now refused at the door, like any invalid key.
    assert response.status_code == 401, response.text
    assert "has no account on this gateway" in response.json()["error"]["message"]


def test_a_method_not_allowed_says_which_are(gateway: Gateway) -> None:
    response = httpx.request("TRACE", f"{gateway.url}/health", timeout=10)
    assert response.status_code == 405
    assert response.headers.get("allow") == "GET"
