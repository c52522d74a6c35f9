"""Users, logins and API keys over HTTP, in-process, on a real SQLite file in a temp dir.

``Gateway`` builds the whole accounts stack (store, accounts, limiter, usage meter) around
the fake swarm of ``test_http``; the limits and usage tests use it too.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.types import ASGIApp

import keys
from gateway.accounts.database import Store
from gateway.accounts.limits import Limiter, Plan, Plans
from gateway.accounts.tokens import operator_token
from gateway.accounts.usage import UsageMeter
from gateway.accounts.users import Accounts
from gateway.api.app import create_app
from gateway.api.auth import Authenticator
from gateway.api.services import Services
from tests.unit.gateway.api.test_http import FakeBackend, assert_error, chat

PASSWORD = "correct horse battery"
TEST_COST = keys.ScryptCost(2**14)


@dataclass
class Gateway:
    """One gateway's accounts stack and an HTTP client on its app."""

    client: httpx.AsyncClient
    store: Store
    accounts: Accounts
    limiter: Limiter
    usage: UsageMeter
    backend: FakeBackend
    signer: Ed25519PrivateKey
    app: ASGIApp
    revoked: list[tuple[str, float]] = field(default_factory=list)

    def operator_token(self, user: str, scope: str = "inference") -> dict[str, str]:
        """A token signed with the swarm's key for this gateway's accounts, as the operator
        issues one: ``user`` is added to the table first if need be (an admin, for an
        admin token)."""
        if self.store.user(user) is None:
            self.store.add_user(user, None, "default", time.time())
        if scope == "admin":
            self.store.set_admin(user, True)
        found = self.store.user(user)
        assert found is not None
        self.accounts.remember(found)  # as the gateway's reload would within a second
        audience = self.accounts.audience
        return bearer(keys.issue(self.signer, user, 3600, scope, audience=audience))

    def claims(self, token: str) -> keys.Claims:
        """``token``'s claims, verified as this gateway does."""
        return keys.verify(token, self.signer.public_key(), audience=self.accounts.audience)

    async def register(self, name: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/auth/register", json={"username": name, "password": password}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def new_key(self, session: str, name: str = "laptop") -> dict[str, Any]:
        response = await self.client.post("/v1/keys", json={"name": name}, headers=bearer(session))
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def gateway(
    tmp_path: Path,
    plans: Plans | None = None,
    backend: FakeBackend | None = None,
    clock: Any = time.time,
    signer: Ed25519PrivateKey | None = None,
    **options: Any,
) -> AsyncIterator[Gateway]:
    """A gateway on the database in ``tmp_path``; ``signer``: the swarm's token key (a new
    one by default)."""
    signer = signer or Ed25519PrivateKey.generate()
    store = Store.open(tmp_path)
    # Open registration and a cheap hash for speed: the defaults have tests of their own.
    options = {"registration": "open", "cost": TEST_COST, **options}
    accounts = Accounts(store, plans or Plans(), signer, **options)
    await accounts.load()
    limiter = Limiter(accounts.plan_of, clock)
    await limiter.load(store)
    usage = UsageMeter(store, clock)
    backend = backend or FakeBackend()
    services = Services(
        backend=backend,
        auth=Authenticator(
            keys.KeySet.of(signer.public_key()),
            [accounts],
            audience=accounts.audience,
            max_ttl=accounts.max_token_ttl,
        ),
        meters=[limiter, usage],
        store=store,
        accounts=accounts,
        limiter=limiter,
    )
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        g = Gateway(client, store, accounts, limiter, usage, backend, signer, app)
        accounts.on_revoke.append(lambda jti, exp: g.revoked.append((jti, exp)))
        try:
            yield g
        finally:
            store.close()


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as g:
        yield g


# --- register, login, me ------------------------------------------------------------------


async def test_register_gives_a_session_token_that_works(gw: Gateway) -> None:
    body = await gw.register()
    assert set(body) == {"user", "token", "expires_at"}
    profile = {"username": "alice", "plan": Plan().as_json(), "disabled": False, "admin": False}
    assert body["user"] == profile
    assert body["expires_at"] == pytest.approx(time.time() + 86400, abs=5)
    claims = gw.claims(body["token"])
    assert (claims.sub, claims.scope) == ("alice", "session")
    assert jwt.get_unverified_header(body["token"])["kid"] == keys.fingerprint(gw.signer)

    me = await gw.client.get("/v1/auth/me", headers=bearer(body["token"]))
    assert me.status_code == 200
    assert me.json() == profile


async def test_login(gw: Gateway) -> None:
    await gw.register("Alice")
    response = await gw.client.post(
        "/v1/auth/login", json={"username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["username"] == "Alice"  # as registered, whatever the case typed
    assert gw.claims(body["token"]).sub == "Alice"


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password"), ("nobody", PASSWORD), ("alice", ""), ("", PASSWORD)],
    ids=["wrong password", "unknown user", "empty password", "empty username"],
)
async def test_bad_login_is_401_saying_nothing_more(
    gw: Gateway, username: str, password: str
) -> None:
    await gw.register()
    response = await gw.client.post(
        "/v1/auth/login", json={"username": username, "password": password}
    )
    message = assert_error(response, 401, "authentication_error", "invalid_credentials")
    assert message == "wrong username or password"


async def test_duplicate_username_is_409_whatever_the_case(gw: Gateway) -> None:
    await gw.register("alice")
    for name in ("alice", "ALICE"):
        response = await gw.client.post(
            "/v1/auth/register", json={"username": name, "password": PASSWORD}
        )
        assert_error(response, 409, "server_error", "username_taken")


@pytest.mark.parametrize("password", ["", "short", "1234567", "x" * 1025])
async def test_weak_password_is_400(gw: Gateway, password: str) -> None:
    response = await gw.client.post(
        "/v1/auth/register", json={"username": "alice", "password": password}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "password"
    assert await gw.store.call(gw.store.user, "alice") is None


@pytest.mark.parametrize("username", ["ab", "-alice", "al ice", "a" * 33, "bob/../x", "é" * 4])
async def test_bad_username_is_400(gw: Gateway, username: str) -> None:
    response = await gw.client.post(
        "/v1/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "username"


async def test_register_needs_both_fields(gw: Gateway) -> None:
    response = await gw.client.post("/v1/auth/register", json={"username": "alice"})
    assert_error(response, 400, "invalid_request_error", "invalid_request")


async def test_registration_can_be_closed(tmp_path: Path) -> None:
    async with gateway(tmp_path, registration="closed") as g:
        response = await g.client.post(
            "/v1/auth/register", json={"username": "alice", "password": PASSWORD}
        )
        assert_error(response, 403, "permission_error", "registration_closed")


async def test_password_is_never_stored_in_clear(gw: Gateway, tmp_path: Path) -> None:
    await gw.register("alice", PASSWORD)
    record = await gw.store.call(gw.store.user, "alice")
    assert record is not None and record.password is not None
    assert record.password.startswith("scrypt$16384$8$1$")
    assert keys.verify_password(PASSWORD, record.password)
    files = _database_files(tmp_path)
    assert set(files) == {"gateway.db", "gateway.db-wal", "gateway.db-shm"}
    assert b"scrypt$" in b"".join(files.values())  # the hash is there; the password is not
    for name, data in files.items():
        assert PASSWORD.encode() not in data, name


def _database_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in directory.glob("gateway.db*")}


async def test_me_for_a_token_only_user(gw: Gateway) -> None:
    response = await gw.client.get("/v1/auth/me", headers=gw.operator_token("ops-bot"))
    assert response.json() == {
        "username": "ops-bot",
        "plan": Plan().as_json(),
        "disabled": False,
        "admin": False,
    }


async def test_no_signing_key_is_503_and_creates_nobody(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    accounts = Accounts(store, Plans(), None)
    auth = Authenticator(Ed25519PrivateKey.generate().public_key())
    services = Services(backend=FakeBackend(), auth=auth, accounts=accounts, store=store)
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/v1/auth/register", json={"username": "alice", "password": PASSWORD}
        )
    assert_error(response, 503, "server_error", "signing_unavailable")
    assert store.users() == []
    store.close()


# --- API keys -----------------------------------------------------------------------------


async def test_create_list_use_and_revoke_a_key(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    created = await gw.new_key(session, "laptop")
    assert set(created) == {"id", "name", "key", "expires_at"}
    assert created["name"] == "laptop"
    assert created["expires_at"] == pytest.approx(time.time() + 365 * 86400, abs=5)
    claims = gw.claims(created["key"])
    assert (claims.sub, claims.scope, claims.jti) == ("alice", "inference", created["id"])

    listed = (await gw.client.get("/v1/keys", headers=bearer(session))).json()
    assert listed == {
        "data": [
            {
                "id": created["id"],
                "name": "laptop",
                "created": pytest.approx(time.time(), abs=5),
                "expires_at": created["expires_at"],
                "revoked": False,
            }
        ]
    }
    key = bearer(created["key"])
    assert (
        await gw.client.post("/v1/chat/completions", json=chat(), headers=key)
    ).status_code == 200

    response = await gw.client.delete(f"/v1/keys/{created['id']}", headers=bearer(session))
    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "revoked": True}
    # Refused at once, on every route, and announced to whoever forwards revocations.
    for refused in (
        await gw.client.post("/v1/chat/completions", json=chat(), headers=key),
        await gw.client.get("/v1/models", headers=key),
    ):
        assert "revoked" in assert_error(refused, 401, "authentication_error", "invalid_api_key")
    assert gw.revoked == [(created["id"], created["expires_at"])]
    listed = (await gw.client.get("/v1/keys", headers=bearer(session))).json()
    assert listed["data"][0]["revoked"] is True
    # Revoking again is harmless.
    again = await gw.client.delete(f"/v1/keys/{created['id']}", headers=bearer(session))
    assert again.status_code == 200


async def test_key_lifetime_can_be_chosen(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    response = await gw.client.post(
        "/v1/keys", json={"name": "ci", "ttl_days": 7}, headers=bearer(session)
    )
    assert response.json()["expires_at"] == pytest.approx(time.time() + 7 * 86400, abs=5)
    for bad in ({"name": "ci", "ttl_days": 0}, {"name": ""}, {}, {"name": "x" * 65}):
        response = await gw.client.post("/v1/keys", json=bad, headers=bearer(session))
        assert_error(response, 400, "invalid_request_error", "invalid_request")


async def test_keys_survive_a_restart(tmp_path: Path) -> None:
    async with gateway(tmp_path) as g:
        session = (await g.register())["token"]
        created = await g.new_key(session)
        claims = g.claims(created["key"])
        await g.client.delete(f"/v1/keys/{created['id']}", headers=bearer(session))
    store = Store.open(tmp_path)
    accounts = Accounts(store, Plans(), g.signer)
    await accounts.load()
    with pytest.raises(keys.TokenError, match="revoked"):
        await accounts.check(claims)
    store.close()


async def test_api_keys_cannot_manage_keys(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    key = bearer((await gw.new_key(session))["key"])
    for response in (
        await gw.client.get("/v1/keys", headers=key),
        await gw.client.post("/v1/keys", json={"name": "more"}, headers=key),
        await gw.client.get("/v1/keys", headers=gw.operator_token("alice", "admin")),
    ):
        assert "session" in assert_error(response, 403, "permission_error", "insufficient_scope")
    assert (await gw.client.get("/v1/keys")).status_code == 401


async def test_nobody_revokes_another_users_key(gw: Gateway) -> None:
    alice = (await gw.register("alice"))["token"]
    bob = (await gw.register("bob"))["token"]
    key = await gw.new_key(alice)
    for key_id in (key["id"], "no-such-key"):
        response = await gw.client.delete(f"/v1/keys/{key_id}", headers=bearer(bob))
        assert_error(response, 404, "not_found_error", "key_not_found")
    assert (await gw.client.get("/v1/keys", headers=bearer(bob))).json() == {"data": []}
    use = await gw.client.post("/v1/chat/completions", json=chat(), headers=bearer(key["key"]))
    assert use.status_code == 200


# --- disabled users, revocations from elsewhere -------------------------------------------


async def test_disabled_user_is_refused_everywhere(gw: Gateway, tmp_path: Path) -> None:
    session = (await gw.register())["token"]
    key = bearer((await gw.new_key(session))["key"])
    with Store.open(tmp_path) as cli:  # the operator's CLI: another connection
        assert cli.set_disabled("alice", True)
    await gw.accounts.refresh()
    response = await gw.client.post("/v1/chat/completions", json=chat(), headers=key)
    assert "disabled" in assert_error(response, 401, "authentication_error", "invalid_api_key")
    login = await gw.client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert_error(login, 403, "permission_error", "account_disabled")
    with Store.open(tmp_path) as cli:
        cli.set_disabled("alice", False)
    await gw.accounts.refresh()
    response = await gw.client.post("/v1/chat/completions", json=chat(), headers=key)
    assert response.status_code == 200


async def test_cli_revocation_is_picked_up_and_announced(gw: Gateway, tmp_path: Path) -> None:
    token = gw.operator_token("ops-bot")["Authorization"].split()[1]
    jti = gw.claims(token).jti
    with Store.open(tmp_path) as cli:
        cli.revoke(jti, None, time.time())
    await gw.accounts.refresh()
    response = await gw.client.get("/v1/models", headers=bearer(token))
    assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert gw.revoked == [(jti, math.inf)]


async def test_revoke_remote_refuses_at_once_and_is_saved(gw: Gateway, tmp_path: Path) -> None:
    token = gw.operator_token("alice")["Authorization"].split()[1]
    claims = gw.claims(token)
    gw.accounts.revoke_remote(claims.jti, claims.exp)
    assert (await gw.client.get("/v1/models", headers=bearer(token))).status_code == 401
    assert gw.revoked == []  # learned from elsewhere: not sent back out
    await gw.accounts.refresh()
    with Store.open(tmp_path) as other:
        assert other.revocations(time.time()) == {claims.jti: claims.exp}


async def test_expired_revocations_are_forgotten(gw: Gateway) -> None:
    gw.accounts.revoke_remote("old", time.time() - 10)
    await gw.accounts.refresh()
    assert await gw.store.call(gw.store.revocations, time.time()) == {}
    await gw.register("alice")
    claims = keys.Claims("alice", "old", "inference", time.time() + 60, time.time())
    await gw.accounts.check(claims)  # no longer listed (it could not verify anyway)


async def test_a_token_naming_nobody_in_the_table_is_refused(gw: Gateway) -> None:
    audience = gw.accounts.audience
    for scope in ("inference", "session", "admin"):
        nobody = bearer(keys.issue(gw.signer, "no-account", 3600, scope, audience=audience))
        for method, path in (("GET", "/v1/auth/me"), ("POST", "/v1/chat/completions")):
            response = await gw.client.request(method, path, json=chat(), headers=nobody)
            message = assert_error(response, 401, "authentication_error", "invalid_api_key")
            assert message == "user 'no-account' has no account on this gateway"
    assert gw.store.usage_records() == []


async def test_a_user_another_process_just_added_is_accepted_before_the_reload(
    gw: Gateway, tmp_path: Path
) -> None:
    with Store.open(tmp_path) as cli:  # `bitinglip users add`, then `tokens issue`
        cli.add_user("ops-bot", None, "default", time.time())
        token = operator_token(cli, gw.signer, "ops-bot", 600)
    assert (await gw.client.get("/v1/auth/me", headers=bearer(token))).status_code == 200


async def test_live_keys_are_capped(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.accounts.api_keys.MAX_KEYS", 2)
    session = (await gw.register())["token"]
    first = await gw.new_key(session)
    await gw.new_key(session)
    response = await gw.client.post("/v1/keys", json={"name": "k"}, headers=bearer(session))
    assert_error(response, 400, "invalid_request_error", "too_many_keys")
    await gw.client.delete(f"/v1/keys/{first['id']}", headers=bearer(session))
    await gw.new_key(session)  # a revoked key frees its place
