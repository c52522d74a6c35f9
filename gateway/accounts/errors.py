"""What the accounts refuse. Each refusal suggests the HTTP status that fits it (like h11's
``error_status_hint``); ``gateway.api.errors`` is the one place that turns it into HTTP, and
the operator's CLI prints it as a sentence.

Refused            a request the rules do not allow: ``code``, ``param``, ``status_hint``
├── LimitReached   a plan's limit: ``retry_after`` seconds, ``headers`` the caller's limits
└── Busy           work this gateway will not queue now (password hashing): ``retry_after``
"""

from __future__ import annotations


class Refused(Exception):
    def __init__(
        self, message: str, code: str, param: str | None = None, *, status_hint: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.status_hint = status_hint


class LimitReached(Refused):
    def __init__(self, message: str, code: str, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(message, code, status_hint=429)
        self.retry_after = retry_after
        self.headers = headers


class Busy(Refused):
    def __init__(self, message: str, code: str, retry_after: int) -> None:
        super().__init__(message, code, status_hint=503)
        self.retry_after = retry_after
