"""``POST /v1/embeddings`` (OpenAI's shape): a vector for each input, from the best node
serving the model.

``input`` is a string, a list of strings, a token array or a list of token arrays (the
model's own input ids). ``encoding_format`` ``base64`` sends each vector as the base64 of
its little-endian float32 bytes, as OpenAI does (the ``openai`` package asks for it and
decodes it); ``float`` as a list of numbers. The call is metered by the tokens the node read
(recorded as prompt tokens), held back from the daily quota up to the most its inputs
can make.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounts import charges
from gateway.accounts.metering import rate_headers
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.errors import ApiError
from gateway.api.inference import NODE_HEADER, caller_wait, routed
from gateway.api.services import services
from protocols import EmbedParams
from protocols.embedding import floats

INPUT_SHAPES = "a string, a list of strings, a list of token ids or a list of lists of token ids"


class EmbeddingRequest(BaseModel):
    # OpenAI clients send fields we do not use: accept and ignore them.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    # Any JSON here: ``_inputs`` reads it and says exactly what is wrong with it.
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    # Who the caller's own user is, for the caller's records; not used here.
    user: str | None = Field(default=None, max_length=256)


def install(app: FastAPI) -> None:
    @app.post("/v1/embeddings", openapi_extra=json_body(app, EmbeddingRequest))
    async def create_embeddings(request: Request, claims: User) -> JSONResponse:
        body = await parse(request, EmbeddingRequest, any_type=True)  # behind a token
        texts, tokens = _inputs(body.input)
        try:
            params = EmbedParams(body.model, texts, tokens, body.dimensions)
        except ValueError as exc:
            param = "dimensions" if str(exc).startswith("dimensions") else "input"
            raise ApiError(400, str(exc), "invalid_request", param) from exc
        s = services(request)
        if s.embeddings is None:
            raise ApiError(503, "this gateway does not route embeddings", "no_peer_ready")
        budget = charges.embedding_bound(params)
        async with routed(request, claims, body.model, "embedding", tokens=budget) as outcome:
            wait = caller_wait(request, s, claims)
            made = await s.embeddings.embed(params, s.request_timeout, wait)
            outcome.peer_id = made.peer_id
            outcome.prompt_tokens = charges.embedding_charge(params, made.prompt_tokens)
        encode = _base64 if body.encoding_format == "base64" else floats
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(row)}
                for i, row in enumerate(made.rows)
            ],
            "model": body.model,
            "usage": {
                "prompt_tokens": outcome.prompt_tokens,
                "total_tokens": outcome.prompt_tokens,
            },
        }
        headers = {NODE_HEADER: made.peer_id} | rate_headers(s.meters, claims)
        return JSONResponse(answer, headers=headers)


def _inputs(value: Any) -> tuple[list[str], list[list[int]]]:
    """``input`` as texts or as token arrays; a 400 naming what is wrong with it."""
    if isinstance(value, str):
        return [value], []
    if not isinstance(value, list):
        raise ApiError(400, f"input must be {INPUT_SHAPES}", "invalid_request", "input")
    if not value:
        raise ApiError(400, "input must not be empty", "invalid_request", "input")
    if all(isinstance(v, str) for v in value):
        return list(value), []
    if all(_is_id(v) for v in value):
        return [], [list(value)]
    if all(isinstance(v, list) for v in value):
        for i, ids in enumerate(value):
            if not all(_is_id(t) for t in ids):
                raise ApiError(
                    400, f"input[{i}] must be a list of token ids", "invalid_request", "input"
                )
        return [], [list(ids) for ids in value]
    odd = next(
        (i for i, v in enumerate(value) if not isinstance(v, str | list) and not _is_id(v)), None
    )
    problem = (
        f"input[{odd}] is neither a string, a token id nor a token array"
        if odd is not None
        else "input mixes strings, token ids and token arrays"
    )
    raise ApiError(400, f"{problem}: input must be {INPUT_SHAPES}", "invalid_request", "input")


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _base64(row: bytes) -> str:
    return base64.b64encode(row).decode()
