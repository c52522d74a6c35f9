"""A user's own account settings over HTTP, in-process on real SQLite: sessions listed and
ended, the password changed, the account deleted; and what each leaves refused."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import Refused
from gateway.accounts.settings import DELETED_PREFIX
from gateway.accounts.throttle import SignInThrottle
from gateway.accounts.tokens import operator_token
from tests.unit.gateway.accounts.test_accounts import PASSWORD, Gateway, bearer, gateway
from tests.unit.gateway.api.test_http import assert_error, chat

NEW_PASSWORD = "staple battery horse"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as g:
        yield g


async def login(gw: Gateway, agent: str, name: str = "alice", password: str = PASSWORD) -> str:
    response = await gw.client.post(
        "/v1/auth/login",
        json={"username": name, "password": password},
        headers={"User-Agent": agent},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def refused(gw: Gateway, token: str) -> str:
    """The 401 ``/v1/auth/me`` answers ``token`` with; its message."""
    response = await gw.client.get("/v1/auth/me", headers=bearer(token))
    return assert_error(response, 401, "authentication_error", "invalid_api_key")


async def works(gw: Gateway, token: str) -> bool:
    return (await gw.client.get("/v1/auth/me", headers=bearer(token))).status_code == 200


async def sessions(gw: Gateway, token: str) -> list[dict[str, Any]]:
    response = await gw.client.get("/v1/auth/sessions", headers=bearer(token))
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


# --- sessions ------------------------------------------------------------------------------


async def test_sessions_say_where_and_when(gw: Gateway) -> None:
    await gw.register()
    phone = await login(gw, "Phone/1.0")
    laptop = await login(gw, "Laptop/2.0")
    listed = await sessions(gw, laptop)
    # The registration is a session too; the newest use comes first.
    assert [s["agent"] for s in listed] == [
        "Laptop/2.0",
        "Phone/1.0",
        "python-httpx/" + httpx.__version__,
    ]
    assert [s["current"] for s in listed] == [True, False, False]
    assert set(listed[0]) == {
        "id", "agent", "address", "created", "last_used", "expires_at", "current"
    }  # fmt: skip
    assert listed[0]["id"] == gw.claims(laptop).jti

    # A use is noted in memory at once (listed so) and written by the refresh loop.
    phone_id = gw.claims(phone).jti
    before = gw.store.session(phone_id)
    assert before is not None
    await trio.sleep(0.01)
    assert await works(gw, phone)
    listed_use = {s["id"]: s["last_used"] for s in await sessions(gw, laptop)}
    assert gw.store.session(phone_id) == before
    await gw.accounts.refresh()
    after = gw.store.session(phone_id)
    assert after is not None and after.last_used > before.last_used
    assert listed_use[phone_id] == int(after.last_used)
    assert gw.store.session(gw.claims(laptop).jti) is not None


async def test_ending_a_session_refuses_its_token_at_once(gw: Gateway) -> None:
    await gw.register()
    phone = await login(gw, "Phone")
    laptop = await login(gw, "Laptop")
    phone_id = gw.claims(phone).jti
    response = await gw.client.delete(f"/v1/auth/sessions/{phone_id}", headers=bearer(laptop))
    assert response.json() == {"id": phone_id, "ended": True}
    assert "revoked" in await refused(gw, phone)
    assert phone_id not in [s["id"] for s in await sessions(gw, laptop)]
    assert dict(gw.revoked)[phone_id] == gw.claims(phone).exp  # announced to other gateways
    # Once ended, it is no more: 404, like a session that was never the caller's.
    again = await gw.client.delete(f"/v1/auth/sessions/{phone_id}", headers=bearer(laptop))
    assert_error(again, 404, "not_found_error", "session_not_found")


async def test_logging_out_ends_the_session_in_the_list(gw: Gateway) -> None:
    here = (await gw.register())["token"]
    there = await login(gw, "Elsewhere")
    assert (await gw.client.post("/v1/auth/logout", headers=bearer(there))).status_code == 200
    assert [s["agent"] for s in await sessions(gw, here)] == ["python-httpx/" + httpx.__version__]


async def test_an_expired_session_is_not_listed_nor_ended(gw: Gateway) -> None:
    token = (await gw.register())["token"]
    claims = keys.Claims("alice", "old-session", "session", time.time() - 1)
    await gw.accounts.sessions.start(claims, "Yesterday", None)
    assert [s["current"] for s in await sessions(gw, token)] == [True]  # not yesterday's
    with pytest.raises(Refused, match="no session 'old-session'"):
        await gw.accounts.sessions.end("alice", "old-session")


async def test_nobody_ends_another_users_session(gw: Gateway) -> None:
    alice = (await gw.register("alice"))["token"]
    bob = (await gw.register("bobby"))["token"]
    response = await gw.client.delete(
        f"/v1/auth/sessions/{gw.claims(alice).jti}", headers=bearer(bob)
    )
    assert_error(response, 404, "not_found_error", "session_not_found")
    assert await works(gw, alice)


async def test_end_all_other_sessions(gw: Gateway) -> None:
    first = (await gw.register())["token"]
    others = [await login(gw, f"Browser {i}") for i in range(3)]
    response = await gw.client.delete("/v1/auth/sessions", headers=bearer(first))
    assert sorted(response.json()["ended"]) == sorted(gw.claims(t).jti for t in others)
    for token in others:
        assert "revoked" in await refused(gw, token)
    assert [s["current"] for s in await sessions(gw, first)] == [True]
    # Ended for good: after a restart too.
    await gw.accounts.load()
    assert "revoked" in await refused(gw, others[0])


async def test_session_routes_need_a_session_token(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    key = bearer((await gw.new_key(session))["key"])
    for method, path in [
        ("GET", "/v1/auth/sessions"),
        ("DELETE", "/v1/auth/sessions"),
        ("DELETE", f"/v1/auth/sessions/{gw.claims(session).jti}"),
        ("POST", "/v1/auth/password"),
        ("POST", "/v1/auth/delete"),
    ]:
        response = await gw.client.request(method, path, headers=key, json={})
        assert_error(response, 403, "permission_error", "insufficient_scope")
        response = await gw.client.request(method, path, json={})
        assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert await works(gw, session)


# --- changing the password ---------------------------------------------------------------


async def change(gw: Gateway, token: str, current: str, new: str) -> httpx.Response:
    body = {"current_password": current, "new_password": new}
    return await gw.client.post("/v1/auth/password", json=body, headers=bearer(token))


async def test_a_new_password_ends_the_other_sessions(gw: Gateway) -> None:
    here = (await gw.register())["token"]
    there = await login(gw, "Elsewhere")
    response = await change(gw, here, PASSWORD, NEW_PASSWORD)
    assert response.json() == {"changed": True, "sessions_ended": 1}
    assert "revoked" in await refused(gw, there)
    assert await works(gw, here)
    old = await gw.client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert_error(old, 401, "authentication_error", "invalid_credentials")
    assert await works(gw, await login(gw, "Again", password=NEW_PASSWORD))


async def test_a_password_change_needs_the_current_one_and_a_strong_one(gw: Gateway) -> None:
    token = (await gw.register())["token"]
    wrong = await change(gw, token, "not my password", NEW_PASSWORD)
    assert assert_error(wrong, 403, "permission_error", "wrong_password")
    assert wrong.json()["error"]["param"] == "current_password"
    weak = await change(gw, token, PASSWORD, "short")
    assert assert_error(weak, 400, "invalid_request_error", "weak_password")
    for bad in ({}, {"current_password": PASSWORD}, {"new_password": 5, "current_password": "x"}):
        response = await gw.client.post("/v1/auth/password", json=bad, headers=bearer(token))
        assert_error(response, 400, "invalid_request_error", "invalid_request")
    text = await gw.client.post(
        "/v1/auth/password", content=b"x", headers=bearer(token) | {"Content-Type": "text/plain"}
    )
    assert_error(text, 415, "invalid_request_error", "unsupported_media_type")
    assert await works(gw, await login(gw, "Still", password=PASSWORD))


async def test_guessing_the_current_password_is_throttled(tmp_path: Path) -> None:
    async with gateway(tmp_path, throttle=SignInThrottle(per_address=100, per_user=3)) as gw:
        token = (await gw.register())["token"]
        codes = [(await change(gw, token, "guess", NEW_PASSWORD)).status_code for _ in range(4)]
        assert codes == [403, 403, 429, 429]


# --- deleting the account ----------------------------------------------------------------


async def test_deleting_the_account_refuses_its_tokens_and_keeps_usage_anonymous(
    gw: Gateway,
) -> None:
    session = (await gw.register())["token"]
    other = await login(gw, "Phone")
    key = (await gw.new_key(session))["key"]
    assert (
        await gw.client.post("/v1/chat/completions", json=chat(), headers=bearer(key))
    ).is_success
    before = gw.store.usage("2000-01-01")

    wrong = await gw.client.post(
        "/v1/auth/delete", json={"password": "nope nope"}, headers=bearer(session)
    )
    assert_error(wrong, 403, "permission_error", "wrong_password")
    response = await gw.client.post(
        "/v1/auth/delete", json={"password": PASSWORD}, headers=bearer(session)
    )
    assert response.json() == {"deleted": True}

    for token in (session, other, key):
        assert "revoked" in await refused(gw, token)
    assert gw.store.user("alice") is None and gw.store.keys() == []
    gone = await gw.client.post("/v1/auth/login", json={"username": "alice", "password": PASSWORD})
    assert_error(gone, 401, "authentication_error", "invalid_credentials")
    # The operator's totals are unchanged; the rows no longer name anyone.
    after = gw.store.usage("2000-01-01")
    assert [(u.requests, u.prompt_tokens) for u in after] == [
        (u.requests, u.prompt_tokens) for u in before
    ]
    assert after[0].user.startswith(DELETED_PREFIX)
    assert gw.store.usage_records("alice") == []
    # The name is free again; the new alice inherits nothing.
    fresh = (await gw.register("alice"))["token"]
    assert (await gw.client.get("/v1/usage", headers=bearer(fresh))).json()["data"] == []
    assert "revoked" in await refused(gw, key)


async def test_an_operator_token_dies_with_its_account(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    issued = operator_token(gw.store, gw.signer, "alice", 3600)  # `bitinglip tokens issue`
    assert await works(gw, issued)
    await gw.client.post("/v1/auth/delete", json={"password": PASSWORD}, headers=bearer(session))

    assert await refused(gw, issued) == "user 'alice' has no account on this gateway"
    response = await gw.client.post("/v1/chat/completions", json=chat(), headers=bearer(issued))
    assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert gw.store.usage_records("alice") == []  # nothing billed to the name again
    # Whoever takes the name next is a new account: the old token is not theirs.
    await trio.sleep(math.ceil(time.time()) - time.time() + 0.01)  # iat is whole seconds
    await gw.register("alice")
    assert await refused(gw, issued) == "token was issued before the account 'alice' was made"


async def test_a_gateway_sharing_the_database_forgets_a_deleted_user(tmp_path: Path) -> None:
    async with gateway(tmp_path) as a, gateway(tmp_path, signer=a.signer) as b:
        session = (await a.register())["token"]
        issued = operator_token(a.store, a.signer, "alice", 3600)
        assert await works(b, session) and await works(b, issued)
        await a.client.post("/v1/auth/delete", json={"password": PASSWORD}, headers=bearer(session))
        with trio.fail_after(2):  # B reloads when the file changes, every 50 ms here
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.accounts.run, 0.05)
                while await works(b, issued):
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert "revoked" in await refused(b, session)
        assert await refused(b, issued) == "user 'alice' has no account on this gateway"


async def test_a_deleted_account_stays_deleted_after_a_restart(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    await gw.client.post("/v1/auth/delete", json={"password": PASSWORD}, headers=bearer(session))
    await gw.accounts.load()
    assert "revoked" in await refused(gw, session)


def test_deleting_nobody_changes_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.add_user("alice", None, "default", 1.0)
        assert store.delete_user("ghost", "~deleted-x", 2.0) is None
        assert store.delete_user("ALICE", "~deleted-y", 2.0) == []
        assert store.users() == []
