"""Errors of the wire protocols.

    ProtocolError
    ├── LocalProtocolError    we were asked to send something the protocol forbids
    └── RemoteProtocolError   the peer sent bytes or values the protocol forbids
        └── FrameTooLarge     a frame announced a length over the cap

``ErrorCode`` names the failures an RPC reply can carry; they are values on the wire,
not exceptions.
"""

from __future__ import annotations

import enum


class ProtocolError(Exception):
    """Base of every protocol error."""


class LocalProtocolError(ProtocolError):
    """We tried to send something invalid: a bug on our side."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid: its stream should be closed."""


class FrameTooLarge(RemoteProtocolError):
    """A frame's length prefix exceeds the negotiated maximum."""


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    OVERLOADED = "OVERLOADED"
    NO_MEMORY = "NO_MEMORY"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
