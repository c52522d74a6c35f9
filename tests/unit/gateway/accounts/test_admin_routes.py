"""The admin routes over HTTP, in-process on real SQLite: users, keys and plans managed by
an admin signed in with a password, and refused to everyone else."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounts.limits import Plan, Plans, utc_day
from tests.unit.gateway.accounts.test_account_settings import login, refused, works
from tests.unit.gateway.accounts.test_accounts import PASSWORD, Gateway, bearer, gateway
from tests.unit.gateway.api.test_http import assert_error, chat

PLANS = Plans({"pro": Plan("pro", requests_per_minute=600), "tiny": Plan("tiny", 1)})
ROUTES = [
    ("GET", "/v1/admin/users"),
    ("POST", "/v1/admin/users"),
    ("PATCH", "/v1/admin/users/alice"),
    ("POST", "/v1/admin/users/alice/password"),
    ("GET", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/some-key"),
    ("GET", "/v1/admin/plans"),
]


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path, plans=PLANS) as g:
        yield g


async def admin(gw: Gateway, name: str = "root") -> dict[str, str]:
    """A session of a user the table marks admin, as the web app gets by logging in."""
    await gw.register(name)
    gw.store.set_admin(name, True)
    return bearer(await login(gw, "Operator's browser", name))


async def add(gw: Gateway, headers: dict[str, str], name: str, **extra: str) -> httpx.Response:
    body = {"username": name, "password": PASSWORD} | extra
    return await gw.client.post("/v1/admin/users", json=body, headers=headers)


async def test_nobody_but_an_admin_reaches_the_admin_routes(gw: Gateway) -> None:
    user = (await gw.register("alice"))["token"]
    key = (await gw.new_key(user))["key"]
    root = await admin(gw)
    root_key = bearer((await gw.new_key(root["Authorization"].split()[1]))["key"])
    for method, path in ROUTES:
        for token in (user, key):  # a user's session or key
            response = await gw.client.request(method, path, json={}, headers=bearer(token))
            assert_error(response, 403, "permission_error", "insufficient_scope")
        # An admin's API key is for inference only.
        response = await gw.client.request(method, path, json={}, headers=root_key)
        assert_error(response, 403, "permission_error", "insufficient_scope")
        response = await gw.client.request(method, path, json={})
        assert_error(response, 401, "authentication_error", "invalid_api_key")
    # An admin no longer once the table says so, or once disabled.
    assert (await gw.client.get("/v1/admin/users", headers=root)).status_code == 200
    gw.store.set_admin("root", False)
    assert (await gw.client.get("/v1/admin/users", headers=root)).status_code == 403
    assert await works(gw, user)


async def test_add_list_and_sign_in_as_a_new_user(gw: Gateway) -> None:
    root = await admin(gw)
    response = await add(gw, root, "carol", plan="pro")
    assert response.status_code == 201, response.text
    assert response.json() == {
        "username": "carol",
        "plan": "pro",
        "disabled": False,
        "admin": False,
        "created": pytest.approx(gw.store.user("carol").created, abs=1),  # type: ignore[union-attr]
    }
    listed = (await gw.client.get("/v1/admin/users", headers=root)).json()["data"]
    assert [(u["username"], u["plan"], u["admin"]) for u in listed] == [
        ("carol", "pro", False),
        ("root", "default", True),
    ]
    carol = await login(gw, "Carol's phone", "carol")
    me = (await gw.client.get("/v1/auth/me", headers=bearer(carol))).json()
    assert me["plan"]["name"] == "pro"

    taken = await add(gw, root, "CAROL")
    assert_error(taken, 409, "server_error", "username_taken")
    unknown = await add(gw, root, "dave", plan="gold")
    assert "known: default, pro, tiny" in assert_error(
        unknown, 400, "invalid_request_error", "unknown_plan"
    )
    weak = await add(gw, root, "dave", password="short")
    assert_error(weak, 400, "invalid_request_error", "weak_password")
    bad_name = await add(gw, root, "-dave")
    assert_error(bad_name, 400, "invalid_request_error", "invalid_username")
    assert gw.store.user("dave") is None


async def test_set_plan_counts_at_once(gw: Gateway) -> None:
    root = await admin(gw)
    key = bearer((await gw.new_key((await gw.register("alice"))["token"]))["key"])
    response = await gw.client.patch("/v1/admin/users/alice", json={"plan": "tiny"}, headers=root)
    assert response.json()["plan"] == "tiny"
    calls = [await gw.client.post("/v1/chat/completions", json=chat(), headers=key) for _ in "ab"]
    assert [c.status_code for c in calls] == [200, 429]
    unknown = await gw.client.patch("/v1/admin/users/alice", json={"plan": "x"}, headers=root)
    assert_error(unknown, 400, "invalid_request_error", "unknown_plan")
    nobody = await gw.client.patch("/v1/admin/users/ghost", json={"plan": "pro"}, headers=root)
    assert_error(nobody, 404, "not_found_error", "user_not_found")
    wrong = await gw.client.patch("/v1/admin/users/alice", json={"plan": 5}, headers=root)
    assert_error(wrong, 400, "invalid_request_error", "invalid_request")


async def test_disable_and_enable(gw: Gateway) -> None:
    root = await admin(gw)
    alice = (await gw.register("alice"))["token"]
    key = (await gw.new_key(alice))["key"]
    response = await gw.client.patch("/v1/admin/users/alice", json={"disabled": True}, headers=root)
    assert response.json()["disabled"] is True
    for token in (alice, key):
        assert "disabled" in await refused(gw, token)
    response = await gw.client.patch(
        "/v1/admin/users/alice", json={"disabled": False}, headers=root
    )
    assert response.json()["disabled"] is False
    assert await works(gw, alice)
    # No admin locks themselves out from the web.
    self_lock = await gw.client.patch("/v1/admin/users/ROOT", json={"disabled": True}, headers=root)
    assert_error(self_lock, 400, "invalid_request_error", "cannot_disable_self")


async def test_reset_password_ends_the_users_sessions(gw: Gateway) -> None:
    root = await admin(gw)
    alice = (await gw.register("alice"))["token"]
    key = (await gw.new_key(alice))["key"]
    response = await gw.client.post(
        "/v1/admin/users/alice/password", json={"password": "fresh start 123"}, headers=root
    )
    assert response.json() == {"username": "alice", "sessions_ended": 1}
    assert "revoked" in await refused(gw, alice)
    assert await works(gw, key)  # API keys are not sessions: revoke them on their own
    assert await works(gw, await login(gw, "Anew", password="fresh start 123"))
    ghost = await gw.client.post(
        "/v1/admin/users/ghost/password", json={"password": "fresh start 123"}, headers=root
    )
    assert_error(ghost, 404, "not_found_error", "user_not_found")


async def test_list_and_revoke_anyones_keys(gw: Gateway) -> None:
    root = await admin(gw)
    alice = await gw.new_key((await gw.register("alice"))["token"], "laptop")
    bob = await gw.new_key((await gw.register("bobby"))["token"], "server")
    listed = (await gw.client.get("/v1/admin/keys", headers=root)).json()["data"]
    assert [(k["user"], k["name"], k["revoked"]) for k in listed] == [
        ("alice", "laptop", False),
        ("bobby", "server", False),
    ]
    response = await gw.client.delete(f"/v1/admin/keys/{bob['id']}", headers=root)
    assert response.json() == {"id": bob["id"], "user": "bobby", "revoked": True}
    assert "revoked" in await refused(gw, bob["key"])
    assert await works(gw, alice["key"])
    listed = (await gw.client.get("/v1/admin/keys", headers=root)).json()["data"]
    assert [k["revoked"] for k in listed] == [False, True]
    missing = await gw.client.delete("/v1/admin/keys/nope", headers=root)
    assert_error(missing, 404, "not_found_error", "key_not_found")


async def test_plans_are_listed_with_their_limits(gw: Gateway) -> None:
    root = await admin(gw)
    body = (await gw.client.get("/v1/admin/plans", headers=root)).json()
    assert body["default"] == "default"
    assert [p["name"] for p in body["data"]] == ["default", "pro", "tiny"]
    assert body["data"][1] == Plan("pro", requests_per_minute=600).as_json()


async def test_usage_summed_by_user_model_or_day(gw: Gateway) -> None:
    root = await admin(gw)
    for name, called in (("alice", ["echo", "long"]), ("bobby", ["echo"])):
        key = bearer((await gw.new_key((await gw.register(name))["token"]))["key"])
        for model in called:
            response = await gw.client.post("/v1/chat/completions", json=chat(model), headers=key)
            assert response.status_code == 200

    async def by(field: str) -> dict[str, Any]:
        response = await gw.client.get(f"/v1/admin/usage?days=7&by={field}", headers=root)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    users = await by("user")
    assert [(r["user"], r["requests"]) for r in users["data"]] == [("alice", 2), ("bobby", 1)]
    assert users["totals"]["requests"] == 3
    per_call = users["data"][1]["prompt_tokens"]
    assert users["data"][0]["prompt_tokens"] == 2 * per_call > 0
    models = await by("model")
    assert sorted((r["model"], r["requests"]) for r in models["data"]) == [("echo", 2), ("long", 1)]
    today = utc_day(time.time())
    days = await by("date")
    assert [(r["date"], r["requests"]) for r in days["data"]] == [(today, 3)]
    assert days["totals"] == users["totals"] == models["totals"]
    # Per model per day (the operator's chart), and any of them for one user.
    per_day = await by("date,model")
    assert sorted((r["date"], r["model"], r["requests"]) for r in per_day["data"]) == [
        (today, "echo", 2),
        (today, "long", 1),
    ]
    assert per_day["totals"] == users["totals"]
    bobby = await by("model&user=bobby")
    assert [(r["model"], r["requests"]) for r in bobby["data"]] == [("echo", 1)]
    assert bobby["totals"]["requests"] == 1
    alice = await by("date,model&user=alice")
    assert sorted((r["model"], r["requests"]) for r in alice["data"]) == [("echo", 1), ("long", 1)]

    for query in ("by=peer", "by=model,date", "by=date,user", "by=user&days=0"):
        response = await gw.client.get(f"/v1/admin/usage?{query}", headers=root)
        assert response.status_code == 400, (query, response.text)
    user = await gw.client.get("/v1/admin/usage?by=user", headers=bearer(await login(gw, "x")))
    assert_error(user, 403, "permission_error", "insufficient_scope")
