"""The one error of media decoding::

BadMedia    what the caller sent cannot be used; ``str()`` says why, for the caller
"""

from __future__ import annotations


class BadMedia(ValueError):
    """An upload or a picture that is not what it claims, or over a limit."""
