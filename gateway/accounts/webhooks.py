"""Signing a job's webhook, so its receiver knows the gateway sent it, and when.

The signature is HMAC-SHA256, keyed with the user's webhook secret, over
``"<unix seconds>." + body``; it travels as ``X-BitingLip-Signature: t=<seconds>,v1=<hex>``.
The time is inside what is signed, so a receiver that refuses signatures older than a few
minutes (``verify``'s ``tolerance``) cannot be fed a recorded delivery again later.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-BitingLip-Signature"
TOLERANCE = 300.0  # seconds a receiver accepts a signature for


class BadSignature(Exception):
    """A delivery whose signature is missing, wrong or too old."""


def sign(secret: str, body: bytes, at: float) -> str:
    """The ``X-BitingLip-Signature`` value for ``body`` sent at ``at``."""
    stamp = int(at)
    return f"t={stamp},v1={_mac(secret, stamp, body)}"


def verify(secret: str, body: bytes, header: str, now: float, tolerance: float = TOLERANCE) -> None:
    """Raise ``BadSignature`` unless ``header`` signs ``body`` with ``secret`` within
    ``tolerance`` seconds of ``now``."""
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    try:
        stamp = int(fields["t"])
    except (KeyError, ValueError) as exc:
        raise BadSignature("the signature has no time") from exc
    if abs(now - stamp) > tolerance:
        raise BadSignature("the signature is too old (or from the future)")
    if not hmac.compare_digest(fields.get("v1", ""), _mac(secret, stamp, body)):
        raise BadSignature("the signature does not match the body")


def _mac(secret: str, stamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
