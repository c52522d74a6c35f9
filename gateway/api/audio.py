"""``POST /v1/audio/speech``, ``/v1/audio/transcriptions`` and ``/v1/audio/translations``
(OpenAI's shapes).

Speech streams: WAV and raw PCM go out a chunk at a time as the node makes them; MP3, FLAC
and Opus are encoded once the speech is whole.

A transcription is a multipart upload. The gateway decodes it (``gateway.media.sound``),
cuts it into windows of at most 30 s and has each heard in turn by the best node, passing
the text heard so far as the next window's prompt.

Both are charged in seconds of audio against the plan's daily quota: speech by the seconds
the gateway forwarded (up to a bound from the input's length, so a node cannot inflate it),
a transcription by the seconds of the windows heard. Whole seconds, rounded up, as OpenAI
reports them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, Literal

import trio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

import keys
from gateway.accounts.metering import Outcome, rate_headers
from gateway.api.auth import User
from gateway.api.bodies import json_body, parse
from gateway.api.errors import ApiError, routing_error
from gateway.api.inference import NODE_HEADER, routed
from gateway.api.services import MediaBackend, Services, services
from gateway.media import BadMedia
from gateway.media.sound import (
    CONTENT_TYPES,
    PcmStream,
    decode_audio,
    encode,
    wav_header,
    windows,
)
from gateway.media.subtitles import srt, vtt
from gateway.routing.router import Speech, UpstreamError
from protocols import Segment, SpeechParams, TranscribeParams
from protocols.audio import (
    MAX_SPEECH_CHARS,
    MAX_TRANSCRIBE_PROMPT_CHARS,
    MAX_VOICE_CHARS,
    TRANSCRIBE_RATE,
    pcm_seconds,
)

FORM_FIELDS = 32
# Of the text heard so far, what the next window is given as its prompt.
CARRIED_CHARS = 800
# The most seconds speech is charged for (and held back from the quota while it is made):
# 4 characters a second at speed 1 is far slower than anyone speaks (~14), so real speech
# is charged what it lasts, and a node cannot inflate the charge beyond it.
SPEECH_CHARS_PER_SECOND = 4.0


class SpeechRequest(BaseModel):
    # OpenAI clients send fields we do not use (instructions, ...): ignore them.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    # Omitted: the model's own voice. A model with one voice speaks with it whatever is asked.
    voice: str = Field(default="", max_length=MAX_VOICE_CHARS)
    response_format: Literal["mp3", "opus", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio"] = "audio"


class TranscriptionForm(BaseModel):
    """The form fields of a transcription or a translation, beside its ``file``."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    prompt: str = Field(default="", max_length=MAX_TRANSCRIBE_PROMPT_CHARS)
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = "json"
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment"]] = Field(default=["segment"])
    stream: Literal[False, "false"] = False


def install(app: FastAPI) -> None:
    @app.post(
        "/v1/audio/speech",
        response_model=None,
        openapi_extra=json_body(app, SpeechRequest),
        response_class=Response,
    )
    async def create_speech(request: Request, claims: User) -> Response:
        body = await parse(request, SpeechRequest)
        try:
            params = SpeechParams(body.model, body.input, body.voice, body.speed)
        except ValueError as exc:
            raise ApiError(400, str(exc), "invalid_request") from exc
        return await _speak(request, claims, params, body.response_format)

    for task, route in (("transcribe", "transcriptions"), ("translate", "translations")):
        app.add_api_route(
            f"/v1/audio/{route}",
            _transcriber(task),
            methods=["POST"],
            response_model=None,
            openapi_extra=_form_body(task),
            name=f"create_{route[:-1]}",
        )


def _media(s: Services) -> MediaBackend:
    if s.media is None:
        raise ApiError(503, "this gateway does not route speech", "no_peer_ready")
    return s.media


async def _speak(request: Request, claims: keys.Claims, params: SpeechParams, fmt: str) -> Response:
    s = services(request)
    media = _media(s)
    stack = AsyncExitStack()
    try:
        most = math.ceil(len(params.input) / (SPEECH_CHARS_PER_SECOND * params.speed))
        calling = routed(request, claims, params.model, "speech", audio=most)
        outcome = await stack.enter_async_context(calling)
        speech = await stack.enter_async_context(media.speak(params, s.request_timeout))
    except BaseException:
        await stack.__aexit__(*sys.exc_info())  # the meters see the failure and its status
        raise
    outcome.peer_id = speech.peer_id
    headers = {NODE_HEADER: speech.peer_id} | rate_headers(s.meters, claims)
    if fmt in ("wav", "pcm"):
        body = _streamed(s, stack, speech, outcome, fmt)
        return StreamingResponse(body, media_type=CONTENT_TYPES[fmt], headers=headers)
    try:
        async with stack:
            try:
                pieces = [chunk async for chunk in speech.chunks()]
            except UpstreamError as exc:
                raise routing_error(exc) from exc
            if not pieces:
                raise ApiError(502, f"node {speech.peer_id[-8:]} made no audio", "internal")
            seconds = sum(p.seconds for p in pieces)
            outcome.audio_seconds = min(outcome.budget_audio, math.ceil(seconds))
    except ApiError as exc:
        exc.headers.update(headers)
        raise
    rate = pieces[0].sample_rate
    pcm = b"".join(p.pcm for p in pieces)
    s.metrics.audio_done("speech", params.model, seconds)
    audio = await trio.to_thread.run_sync(encode, pcm, rate, fmt)
    return Response(audio, media_type=CONTENT_TYPES[fmt], headers=headers)


