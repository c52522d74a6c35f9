"""What callers send and get as media: audio files and pictures, decoded, checked and
encoded at the gateway, so nodes receive only plain PCM and re-encoded PNG or JPEG.

No HTTP here: a decoder that refuses what it was given raises ``BadMedia`` with a sentence
that says why, and the HTTP layer answers it with a 400.
"""

from gateway.media.errors import BadMedia
from gateway.media.limits import MediaLimits

__all__ = ["BadMedia", "MediaLimits"]
