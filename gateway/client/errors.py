"""The client's errors: each ``str()`` is a sentence to show a person as is.

ClientError
├── Unreachable        no HTTP answer: refused, unresolvable, timed out, cut off
├── BadResponse        an answer that is not the gateway's API (the other side broke it)
└── Refused            the gateway answered with an error: ``status``, ``code``, ``detail``
    ├── AuthRefused    401: the token (or the password) was refused
    ├── RateLimited    429: ``retry_after`` seconds, when the gateway said
    ├── UnknownModel   404 for a model no node serves: ``available`` lists those served
    ├── NoPeerReady    503: the model exists but no node can take the call now
    └── StreamFailed   an error event in the middle of a streamed answer
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Something went wrong talking to the gateway; the message is a full sentence."""


class Unreachable(ClientError):
    pass


class BadResponse(ClientError):
    pass


class Refused(ClientError):
    def __init__(
        self, sentence: str, status: int, code: str | None = None, detail: str = ""
    ) -> None:
        super().__init__(sentence)
        self.status = status
        self.code = code
        self.detail = detail  # the gateway's own message


class AuthRefused(Refused):
    pass


class RateLimited(Refused):
    def __init__(self, sentence: str, detail: str, retry_after: float | None) -> None:
        super().__init__(sentence, 429, "rate_limited", detail)
        self.retry_after = retry_after


class UnknownModel(Refused):
    def __init__(
        self, model: str, available: list[str], detail: str, sentence: str | None = None
    ) -> None:
        listed = ", ".join(available) if available else "none are being served right now"
        sentence = sentence or f"unknown model {model!r}; available: {listed}"
        super().__init__(sentence, 404, "model_not_found", detail)
        self.model = model
        self.available = available


class NoPeerReady(Refused):
    pass


class StreamFailed(Refused):
    pass


def error_fields(body: Any) -> tuple[str, str | None]:
    """The message and code of an OpenAI-shaped error body, or a fallback."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "no reason given", None
    message, code = error.get("message"), error.get("code")
    return (
        message if isinstance(message, str) and message else "no reason given",
        code if isinstance(code, str) else None,
    )
