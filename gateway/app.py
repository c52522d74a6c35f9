"""The gateway's HTTP API: an ASGI app, OpenAI-compatible, authenticated with JWTs."""

# No "from __future__ import annotations": FastAPI must evaluate the dependency
# annotations of endpoints defined inside create_app, which name local functions.

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Annotated, Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import keys
from gateway import openai_api as oa
from gateway.router import Generation, NoPeerReady, UnknownModel, UpstreamError
from protocols import ChatMessage, ErrorCode, GenerateParams

logger = logging.getLogger(__name__)

NODE_HEADER = "X-BitingLip-Node"
M = TypeVar("M", bound=BaseModel)


class Backend(Protocol):
    """What the HTTP layer needs from the swarm side (a ``Router`` in production)."""

    def generate(
        self, params: GenerateParams, timeout: float
    ) -> AbstractAsyncContextManager[Generation]: ...

    def serving(self) -> dict[str, list[dict[str, Any]]]:
        """Model id → the peers that list it, with their state."""
        ...


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = oa.error_body(status, message, code, param)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _send_json(send, 413, oa.error_body(413, f"request body over {self.limit} bytes"))
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _routing_error(exc: Exception) -> ApiError:
    if isinstance(exc, UnknownModel):
        return ApiError(404, str(exc), "model_not_found", "model")
    if isinstance(exc, NoPeerReady):
        return ApiError(503, str(exc), "no_peer_ready")
    if isinstance(exc, UpstreamError):
        status = {ErrorCode.BAD_REQUEST: 400, ErrorCode.DEADLINE_EXCEEDED: 504}.get(exc.code, 502)
        return ApiError(status, str(exc), exc.code.value.lower())
    raise exc


def create_app(
    backend: Backend,
    jwt_public: Ed25519PublicKey,
    *,
    peer_id: str = "",
    max_body_bytes: int = 1 << 20,
    request_timeout: float = 300.0,
    health: Callable[[], dict[str, Any]] = dict,
) -> ASGIApp:
    app = FastAPI(title="BitingLip Swarm gateway", version="1", docs_url="/docs")

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        else:
            message = f"{where or 'body'}: {first.get('msg', 'invalid value')}"
        return JSONResponse(oa.error_body(400, message, "invalid_request", where or None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(oa.error_body(exc.status_code, str(exc.detail)), exc.status_code)

    def user(request: Request) -> keys.Claims:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401, "missing bearer token: send 'Authorization: Bearer <token>'", "invalid_api_key"
            )
        try:
            return keys.verify(token.strip(), jwt_public)
        except keys.TokenError as exc:
            raise ApiError(401, str(exc), "invalid_api_key") from exc

    @app.get("/health")
    async def get_health() -> dict[str, Any]:
        return {"status": "ok", "peer_id": peer_id, "models": sorted(backend.serving())} | health()

    @app.get("/v1/models")
    async def list_models(claims: Annotated[keys.Claims, Depends(user)]) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "bitinglip",
                    "peers": peers,
                }
                for model, peers in sorted(backend.serving().items())
            ],
        }

    @app.post(
        "/v1/chat/completions",
        response_model=None,
        openapi_extra=_json_body(app, oa.ChatCompletionRequest),
    )
    async def chat_completions(
        request: Request, claims: Annotated[keys.Claims, Depends(user)]
    ) -> JSONResponse | StreamingResponse:
        body = await _parse(request, oa.ChatCompletionRequest)
        params = _params(body)
        stack = AsyncExitStack()
        try:
            generation = await stack.enter_async_context(backend.generate(params, request_timeout))
        except (UnknownModel, NoPeerReady, UpstreamError) as exc:
            await stack.aclose()
            raise _routing_error(exc) from exc
        headers = {NODE_HEADER: generation.peer_id}
        id_, created = oa.completion_id(), int(time.time())
        if not body.stream:
            try:
                async with stack:
                    text = await generation.text()
            except UpstreamError as exc:
                raise _routing_error(exc) from exc
            return JSONResponse(
                oa.chat_completion(id_, body.model, text, generation.usage, created),
                headers=headers,
            )
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _stream(generation, stack, id_, body.model, created, include_usage)
        return StreamingResponse(
            events, media_type="text/event-stream", headers=headers | {"Cache-Control": "no-cache"}
        )

    return BodyLimit(app, max_body_bytes)


def _json_body(app: FastAPI, model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a body parsed by hand: the model's schema, its parts in components."""
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


async def _parse(request: Request, model: type[M]) -> M:
    """Parse a JSON body whatever its content type (curl -d sends a form type)."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc
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


def _params(body: oa.ChatCompletionRequest) -> GenerateParams:
    # "developer" is OpenAI's newer name for the system role.
    messages = [
        ChatMessage("system" if m.role == "developer" else m.role, m.text()) for m in body.messages
    ]
    try:
        return GenerateParams(
            model=body.model,
            messages=messages,
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            temperature=body.temperature,
            top_p=body.top_p,
            stop=body.stops(),
            seed=body.seed,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_request") from exc


async def _stream(
    generation: Generation,
    stack: AsyncExitStack,
    id_: str,
    model: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    async with stack:  # leaving early (client gone) cancels the generation on the node
        yield oa.sse(oa.chunk(id_, model, created, {"role": "assistant", "content": ""}))
        try:
            async for piece in generation.deltas():
                if piece:
                    yield oa.sse(oa.chunk(id_, model, created, {"content": piece}))
        except UpstreamError as exc:
            yield oa.sse(oa.error_body(502, str(exc), exc.code.value.lower()))
            yield oa.sse("[DONE]")
            return
        reason = str(generation.usage.get("finish_reason", "stop"))
        yield oa.sse(oa.chunk(id_, model, created, {}, reason))
        if include_usage:
            yield oa.sse(oa.chunk(id_, model, created, {}, usage_=oa.usage(generation.usage)))
        yield oa.sse("[DONE]")
