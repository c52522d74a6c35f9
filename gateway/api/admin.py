"""``/v1/admin/users``, ``/v1/admin/keys`` and ``/v1/admin/plans``: an admin manages the
gateway's accounts (the web app's operator views, or any client with an admin's token).

The rules are in ``gateway.accounts.management``; this module only speaks HTTP.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from gateway.accounts import management
from gateway.accounts.database import UserRecord
from gateway.api.accounts import accounts, key_json
from gateway.api.auth import Admin
from gateway.api.bodies import json_body, parse
from keys.passwords import MAX_LENGTH


class NewUser(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=MAX_LENGTH)
    plan: str | None = Field(default=None, max_length=64)


class UserChange(BaseModel):
    disabled: bool | None = None
    plan: str | None = Field(default=None, max_length=64)


class PasswordReset(BaseModel):
    password: str = Field(max_length=MAX_LENGTH)


def _user(user: UserRecord) -> dict[str, Any]:
    return {
        "username": user.name,
        "plan": user.plan,
        "disabled": user.disabled,
        "admin": user.admin,
        "created": int(user.created),
    }


def install(app: FastAPI) -> None:
    @app.get("/v1/admin/users")
    async def list_users(request: Request, claims: Admin) -> dict[str, Any]:
        return {"data": [_user(u) for u in await management.users(accounts(request))]}

    @app.post("/v1/admin/users", status_code=201, openapi_extra=json_body(app, NewUser))
    async def add_user(request: Request, claims: Admin) -> dict[str, Any]:
        body = await parse(request, NewUser)
        user = await management.create(accounts(request), body.username, body.password, body.plan)
        return _user(user)

    @app.patch("/v1/admin/users/{username}", openapi_extra=json_body(app, UserChange))
    async def change_user(request: Request, username: str, claims: Admin) -> dict[str, Any]:
        body = await parse(request, UserChange)
        user = await management.update(
            accounts(request), username, claims.sub, disabled=body.disabled, plan=body.plan
        )
        return _user(user)

    @app.post("/v1/admin/users/{username}/password", openapi_extra=json_body(app, PasswordReset))
    async def reset_password(request: Request, username: str, claims: Admin) -> dict[str, Any]:
        body = await parse(request, PasswordReset)
        ended = await management.reset_password(accounts(request), username, body.password)
        return {"username": username, "sessions_ended": len(ended)}

    @app.get("/v1/admin/keys")
    async def list_keys(request: Request, claims: Admin) -> dict[str, Any]:
        found = await management.keys(accounts(request))
        return {"data": [key_json(k) | {"user": k.user} for k in found]}

    @app.delete("/v1/admin/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str, claims: Admin) -> dict[str, Any]:
        key = await management.revoke_key(accounts(request), key_id)
        return {"id": key.jti, "user": key.user, "revoked": True}

    @app.get("/v1/admin/plans")
    async def list_plans(request: Request, claims: Admin) -> dict[str, Any]:
        plans = accounts(request).plans
        return {
            "default": plans.default,
            "data": [plans.get(name).as_json() for name in plans.names()],
        }
