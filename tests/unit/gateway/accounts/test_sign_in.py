"""Registering and logging in under attack: who may register (open, invite, closed), cross-site
posts, guessing at speed, and floods of password hashing. In-process, on a real SQLite file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import Busy, LimitReached, Refused
from gateway.accounts.invites import invite_hash
from gateway.accounts.limits import Plans
from gateway.accounts.throttle import Buckets, PasswordWork, SignInThrottle
from gateway.accounts.users import Accounts, add_user, create_user
from gateway.config import GatewayConfig
from node.cli.main import main
from tests.unit.gateway.accounts.test_accounts import (
    PASSWORD,
    TEST_COST,
    Gateway,
    bearer,
    gateway,
)
from tests.unit.gateway.api.test_http import assert_error

ACCOUNT = {"username": "alice", "password": PASSWORD}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as g:
        yield g


@asynccontextmanager
async def from_address(g: Gateway, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``g``'s app that the gateway sees coming from ``host``."""
    transport = httpx.ASGITransport(app=g.app, client=(host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


# --- who may register ---------------------------------------------------------------------


def test_registration_is_closed_unless_configured() -> None:
    assert GatewayConfig().registration == "closed"
    with pytest.raises(ValueError, match="open, invite or closed"):
        GatewayConfig(registration="yes")  # type: ignore[arg-type]


async def test_closed_registration_is_403_with_a_sentence(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:  # closed is the accounts' own default too
        accounts = Accounts(store, Plans(), Ed25519PrivateKey.generate(), cost=TEST_COST)
        with pytest.raises(Refused) as caught:
            await accounts.register("alice", PASSWORD)
        assert (caught.value.status_hint, caught.value.code) == (403, "registration_closed")
    async with gateway(tmp_path / "g", registration="closed") as g:
        response = await g.client.post("/v1/auth/register", json=ACCOUNT)
        message = assert_error(response, 403, "permission_error", "registration_closed")
        assert message == "registration is closed on this gateway: ask its operator for an account"
        assert g.store.users() == []


async def test_invite_registration_needs_a_code_used_once(tmp_path: Path) -> None:
    async with gateway(tmp_path, registration="invite") as g:
        response = await g.client.post("/v1/auth/register", json=ACCOUNT)
        message = assert_error(response, 403, "permission_error", "invite_required")
        assert "invite code" in message

        made = await g.client.post(
            "/v1/admin/invites", json={}, headers=g.operator_token("root", "admin")
        )
        assert made.status_code == 201, made.text
        code = made.json()["invite"]
        assert made.json()["expires_at"] == pytest.approx(time.time() + 7 * 86400, abs=5)
        assert code not in str(g.store._read("SELECT * FROM invites"))  # only its hash is kept

        wrong = await g.client.post("/v1/auth/register", json=ACCOUNT | {"invite": code + "x"})
        assert_error(wrong, 403, "permission_error", "invite_invalid")
        used = await g.client.post("/v1/auth/register", json=ACCOUNT | {"invite": code})
        assert used.status_code == 201, used.text
        again = {"username": "bob", "password": PASSWORD, "invite": code}
        response = await g.client.post("/v1/auth/register", json=again)
        message = assert_error(response, 403, "permission_error", "invite_invalid")
        assert message == "the invite code is unknown, used or expired"
        assert [u.name for u in g.store.users()] == ["alice", "root"]


async def test_a_taken_name_does_not_use_up_the_invite(tmp_path: Path) -> None:
    async with gateway(tmp_path, registration="invite") as g:
        code, _ = await g.accounts.invite(3600)
        g.store.add_user("alice", None, "default", 1.0)
        taken = await g.client.post("/v1/auth/register", json=ACCOUNT | {"invite": code})
        assert_error(taken, 409, "server_error", "username_taken")
        bob = {"username": "bob", "password": PASSWORD, "invite": code}
        assert (await g.client.post("/v1/auth/register", json=bob)).status_code == 201


async def test_an_expired_invite_is_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path, registration="invite") as g:
        code, _ = await g.accounts.invite(60)
        g.store._write("UPDATE invites SET expires_at = ?", (time.time() - 1,))
        response = await g.client.post("/v1/auth/register", json=ACCOUNT | {"invite": code})
        assert_error(response, 403, "permission_error", "invite_invalid")


async def test_only_admins_make_invites(tmp_path: Path) -> None:
    async with gateway(tmp_path, registration="invite") as g:
        g.store.add_user("mallory", None, "default", 1.0)
        audience = g.accounts.audience
        # The scope is only a claim: anyone holding the signing key can write it.
        forged = keys.issue(g.signer, "mallory", 60, "admin", audience=audience)
        response = await g.client.post("/v1/admin/invites", json={}, headers=bearer(forged))
        assert "not an admin" in assert_error(
            response, 403, "permission_error", "insufficient_scope"
        )


def test_the_cli_prints_an_invite_that_registers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "invite", "--ttl", "1h", "--data-dir", str(tmp_path)]) == 0
    code = capsys.readouterr().out.strip()
    with Store.open(tmp_path) as store:
        add_user(store, "alice", None, "default", time.time(), invite=invite_hash(code))
        assert store.user("alice") is not None


# --- cross-site posts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None],
)
@pytest.mark.parametrize("route", ["/v1/auth/register", "/v1/auth/login"])
async def test_a_json_body_without_a_json_type_is_415(
    gw: Gateway, route: str, content_type: str | None
) -> None:
    # What a page elsewhere can post from a user's browser without asking: a form, or
    # text/plain whose body happens to be JSON.
    headers = {"Content-Type": content_type} if content_type else {}
    body = b'{"username": "alice", "password": "correct horse battery"}'
    response = await gw.client.post(route, content=body, headers=headers)
    message = assert_error(response, 415, "invalid_request_error", "unsupported_media_type")
    assert "application/json" in message
    assert gw.store.users() == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