async def _streamed(
    s: Services, stack: AsyncExitStack, speech: Speech, outcome: Outcome, fmt: str
) -> AsyncIterator[bytes]:
    """The speech as it comes: a WAV header then samples, or raw PCM at OpenAI's rate.
    A failure half-way can only end the body early (the status is already sent)."""
    seconds = 0.0
    async with stack:
        resampler: PcmStream | None = None
        first = True
        try:
            async for chunk in speech.chunks():
                if first:
                    first = False
                    if fmt == "wav":
                        yield wav_header(chunk.sample_rate)
                    else:
                        resampler = PcmStream(chunk.sample_rate)
                seconds += chunk.seconds
                # What was sent so far, if it stops here.
                outcome.audio_seconds = min(outcome.budget_audio, math.ceil(seconds))
                yield chunk.pcm if resampler is None else resampler.feed(chunk.pcm)
        except UpstreamError:
            outcome.status = 502
        if resampler is not None:
            yield resampler.feed(b"", last=True)
    s.metrics.audio_done("speech", outcome.model, seconds)


def _transcriber(task: str) -> Callable[..., Awaitable[Response]]:
    """The route of ``task`` (``transcribe`` or ``translate``)."""

    async def transcription(request: Request, claims: User) -> Response:
        form, data = await _form(request, task)
        s = services(request)
        media = _media(s)
        try:
            decoded = await trio.to_thread.run_sync(
                decode_audio, data, s.media_limits.max_audio_seconds
            )
        except BadMedia as exc:
            raise ApiError(400, f"file: {exc}", "invalid_audio", "file") from exc
        kind = "transcription" if task == "transcribe" else "translation"
        timestamps = form.response_format in ("srt", "vtt", "verbose_json")
        text: list[str] = []
        segments: list[Segment] = []
        language = form.language
        most = math.ceil(decoded.seconds)
        async with routed(request, claims, form.model, kind, audio=most) as outcome:
            for start, pcm in windows(decoded):
                carried = " ".join([form.prompt, *text])[-CARRIED_CHARS:].strip()
                try:
                    params = TranscribeParams(
                        form.model, pcm, TRANSCRIBE_RATE, task, language, carried,
                        form.temperature, timestamps,
                    )  # fmt: skip
                except ValueError as exc:
                    raise ApiError(400, str(exc), "invalid_request") from exc
                heard = await media.transcribe(params, s.request_timeout)
                outcome.peer_id = heard.peer_id
                heard_to = start + pcm_seconds(pcm, TRANSCRIBE_RATE)
                outcome.audio_seconds = min(most, math.ceil(heard_to))
                # The first window's language holds for the rest of the file.
                language = language or heard.transcript.language or None
                if heard.transcript.text:
                    text.append(heard.transcript.text)
                segments += [
                    Segment(start + g.start, start + g.end, g.text.strip())
                    for g in heard.transcript.segments
                ]
        s.metrics.audio_done(kind, form.model, decoded.seconds)
        answer = _rendered(form, task, " ".join(text), segments, decoded.seconds, language or "")
        answer.headers.update({NODE_HEADER: outcome.peer_id} | rate_headers(s.meters, claims))
        return answer

    return transcription


def _rendered(
    form: TranscriptionForm,
    task: str,
    text: str,
    segments: list[Segment],
    seconds: float,
    language: str,
) -> Response:
    """The answer in the response format the form asked for."""
    usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if form.response_format == "json":
        return JSONResponse({"text": text, "usage": usage})
    if form.response_format == "text":
        return PlainTextResponse(text)
    if form.response_format in ("srt", "vtt"):
        return PlainTextResponse(srt(segments) if form.response_format == "srt" else vtt(segments))
    listed = [
        {
            "id": i, "seek": 0, "start": g.start, "end": g.end, "text": g.text, "tokens": [],
            "temperature": form.temperature, "avg_logprob": 0.0, "compression_ratio": 0.0,
            "no_speech_prob": 0.0,
        }
        for i, g in enumerate(segments)
    ]  # fmt: skip
    return JSONResponse(
        {
            "task": task,
            "language": language,
            "duration": round(seconds, 3),
            "text": text,
            "segments": listed,
            "usage": usage,
        }
    )


async def _form(request: Request, task: str) -> tuple[TranscriptionForm, bytes]:
    """The form's fields, checked, and the uploaded file's bytes."""
    form = await request.form(max_files=1, max_fields=FORM_FIELDS)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(
            400, "file: upload the audio as the form's file field", "invalid_request", "file"
        )
    fields: dict[str, Any] = {
        name: value for name, value in form.multi_items() if isinstance(value, str)
    }
    granularities = form.getlist("timestamp_granularities[]") or form.getlist(
        "timestamp_granularities"
    )
    if granularities:
        fields["timestamp_granularities"] = granularities
    if task == "translate":
        fields.pop("language", None)  # a translation is always into English
    try:
        checked = TranscriptionForm.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        if where.startswith("timestamp_granularities"):
            message = "timestamp_granularities: only segment timestamps are given"
        elif where == "stream":
            message = "stream: transcriptions are answered whole, not streamed"
        else:
            message = f"{where}: {first.get('msg')}"
        raise ApiError(400, message, "invalid_request", where or None) from exc
    return checked, await upload.read()


def _form_body(task: str) -> dict[str, Any]:
    """The OpenAPI description of the multipart form these routes read themselves."""
    properties: dict[str, Any] = {
        "file": {"type": "string", "format": "binary", "description": "the audio file"},
        "model": {"type": "string"},
        "prompt": {"type": "string"},
        "response_format": {
            "type": "string", "enum": ["json", "text", "srt", "vtt", "verbose_json"],
        },
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {"type": "array", "items": {"enum": ["segment"]}},
    }  # fmt: skip
    if task == "transcribe":
        properties["language"] = {"type": "string", "description": "ISO 639-1, e.g. en"}
    schema = {"type": "object", "required": ["file", "model"], "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }
