"""``/v1/auth/*``, ``/v1/keys`` and ``/v1/admin/invites``: register, log in and out,
manage API keys, invite people.

The rules are in ``gateway.accounts.users``; this module only speaks HTTP.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from gateway.accounts.database import KeyRecord, UserRecord
from gateway.accounts.invites import DEFAULT_INVITE_TTL, MAX_INVITE_TTL
from gateway.accounts.users import Accounts
from gateway.api.auth import Admin, Session, User
from gateway.api.bodies import json_body, parse
from gateway.api.errors import ApiError
from gateway.api.services import services
from keys.passwords import MAX_LENGTH


class Credentials(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=MAX_LENGTH)


class Registration(Credentials):
    invite: str | None = Field(default=None, max_length=128)


class NewKey(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    # Up to the gateway's max_token_ttl (365 days unless configured): checked by the accounts.
    ttl_days: int | None = Field(default=None, ge=1, le=3650)


class NewInvite(BaseModel):
    ttl_days: int = Field(
        default=int(DEFAULT_INVITE_TTL // 86400), ge=1, le=int(MAX_INVITE_TTL // 86400)
    )


def accounts(request: Request) -> Accounts:
    found = services(request).accounts
    if found is None:
        raise ApiError(503, "accounts are not enabled on this gateway", "accounts_disabled")
    return found


def address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _logged_in(request: Request, found: Accounts, user: UserRecord) -> dict[str, Any]:
    agent = request.headers.get("user-agent", "")
    token, claims = await found.session(user.name, agent, address(request))
    return {"user": found.profile(user.name), "token": token, "expires_at": int(claims.exp)}


def key_json(key: KeyRecord) -> dict[str, Any]:
    return {
        "id": key.jti,
        "name": key.name,
        "created": int(key.created),
        "expires_at": int(key.expires_at),
        "revoked": key.revoked_at is not None,
    }


def install(app: FastAPI) -> None:
    @app.post("/v1/auth/register", status_code=201, openapi_extra=json_body(app, Registration))
    async def register(request: Request) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, Registration)
        user = await found.register(body.username, body.password, body.invite, address(request))
        return await _logged_in(request, found, user)

    @app.post("/v1/auth/login", openapi_extra=json_body(app, Credentials))
    async def login(request: Request) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, Credentials)
        user = await found.login(body.username, body.password, address(request))
        return await _logged_in(request, found, user)

    @app.post("/v1/auth/logout")
    async def logout(request: Request, claims: Session) -> dict[str, Any]:
        """Revoke the session token that calls: refused from now on, after a restart too."""
        await accounts(request).revoke(claims.jti, claims.exp)
        return {"revoked": True}

    @app.get("/v1/auth/me")
    async def me(request: Request, claims: User) -> dict[str, Any]:
        return accounts(request).profile(claims.sub)

    @app.get("/v1/keys")
    async def list_keys(request: Request, claims: Session) -> dict[str, Any]:
        return {"data": [key_json(k) for k in await accounts(request).api_keys.of(claims.sub)]}

    @app.post("/v1/keys", status_code=201, openapi_extra=json_body(app, NewKey))
    async def create_key(request: Request, claims: Session) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, NewKey)
        key, token = await found.api_keys.create(claims.sub, body.name, body.ttl_days)
        return {"id": key.jti, "name": key.name, "key": token, "expires_at": int(key.expires_at)}

    @app.delete("/v1/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str, claims: Session) -> dict[str, Any]:
        key = await accounts(request).api_keys.revoke(claims.sub, key_id)
        return {"id": key.jti, "revoked": True}

    @app.post("/v1/admin/invites", status_code=201, openapi_extra=json_body(app, NewInvite))
    async def invite(request: Request, claims: Admin) -> dict[str, Any]:
        found = accounts(request)
        body = await parse(request, NewInvite)
        code, expires_at = await found.invite(body.ttl_days * 86400.0)
        return {"invite": code, "expires_at": int(expires_at)}
