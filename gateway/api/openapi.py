"""Corrections to the generated OpenAPI description, so that it says what the API does.

FastAPI documents a 422 wherever it validates parameters; this API never sends one: any
failure is a 4xx or 5xx in OpenAI's error shape (``gateway.api.errors``), which every
operation now declares as its ``default`` response. Authentication is a dependency
rather than a FastAPI security scheme, so the description did not say which operations
need a bearer token; they now name the ``bearer`` scheme.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.api import auth

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
                # The X-Request-Id of the call: quote it when reporting the failure.
                "request_id": {"type": ["string", "null"]},
            },
        }
    },
}
ERROR_RESPONSE = {
    "description": "An error, in OpenAI's shape",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
BEARER = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


def install(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        document = original()  # cached by FastAPI after the first call
        if fresh:
            _correct(app, document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _correct(app: FastAPI, document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):  # the 422 body, never sent
        schemas.pop(unused, None)
    components.setdefault("securitySchemes", {})["bearer"] = BEARER
    authenticated = {
        (route.path_format, method.lower())
        for route in app.routes
        if isinstance(route, APIRoute) and _needs_token(route.dependant)
        for method in route.methods or ()
    }
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = ERROR_RESPONSE
            if (path, method) in authenticated:
                operation["security"] = [{"bearer": []}]


def _needs_token(dependant: Dependant) -> bool:
    return any(
        getattr(d.call, "__module__", None) == auth.__name__ or _needs_token(d)
        for d in dependant.dependencies
    )
