"""JSON request bodies parsed by hand (any content type), documented in OpenAPI."""

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


async def parse(request: Request, model: type[M]) -> M:
    """Parse a JSON body whatever its content type (curl -d sends a form type)."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc
    except RecursionError as exc:  # the decoder recurses once per level of nesting
        raise ApiError(400, "request body is nested too deeply", "invalid_json") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_request")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ApiError(
            400, f"{where}: {first.get('msg')}", "invalid_request", where or None
        ) from exc
