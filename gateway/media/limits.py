"""The operator's limits on media that callers send (``[gateway]`` settings)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_IMAGE_BYTES = 20 << 20  # one picture as sent: OpenAI's limit
# Pixels of one picture as sent; opened beyond it, a small file can fill the memory.
MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class MediaLimits:
    """``max_audio_seconds``: the longest audio transcribed in one call;
    ``fetch_image_urls``: whether pictures given as http(s) URLs are fetched (off: only
    data URLs), each within ``image_fetch_timeout`` seconds and ``max_image_bytes``."""

    max_audio_seconds: float = 1800.0
    fetch_image_urls: bool = False
    image_fetch_timeout: float = 10.0
    max_image_bytes: int = MAX_IMAGE_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
