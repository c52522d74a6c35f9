"""``/v1/auth/password``, ``/v1/auth/delete`` and ``/v1/auth/sessions``: a signed-in user's
own account settings.

The rules are in ``gateway.accounts.settings`` and ``gateway.accounts.sessions``; this
module only speaks HTTP.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from gateway.accounts import settings
from gateway.accounts.database import SessionRecord
from gateway.api.accounts import accounts, address
from gateway.api.auth import Session
from gateway.api.bodies import json_body, parse
from keys.passwords import MAX_LENGTH


class NewPassword(BaseModel):
    current_password: str = Field(max_length=MAX_LENGTH)
    new_password: str = Field(max_length=MAX_LENGTH)


class Confirmation(BaseModel):
    password: str = Field(max_length=MAX_LENGTH)


def _session(session: SessionRecord, current: str) -> dict[str, Any]:
    return {
        "id": session.jti,
        "agent": session.agent,
        "address": session.address,
        "created": int(session.created),
        "last_used": int(session.last_used),
        "expires_at": int(session.expires_at),
        "current": session.jti == current,
    }


def install(app: FastAPI) -> None:
    @app.post("/v1/auth/password", openapi_extra=json_body(app, NewPassword))
    async def change_password(request: Request, claims: Session) -> dict[str, Any]:
        """Needs the current password; ends every other session of the user."""
        body = await parse(request, NewPassword)
        ended = await settings.change_password(
            accounts(request),
            claims.sub,
            body.current_password,
            body.new_password,
            claims.jti,
            address(request),
        )
        return {"changed": True, "sessions_ended": len(ended)}

    @app.post("/v1/auth/delete", openapi_extra=json_body(app, Confirmation))
    async def delete_account(request: Request, claims: Session) -> dict[str, Any]:
        """Delete the caller's account, confirmed with its password."""
        body = await parse(request, Confirmation)
        await settings.delete_account(
            accounts(request), claims.sub, body.password, address(request)
        )
        return {"deleted": True}

    @app.get("/v1/auth/sessions")
    async def list_sessions(request: Request, claims: Session) -> dict[str, Any]:
        found = await accounts(request).sessions.of(claims.sub)
        return {"data": [_session(s, claims.jti) for s in found]}

    @app.delete("/v1/auth/sessions/{session_id}")
    async def end_session(request: Request, session_id: str, claims: Session) -> dict[str, Any]:
        ended = await accounts(request).sessions.end(claims.sub, session_id)
        return {"id": ended.jti, "ended": True}

    @app.delete("/v1/auth/sessions")
    async def end_other_sessions(request: Request, claims: Session) -> dict[str, Any]:
        """End every session of the caller but the one that asks."""
        ended = await accounts(request).sessions.end_all(claims.sub, claims.jti)
        return {"ended": ended}
