"""A small synchronous client for the gateway's HTTP API (docs/api.md), for terminal tools.

Methods return the documented bodies, checked for shape; every failure is a
``ClientError`` whose message is a sentence to show as is (the tree is in
``gateway.client.errors``).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from gateway.client.errors import (
    AuthRefused,
    BadResponse,
    ClientError,
    NoPeerReady,
    RateLimited,
    Refused,
    StreamFailed,
    UnknownModel,
    Unreachable,
    error_fields,
)
from gateway.client.stream import NODE_HEADER, ChatStream, SSEDecoder

__all__ = [
    "DEFAULT_GATEWAY",
    "IMAGE_TASK",
    "LISTEN_TASK",
    "NODE_HEADER",
    "SPEECH_TASK",
    "TEXT_TASK",
    "VISION_TASK",
    "AuthRefused",
    "BadResponse",
    "ChatStream",
    "ClientError",
    "GatewayClient",
    "NoPeerReady",
    "RateLimited",
    "Refused",
    "SSEDecoder",
    "StreamFailed",
    "UnknownModel",
    "Unreachable",
    "normalize_url",
]

DEFAULT_GATEWAY = "http://127.0.0.1:8080"
TEXT_TASK = "text-generation"
IMAGE_TASK = "text-to-image"
SPEECH_TASK = "text-to-speech"
LISTEN_TASK = "speech-to-text"
VISION_TASK = "image-to-text"
EMBEDDING_TASK = "embedding"


class GatewayClient:
    """The gateway's API for one user; methods return the documented bodies, checked."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 300.0) -> None:
        self.url = normalize_url(url)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Generation can take minutes to start (a model loading); connecting cannot.
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: each model with the peers that serve it."""
        return _list(self._request("GET", "/v1/models"), "data")

    def tasks(self, models: list[dict[str, Any]] | None = None) -> dict[str, str]:
        """Model id → what it does (``TEXT_TASK``, ``IMAGE_TASK``) for every model served."""
        models = self.models() if models is None else models
        ids = [str(m.get("id")) for m in models]
        if all(isinstance(m.get("task"), str) for m in models):
            return {i: str(m["task"]) for i, m in zip(ids, models, strict=True)}
        # A gateway that leaves the task out of /v1/models still gives it for each peer.
        try:
            peers = self.peers()
        except ClientError:
            peers = []  # then every model is taken to chat, as before tasks were told
        known = {
            str(model.get("id")): str(model.get("task"))
            for peer in peers
            for model in peer.get("models") or []
            if isinstance(model, dict) and isinstance(model.get("task"), str)
        }
        return {i: known.get(i, TEXT_TASK) for i in ids}

    def chat_models(self) -> list[str]:
        return [m for m, task in self.tasks().items() if task == TEXT_TASK]

    def image_models(self) -> list[str]:
        return [m for m, task in self.tasks().items() if task == IMAGE_TASK]

    @contextmanager
    def chat_stream(
        self, model: str, messages: list[dict[str, str]], **settings: float | int
    ) -> Iterator[ChatStream]:
        """Stream a chat answer; leaving the block closes the stream, which the gateway
        takes as a cancellation of the generation on the node."""
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **settings,
        }
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refused(response, model)
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    raise BadResponse(f"{self.url} did not answer with a stream of events")
                yield ChatStream(response)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def image(
        self, model: str, prompt: str, *, size: str | None = None, seed: int | None = None
    ) -> list[bytes]:
        """``POST /v1/images/generations``: the PNG bytes of each image."""
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "n": 1,
            "response_format": "b64_json",
        }
        if size is not None:
            body["size"] = size
        if seed is not None:
            body["seed"] = seed
        try:
            answer = self._request("POST", "/v1/images/generations", body, model)
        except UnknownModel as exc:  # the gateway's message names the models that draw
            raise UnknownModel(
                model, [], exc.detail, f"no node makes images with {model!r}: {exc.detail}"
            ) from None
        images = []
        for item in _list(answer, "data"):
            if isinstance(item.get("b64_json"), str):
                try:
                    images.append(base64.b64decode(item["b64_json"], validate=True))
                except binascii.Error:
                    raise BadResponse("the gateway sent an image that is not base64") from None
            else:
                raise BadResponse("the gateway sent an image without its data (b64_json)")
        return images

    def models_for(self, task: str) -> list[str]:
        """The models served for ``task`` (``SPEECH_TASK``, ``LISTEN_TASK``, ...)."""
        return [m for m, served in self.tasks().items() if served == task]

    def speech(self, model: str, text: str, *, voice: str = "") -> bytes:
        """``POST /v1/audio/speech``: ``text`` spoken, as a WAV file."""
        body = {"model": model, "input": text, "voice": voice, "response_format": "wav"}
        return self._upload("/v1/audio/speech", model, json=body).content

    def transcribe(self, model: str, name: str, audio: bytes) -> str:
        """``POST /v1/audio/transcriptions``: what is said in the file ``name`` holds."""
        answer = self._upload(
            "/v1/audio/transcriptions",
            model,
            data={"model": model, "response_format": "json"},
            files={"file": (name, audio)},
        )
        try:
            text = answer.json().get("text")
        except (ValueError, AttributeError):
            text = None
        if not isinstance(text, str):
            raise BadResponse("the gateway's transcription has no text")
        return text

    def look(self, model: str, picture: bytes, mime: str, prompt: str) -> str:
        """``POST /v1/chat/completions`` with one picture: what the model says of it."""
        url = f"data:{mime};base64,{base64.b64encode(picture).decode()}"
        content = [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        answer = self._request("POST", "/v1/chat/completions", body, model)
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise BadResponse("the gateway's answer has no message")
        return text

    def _upload(self, path: str, model: str, **content: Any) -> httpx.Response:
        """POST ``content`` (``json``, or ``data`` and ``files``); the response, if it is not
        a refusal."""
        try:
            response = self._http.post(path, **content)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._refused(response, model)
        return response

    def usage(self, days: int = 30) -> dict[str, Any]:
        """``GET /v1/usage``: own usage per day and model, with totals and limits."""
        body = self._request("GET", "/v1/usage", params={"days": days})
        _list(body, "data")
        return body

    def peers(self) -> list[dict[str, Any]]:
        """``GET /v1/peers``: every peer the gateway knows."""
        return _list(self._request("GET", "/v1/peers"), "data")

    def submit_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs``: the job as queued (``id``, ``state``, ``position``...)."""
        return _job(self._request("POST", "/v1/jobs", body))

    def job(self, job_id: str) -> dict[str, Any]:
        """``GET /v1/jobs/{id}``: its state, and its result once done."""
        return _job(self._request("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, limit: int = 20, before: str | None = None) -> dict[str, Any]:
        """``GET /v1/jobs``: a page of own jobs, newest first (``data``, ``has_more``,
        ``next``)."""
        params: dict[str, Any] = {"limit": limit} | ({"before": before} if before else {})
        body = self._request("GET", "/v1/jobs", params=params)
        _list(body, "data")
        return body

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """``DELETE /v1/jobs/{id}``: the job, cancelled."""
        return _job(self._request("DELETE", f"/v1/jobs/{job_id}"))

    def login(self, username: str, password: str) -> dict[str, Any]:
        """``POST /v1/auth/login``: ``{"user", "token", "expires_at"}``."""
        try:
            body = self._request(
                "POST", "/v1/auth/login", {"username": username, "password": password}
            )
        except AuthRefused as exc:
            raise AuthRefused(
                f"the gateway refused that username and password ({exc.detail})", 401, exc.code
            ) from None
        if not isinstance(body.get("token"), str):
            raise BadResponse(f"{self.url} answered the login without a token")
        return body

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        model: str = "",
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._refused(response, model)
        try:
            found = response.json()
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise BadResponse(f"{self.url} did not answer {path} like a BitingLip gateway")
        return found

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return Unreachable(
                f"cannot reach the gateway at {self.url}: is `bitinglip up` running?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(f"the gateway at {self.url} did not answer in time")
        return Unreachable(f"the connection to the gateway at {self.url} failed ({exc})")

    def _refused(self, response: httpx.Response, model: str) -> Refused:
        try:
            message, code = error_fields(response.json())
        except ValueError:
            message, code = response.text.strip()[:200] or response.reason_phrase, None
        status = response.status_code
        if status == 401:
            return AuthRefused(
                f"your token was refused ({message}); log in again with `bitinglip login`",
                status,
                code,
                message,
            )
        if status == 429:
            retry = _seconds(response.headers.get("retry-after"))
            wait = f"try again in {retry:g} s" if retry is not None else "try again later"
            return RateLimited(f"you are over a rate limit ({message}); {wait}", message, retry)
        if status == 404 and code == "model_not_found":
            return UnknownModel(model, self._available(), message)
        if status == 404 and code is None:  # no route: the gateway predates the API asked
            path = response.request.url.path
            return Refused(
                f"the gateway at {self.url} does not offer {path}: it may be an older version",
                status,
                code,
                message,
            )
        if status == 503 and code in (None, "no_peer_ready"):
            return NoPeerReady(f"no node has the model ready: {message}", status, code, message)
        verb = "could not complete" if status >= 500 else "refused"
        return Refused(
            f"the gateway {verb} the request ({status}): {message}", status, code, message
        )

    def _available(self) -> list[str]:
        try:
            return self.chat_models()
        except ClientError:
            return []


def normalize_url(url: str) -> str:
    """``host:port`` or a full URL, without a trailing slash."""
    url = url.strip().rstrip("/")
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def _list(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = body.get(name)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponse(f"the gateway's answer has no list of objects in {name!r}")
    return items


def _job(body: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(body.get("id"), str) or not isinstance(body.get("state"), str):
        raise BadResponse("the gateway's answer is not a job")
    return body


def _seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds; an HTTP date is rare enough to say "later"."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