async def test_json_types_are_read(gw: Gateway, content_type: str) -> None:
    body = b'{"username": "alice", "password": "correct horse battery"}'
    response = await gw.client.post(
        "/v1/auth/register", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


# --- guessing -----------------------------------------------------------------------------


async def test_logins_are_throttled_per_user_name_from_any_address(gw: Gateway) -> None:
    create_user(gw.store, "alice", PASSWORD, "default", 1.0, cost=TEST_COST)
    wrong = {"username": "alice", "password": "not the password"}
    for i in range(10):
        async with from_address(gw, f"10.0.0.{i}") as client:
            response = await client.post("/v1/auth/login", json=wrong)
            assert response.status_code == 401
    async with from_address(gw, "10.0.1.1") as client:
        response = await client.post("/v1/auth/login", json=ACCOUNT)
        message = assert_error(response, 429, "rate_limit_error", "too_many_attempts")
        assert message.startswith("too many sign-in attempts")
        assert int(response.headers["retry-after"]) >= 1
        # Others can still log in from there.
        other = await client.post("/v1/auth/register", json=ACCOUNT | {"username": "bob"})
        assert other.status_code == 201


async def test_sign_ins_are_throttled_per_address_whatever_the_name(gw: Gateway) -> None:
    async with from_address(gw, "192.0.2.7") as client:
        for i in range(20):
            guess = {"username": f"user{i}", "password": "not the password"}
            assert (await client.post("/v1/auth/login", json=guess)).status_code == 401
        response = await client.post("/v1/auth/register", json=ACCOUNT)
        assert_error(response, 429, "rate_limit_error", "too_many_attempts")
        assert 1 <= int(response.headers["retry-after"]) <= 3  # one attempt back every 3 s
    assert gw.store.users() == []
    async with from_address(gw, "192.0.2.8") as elsewhere:
        assert (await elsewhere.post("/v1/auth/register", json=ACCOUNT)).status_code == 201


def test_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = Buckets(2, clock=lambda: now[0], max_keys=3)
    assert (buckets.take("a"), buckets.take("a")) == (0.0, 0.0)
    assert buckets.take("a") == pytest.approx(30.0)
    now[0] = 30.0
    assert buckets.take("a") == 0.0
    for key in "bcde":
        buckets.take(key)
    assert len(buckets._buckets) == 3


def test_the_throttle_counts_names_whatever_their_case() -> None:
    throttle = SignInThrottle(per_address=100, per_user=1)
    throttle.check("1.2.3.4", "Alice")
    with pytest.raises(LimitReached, match="too many sign-in attempts"):
        throttle.check("5.6.7.8", "ALICE")


# --- password hashing under load ----------------------------------------------------------


async def test_password_hashing_beyond_its_bound_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = keys.verify_password

    def slow(password: str, encoded: str | None, cost: keys.ScryptCost = keys.OWASP) -> bool:
        release.wait(10)
        return real(password, encoded, cost)

    monkeypatch.setattr("keys.verify_password", slow)
    async with gateway(tmp_path, hashing=PasswordWork(concurrent=1, waiting=1)) as g:
        create_user(g.store, "alice", PASSWORD, "default", 1.0, cost=TEST_COST)
        answers: list[int] = []

        async def login(host: str) -> None:
            async with from_address(g, host) as client:
                answers.append((await client.post("/v1/auth/login", json=ACCOUNT)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(login, "10.0.0.1")  # hashing
            nursery.start_soon(login, "10.0.0.2")  # waiting
            await trio.sleep(0.2)
            # The third is told to come back, without waiting for the two before it.
            with trio.fail_after(2):
                async with from_address(g, "10.0.0.3") as client:
                    refused = await client.post("/v1/auth/login", json=ACCOUNT)
            message = assert_error(refused, 503, "server_error", "busy")
            assert "busy" in message
            assert refused.headers["retry-after"] == "1"
            release.set()
        assert answers == [200, 200]


async def test_password_work_runs_off_the_event_loop() -> None:
    work = PasswordWork(concurrent=1, waiting=0)
    here = threading.get_ident()
    assert await work.run(threading.get_ident) != here
    with pytest.raises(ValueError):
        PasswordWork(concurrent=0)
    assert isinstance(Busy("m", "busy", 1), Exception)


async def test_an_old_cost_hash_logs_in_and_is_upgraded(gw: Gateway) -> None:
    old = keys.hash_password(PASSWORD, keys.ScryptCost(2**10))
    gw.store.add_user("alice", old, "default", 1.0)
    response = await gw.client.post("/v1/auth/login", json=ACCOUNT)
    assert response.status_code == 200, response.text
    upgraded = gw.store.user("alice")
    assert upgraded is not None and upgraded.password is not None
    assert upgraded.password.split("$")[1] == str(TEST_COST.n)
    assert keys.verify_password(PASSWORD, upgraded.password, TEST_COST)


def test_the_configured_cost_is_owasps_and_cannot_go_too_low() -> None:
    assert GatewayConfig().scrypt_n == 2**17
    with pytest.raises(ValueError, match="cheap"):
        GatewayConfig(scrypt_n=2**10)
    with pytest.raises(ValueError, match="power of two"):
        GatewayConfig(scrypt_n=3 * 2**15)
