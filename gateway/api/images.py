"""``POST /v1/images/generations`` (OpenAI's shape) and ``GET /v1/images/{name}.png``.

Images come back inline (``b64_json``) or as URLs on this gateway (``url``). A URL's
name is 128 random bits, the only thing guarding the image, so fetching one needs no
token; like OpenAI's, a URL works for an hour (``image_ttl``), after which the file is
deleted (``gateway.api.image_store``).

With ``stream: true`` the answer is server-sent events in the shape of OpenAI's image
streams: an ``image_generation.progress`` event after each denoising step (ours: OpenAI
sends partial images instead), then one ``image_generation.completed`` per image, inline;
a node that fails half-way ends the stream with an ``error`` event. Leaving early cancels
the call on its node.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from typing import Any, Literal

import trio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

import keys
from gateway.accounts.metering import Outcome, rate_headers
from gateway.api import openai_api as oa
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.errors import ApiError, upstream_message
from gateway.api.inference import NODE_HEADER, EventStream, opened, routed
from gateway.api.services import ImageBackend, services
from gateway.routing.router import Drawing, UpstreamError
from protocols import ImageParams, ImageStep
from protocols.generation import (
    MAX_GUIDANCE,
    MAX_IMAGE_PROMPT_CHARS,
    MAX_IMAGE_STEPS,
    MAX_IMAGES,
    MAX_SEED,
    side_problem,
)

_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")


class ImageGenerationRequest(BaseModel):
    # OpenAI clients send fields we do not use (quality, style, user, ...): ignore them.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    prompt: str = Field(min_length=1, max_length=MAX_IMAGE_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str = Field(default="512x512", description='"WxH" in pixels, e.g. "512x512"')
    response_format: Literal["url", "b64_json"] = "url"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    # Beyond OpenAI's API: the diffusion knobs.
    steps: int = Field(default=30, ge=1, le=MAX_IMAGE_STEPS)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=MAX_GUIDANCE)
    negative_prompt: str = Field(default="", max_length=MAX_IMAGE_PROMPT_CHARS)
    # Server-sent events: each step as it is done, then the images (always inline).
    stream: bool = False

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: str) -> str:
        match = _SIZE.fullmatch(size)
        if match is None:
            raise ValueError('must be "WxH", e.g. "512x512"')
        for side in match.groups():
            if (why := side_problem(int(side))) is not None:
                raise ValueError(f"width and height {why}")
        return size

    def params(self) -> ImageParams:
        width, height = (int(side) for side in self.size.split("x"))
        return ImageParams(
            model=self.model,
            prompt=self.prompt,
            n=self.n,
            width=width,
            height=height,
            steps=self.steps,
            guidance=self.guidance_scale,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            progress=self.stream,
        )


def install(app: FastAPI) -> None:
    @app.post(
        "/v1/images/generations",
        response_model=None,
        openapi_extra=json_body(app, ImageGenerationRequest),
    )
    async def generate_images(request: Request, claims: User) -> Response:
        s = services(request)
        body = await parse(request, ImageGenerationRequest, any_type=True)  # behind a token
        if body.response_format == "url" and s.image_store is None and not body.stream:
            raise ApiError(
                400,
                "this gateway keeps no images: ask for response_format b64_json",
                "invalid_request",
                "response_format",
            )
        try:
            params = body.params()
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request") from exc
        backend = s.image_backend
        if backend is None:
            raise ApiError(503, "this gateway does not route image generation", "no_peer_ready")
        if body.stream:
            return await _streamed(request, claims, backend, params)
        async with routed(request, claims, body.model, "image", images=params.n) as outcome:
            result = await backend.generate_image(params, s.request_timeout)
            outcome.peer_id = result.peer_id
            if s.image_store is not None and body.response_format == "url":
                names = await trio.to_thread.run_sync(
                    s.image_store.save, result.images, time.time()
                )
                base = str(request.base_url).rstrip("/")
                data = [{"url": f"{base}/v1/images/{name}.png"} for name in names]
            else:
                data = [{"b64_json": base64.b64encode(i).decode()} for i in result.images]
            outcome.images = len(data)
        answer: dict[str, Any] = {"created": int(time.time()), "data": data, "seed": result.seed}
        headers = {NODE_HEADER: result.peer_id} | rate_headers(s.meters, claims)
        return JSONResponse(answer, headers=headers)

    @app.get("/v1/images/{name}.png", response_model=None)
    async def get_image(request: Request, name: str) -> Response:
        store = services(request).image_store
        if store is not None:
            data = await trio.to_thread.run_sync(store.read, name, time.time())
            if data is not None:
                return Response(data, media_type="image/png")
        raise ApiError(404, "no such image (image URLs expire)", "not_found")


async def _streamed(
    request: Request, claims: keys.Claims, backend: ImageBackend, params: ImageParams
) -> Response:
    s = services(request)
    admitted = routed(request, claims, params.model, "image", images=params.n)
    stack, outcome, drawing = await opened(
        admitted, lambda: backend.draw(params, s.request_timeout)
    )
    outcome.peer_id = drawing.peer_id
    headers = {NODE_HEADER: drawing.peer_id} | rate_headers(s.meters, claims)
    return EventStream(_events(stack, outcome, drawing, params), stack, headers)


async def _events(
    stack: AsyncExitStack, outcome: Outcome, drawing: Drawing, params: ImageParams
) -> AsyncGenerator[bytes, None]:
    """The steps as they are done, then the images. The call is recorded (charged for the
    images) before they go out, as a text stream's is before its last events."""
    created = int(time.time())
    async with stack:
        try:
            async for event in drawing.events():
                if isinstance(event, ImageStep):
                    step = {"step": event.step, "total_steps": event.steps, "created_at": created}
                    yield oa.sse({"type": "image_generation.progress"} | step)
        except UpstreamError as exc:
            outcome.status = 502
            failure = oa.error_body(502, upstream_message(exc), exc.code.value.lower())
            closing = [{"type": "error"} | failure]
        else:
            outcome.images = len(drawing.images)
            closing = [
                {
                    "type": "image_generation.completed",
                    "b64_json": base64.b64encode(image).decode(),
                    "created_at": int(time.time()),
                    "size": f"{params.width}x{params.height}",
                    "output_format": "png",
                    "quality": "auto",
                    "background": "opaque",
                    # Beyond OpenAI's event: which image of ``n``, and the seed that repeats it.
                    "image_index": index,
                    "seed": drawing.seed,
                }
                for index, image in enumerate(drawing.images)
            ]
    for last in closing:
        yield oa.sse(last)
