"""Chats that show a model pictures: ``image_url`` parts in ``/v1/chat/completions``.

A chat goes this way when it carries pictures or names an image-to-text model; it is then
metered, routed and answered exactly as a text chat (streamed or whole), under the kind
``vision``. Each picture is a data URL, or an http(s) URL where the operator lets the
gateway fetch them; it is checked and re-encoded (``gateway.media.pictures``) before any
node sees it.
"""

from __future__ import annotations

import trio
from fastapi import Request

import keys
from gateway.api import openai_api as oa
from gateway.api.errors import ApiError
from gateway.api.inference import Started, start
from gateway.api.services import Services, services
from gateway.media import BadMedia, MediaLimits
from gateway.media.fetch import fetch_picture
from gateway.media.pictures import data_url_bytes, normalize
from protocols import VisionMessage, VisionParams
from protocols.vision import MAX_VISION_IMAGES, Part

IMAGE_TO_TEXT = "image-to-text"


async def start_if_shown(
    request: Request, claims: keys.Claims, body: oa.ChatCompletionRequest, text_only: str | None
) -> Started | None:
    """Start the chat on an image-to-text model if it is one for such a model (it carries
    pictures, or names one); None leaves it to the text route. ``text_only`` names a field
    the call sets that only a text model honours: such a chat is refused here."""
    s = services(request)
    shown = [picture for m in body.messages for picture in m.pictures()]
    task = _task(s, body.model)
    if not shown and task != IMAGE_TO_TEXT:
        return None
    if shown and task is not None and task != IMAGE_TO_TEXT:
        readers = sorted(m for m in s.backend.serving() if _task(s, m) == IMAGE_TO_TEXT)
        raise ApiError(
            400,
            f"{body.model} does not read pictures (models that do: {', '.join(readers) or 'none'})",
            "invalid_request",
            "model",
        )
    if text_only is not None:
        message = f"{text_only}: an image-to-text model cannot honour it"
        raise ApiError(400, message, "invalid_request", text_only)
    if len(shown) > MAX_VISION_IMAGES:
        message = f"a chat shows at most {MAX_VISION_IMAGES} pictures"
        raise ApiError(400, message, "invalid_image", "messages")
    return await start(request, claims, await _params(s.media_limits, body), "vision")


def _task(s: Services, model: str) -> str | None:
    """What ``model`` does, as the nodes serving it say; None for a model none serves."""
    peers = s.backend.serving().get(model, [])
    return next((str(p["task"]) for p in peers if "task" in p), None)


async def _params(limits: MediaLimits, body: oa.ChatCompletionRequest) -> VisionParams:
    images: list[bytes] = []
    messages = []
    for m in body.messages:
        parts: list[Part] = []
        for part in m.content if isinstance(m.content, list) else [m.content or ""]:
            if isinstance(part, oa.ImagePart):
                try:
                    images.append(await picture(limits, part.url))
                except BadMedia as exc:
                    where = f"picture {len(images) + 1}"
                    raise ApiError(400, f"{where}: {exc}", "invalid_image", "messages") from exc
                parts.append(len(images) - 1)
            else:
                parts.append(part if isinstance(part, str) else part.text)
        messages.append(VisionMessage("system" if m.role == "developer" else m.role, parts))
    try:
        return VisionParams(
            messages=messages,
            images=images,
            max_tokens=body.max_completion_tokens or body.max_tokens or 256,
            **body.sampling(),
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), "invalid_request") from exc


async def picture(limits: MediaLimits, url: str) -> bytes:
    """The picture at ``url``, checked and re-encoded; ``BadMedia`` says why not."""
    if url.startswith(("data:", "DATA:")):
        data = data_url_bytes(url, limits.max_image_bytes)
    elif url.lower().startswith(("http://", "https://")):
        if not limits.fetch_image_urls:
            raise BadMedia(
                "this gateway does not fetch pictures: send it as a data URL "
                "(data:image/png;base64,...)"
            )
        data = await fetch_picture(url, limits.max_image_bytes, limits.image_fetch_timeout)
    else:
        raise BadMedia("a picture's URL must be a data URL or http(s)")
    return await trio.to_thread.run_sync(normalize, data, limits.max_image_pixels)
