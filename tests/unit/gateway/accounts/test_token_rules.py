"""What a token must be, beyond a good signature: bound to this gateway's accounts, issued
to a user of its table, no longer-lived than allowed, not logged out (through the expiry
leeway too), not signed by a key retired for good; and an admin scope counts only for a
user this gateway's table marks admin. In-process, on real SQLite files.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

import keys
from gateway.accounts.database import Store
from gateway.accounts.errors import Refused
from gateway.accounts.limits import Plans
from gateway.accounts.tokens import audience_of, operator_token
from gateway.accounts.users import Accounts, create_user
from gateway.api.auth import Authenticator
from gateway.config import GatewayConfig
from gateway.runtime import watch_token_keys
from node.cli.main import main
from node.cli.up import local_token
from tests.unit.gateway.accounts.test_accounts import (
    PASSWORD,
    TEST_COST,
    Gateway,
    bearer,
    gateway,
)
from tests.unit.gateway.api.test_http import assert_error

WRONG_AUDIENCE = (
    "token belongs to another gateway's accounts (wrong audience):"
    " sign in to this gateway for a token it accepts"
)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway(tmp_path) as g:
        yield g


# --- one identity per user: tokens are bound to the accounts that issued them -------------


async def test_a_token_from_another_gateways_accounts_is_refused(tmp_path: Path) -> None:
    async with gateway(tmp_path / "a") as a, gateway(tmp_path / "b") as b:
        b.signer = a.signer  # every gateway holds the swarm's one token key
        b.accounts.use_signer(a.signer)
        b_session = (await b.register("alice"))["token"]
        a_session = (await a.register("alice"))["token"]
        assert a.accounts.audience != b.accounts.audience
        # B's alice is not A's alice, though the signature is good.
        for headers in (bearer(b_session), b.operator_token("alice")):
            response = await a.client.get("/v1/keys", headers=headers)
            assert assert_error(response, 401, "authentication_error", "invalid_api_key") == (
                WRONG_AUDIENCE
            )
        assert (await a.client.get("/v1/keys", headers=bearer(a_session))).status_code == 200


def test_gateways_sharing_a_database_share_its_audience(tmp_path: Path) -> None:
    with Store.open(tmp_path) as one, Store.open(tmp_path) as two:
        assert audience_of(one) == audience_of(two)
        assert audience_of(one).startswith("bitinglip:accounts:")


def test_operator_tokens_name_a_user_of_the_table(tmp_path: Path) -> None:
    signer = keys.jwt_keys(_operator(tmp_path)).private
    assert signer is not None
    with Store.open(tmp_path) as store:
        with pytest.raises(Refused) as caught:
            operator_token(store, signer, "ghost", 60)
        assert caught.value.code == "no_account"
        assert "bitinglip users add ghost" in caught.value.message
        create_user(store, "alice", None, "default", 1.0)
        token = operator_token(store, signer, "ALICE", 60)
        claims = keys.verify(token, signer.public_key(), audience=audience_of(store))
        assert claims.sub == "alice"  # as the table spells it
        with pytest.raises(Refused, match="not an admin here"):
            operator_token(store, signer, "alice", 60, "admin")
        with pytest.raises(Refused, match="at most 1d here, not 2d"):
            operator_token(store, signer, "alice", 2 * 86400, max_ttl=86400)
        store.set_disabled("alice", True)
        with pytest.raises(Refused, match="disabled"):
            operator_token(store, signer, "alice", 60)


def test_the_cli_refuses_a_token_for_nobody_or_too_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(_operator(tmp_path))]
    assert main(["tokens", "issue", "--user", "ghost", *data]) == 2
    assert "no user 'ghost'" in capsys.readouterr().err
    assert main(["users", "add", "bot", *data]) == 0
    assert main(["tokens", "issue", "--user", "bot", "--ttl", "400d", *data]) == 1
    assert "at most 365d here, not 400d" in capsys.readouterr().err
    assert main(["tokens", "issue", "--user", "bot", "--ttl", "30d", *data]) == 0


async def test_nobody_can_register_the_name_up_gave_a_token_to(tmp_path: Path) -> None:
    token = local_token(_operator(tmp_path), tmp_path)
    with Store.open(tmp_path) as store:
        accounts = Accounts(store, Plans(), None, registration="open", cost=TEST_COST)
        accounts.use_signer(keys.jwt_keys(tmp_path).private)
        with pytest.raises(Refused) as caught:
            await accounts.register("local", PASSWORD)
        assert caught.value.code == "username_taken"
        claims = keys.verify(token, keys.jwt_keyset(tmp_path), audience=accounts.audience)
        assert (claims.sub, claims.scope) == ("local", "inference")
    assert local_token(tmp_path, tmp_path)  # again, with the user already there


def _operator(data_dir: Path) -> Path:
    keys.init_operator(data_dir)
    return data_dir


# --- logging out ----------------------------------------------------------------------------


async def test_logout_revokes_the_session_for_good(gw: Gateway, tmp_path: Path) -> None:
    session = bearer((await gw.register())["token"])
    key = bearer((await gw.new_key(session["Authorization"].split()[1]))["key"])
    response = await gw.client.post("/v1/auth/logout", headers=session)
    assert response.status_code == 200 and response.json() == {"revoked": True}
    response = await gw.client.get("/v1/keys", headers=session)
    assert "revoked" in assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert (await gw.client.get("/v1/models", headers=key)).status_code == 200  # keys live on
    # A restarted gateway still refuses it.
    restarted = Accounts(gw.store, Plans(), gw.signer, cost=TEST_COST)
    await restarted.load()
    with pytest.raises(keys.TokenError, match="revoked"):
        await restarted.check(gw.claims(session["Authorization"].split()[1]))


async def test_only_a_session_logs_out(gw: Gateway) -> None:
    session = (await gw.register())["token"]
    key = bearer((await gw.new_key(session))["key"])
    response = await gw.client.post("/v1/auth/logout", headers=key)
    assert_error(response, 403, "permission_error", "insufficient_scope")
    assert (await gw.client.post("/v1/auth/logout")).status_code == 401


async def test_a_revoked_token_stays_refused_through_the_leeway(gw: Gateway) -> None:
    auth = Authenticator(
        keys.KeySet.of(gw.signer.public_key()), [gw.accounts], audience=gw.accounts.audience
    )
    await gw.register("alice")
    # Expired two seconds ago: the verifier's leeway still lets its signature pass.
    token = keys.issue(gw.signer, "alice", -2, audience=gw.accounts.audience)
    claims = await auth.verify(token)
    await gw.accounts.revoke(claims.jti, claims.exp)
    await gw.accounts.refresh()  # forgets revocations of tokens that can no longer verify
    with pytest.raises(keys.TokenError, match="revoked"):
        await auth.verify(token)
    restarted = Accounts(gw.store, Plans(), gw.signer, cost=TEST_COST)
    await restarted.load()
    with pytest.raises(keys.TokenError, match="revoked"):
        await restarted.check(claims)


# --- lifetimes ------------------------------------------------------------------------------


async def test_a_key_longer_than_the_cap_is_refused_at_issue(tmp_path: Path) -> None:
    async with gateway(tmp_path, max_token_ttl=30 * 86400) as g:
        session = bearer((await g.register())["token"])
        response = await g.client.post(
            "/v1/keys", json={"name": "k", "ttl_days": 31}, headers=session
        )
        message = assert_error(response, 400, "invalid_request_error", "ttl_too_long")
        assert message == "a key may live at most 30 days here"
        made = await g.client.post("/v1/keys", json={"name": "k"}, headers=session)
        assert made.json()["expires_at"] == pytest.approx(time.time() + 30 * 86400, abs=5)


async def test_a_token_living_past_the_cap_is_refused_at_use(gw: Gateway) -> None:
    # Signed with the swarm's key by someone who skipped the cap.
    forever = keys.issue(gw.signer, "alice", 10 * 365 * 86400, audience=gw.accounts.audience)
    response = await gw.client.get("/v1/models", headers=bearer(forever))
    message = assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert message == "token lives longer than this gateway allows (365d)"


def test_the_cap_is_a_setting_sessions_fit_in() -> None:
    assert GatewayConfig().max_token_ttl == 365 * 86400
    with pytest.raises(ValueError, match="session_ttl"):
        GatewayConfig(session_ttl=7200, max_token_ttl=3600)


# --- admin rights come from the table -------------------------------------------------------


async def test_an_admin_scope_needs_an_admin_in_the_table(gw: Gateway) -> None:
    gw.store.add_user("mallory", None, "default", 1.0)
    forged = bearer(keys.issue(gw.signer, "mallory", 60, "admin", audience=gw.accounts.audience))
    response = await gw.client.get("/v1/admin/usage", headers=forged)
    message = assert_error(response, 403, "permission_error", "insufficient_scope")
    assert message == "'mallory' is not an admin of this gateway"
    gw.store.set_admin("mallory", True)  # the operator says so: at once
    assert (await gw.client.get("/v1/admin/usage", headers=forged)).status_code == 200
    gw.store.set_disabled("mallory", True)
    assert (await gw.client.get("/v1/admin/usage", headers=forged)).status_code == 403
    assert not await gw.accounts.is_admin("mallory")
    assert not await gw.accounts.is_admin("nobody")


def test_the_cli_marks_admins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["users", "add", "root", "--admin", *data]) == 0
    assert ", an admin" in capsys.readouterr().out
    assert main(["users", "admin", "root", "--off", *data]) == 0
    assert capsys.readouterr().out.strip() == "user root is no longer an admin"
    assert main(["users", "admin", "ghost", *data]) == 2
    with Store.open(tmp_path) as store:
        root = store.user("root")
        assert root is not None and not root.admin


# --- retiring a token key for good, on a running gateway ------------------------------------


async def test_a_running_gateway_refuses_a_retired_key_within_a_second(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    keys.init_operator(tmp_path)
    old = keys.jwt_keys(tmp_path).private
    assert old is not None
    keys.rotate_jwt(tmp_path)
    with Store.open(tmp_path) as store:
        create_user(store, "alice", None, "default", 1.0)
        accounts = Accounts(store, Plans(), keys.jwt_keys(tmp_path).private)
        auth = Authenticator(keys.jwt_keyset(tmp_path), [accounts], audience=accounts.audience)
        before = keys.issue(old, "alice", 600, audience=accounts.audience)
        assert (await auth.verify(before)).sub == "alice"
        config = GatewayConfig(data_dir=tmp_path)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_token_keys, config, auth, accounts)
            await trio.sleep(0.5)
            assert (
                main(["keys", "retire-jwt", keys.fingerprint(old), "--data-dir", str(tmp_path)])
                == 0
            )
            await trio.sleep(1.5)
            with pytest.raises(keys.TokenError, match="unknown key"):
                await auth.verify(before)
            nursery.cancel_scope.cancel()
