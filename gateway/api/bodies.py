"""JSON request bodies parsed by hand, documented in OpenAPI.

A body is read only when it says it is JSON (``application/json`` or ``*/*+json``): a
browser sends a form or ``text/plain`` to any site without asking, but a JSON content type
only after a CORS preflight, which this API never grants. So no page can post to a route
that needs no token (register, login) from a user's browser. Routes behind a bearer token
may take any type (``curl -d`` sends a form type): a cross-site post cannot carry the token.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError

from gateway.api.errors import ApiError

M = TypeVar("M", bound=BaseModel)


def json_body(app: FastAPI, model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` itself; its parts go to components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    parts = schema.pop("$defs", {})
    original = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = original()  # cached by FastAPI after the first call
        if fresh:
            document.setdefault("components", {}).setdefault("schemas", {}).update(parts)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


async def parse(request: Request, model: type[M], *, any_type: bool = False) -> M:
    """Parse a JSON body; with ``any_type`` whatever its content type, else 415 unless the
    request says JSON (see the module docstring)."""
    if not any_type and not is_json(request.headers.get("content-type", "")):
        raise ApiError(
            415,
            "send the body as JSON, with 'Content-Type: application/json'",
            "unsupported_media_type",
        )
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc
    except RecursionError as exc:  # the decoder recurses once per level of nesting
        raise ApiError(400, "request body is nested too deeply", "invalid_json") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_request")
    return validated(model, data)


def validated(model: type[M], data: dict[str, Any], within: tuple[str, ...] = ()) -> M:
    """``data`` as ``model``, else a 400 naming the first bad field (under the fields
    ``within``, for a body inside a body)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join([*within, *(str(p) for p in first.get("loc", ()))])
        raise ApiError(
            400, f"{where}: {first.get('msg')}", "invalid_request", where or None
        ) from exc
