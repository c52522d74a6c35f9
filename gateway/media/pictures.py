"""Pictures that callers show a model: read from data URLs, opened safely, re-encoded.

A picture is opened with Pillow restricted to PNG, JPEG, WebP and GIF (never a format whose
decoder runs another program), its size is checked from its header before a pixel is
decoded (a small file can claim gigapixels), then it is turned upright, flattened to RGB,
scaled to at most ``MAX_VISION_SIDE`` on its longer side and encoded again: PNG where that
stays small, else JPEG. A node so receives one of two formats it knows, without metadata.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import TYPE_CHECKING

from gateway.media.errors import BadMedia
from protocols.vision import MAX_VISION_SIDE

if TYPE_CHECKING:
    from PIL.Image import Image as Picture

READ_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# A picture sent on as PNG up to this size; past it, as JPEG.
PNG_BUDGET = 1 << 20
JPEG_QUALITY = 90
_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.I)


def data_url_bytes(url: str, max_bytes: int) -> bytes:
    """The bytes a ``data:image/...;base64,`` URL carries; ``BadMedia`` for another kind
    of data URL, bad base64, or more than ``max_bytes``."""
    match = _DATA_URL.match(url)
    if match is None:
        raise BadMedia("a data URL must be data:image/<type>;base64,<data>")
    kind = (match.group("type") or "").lower()
    if kind and not kind.startswith("image/"):
        raise BadMedia(f"a data URL of {kind} is not a picture")
    encoded = url[match.end() :]
    if len(encoded) // 4 * 3 > max_bytes:
        raise BadMedia(f"a picture is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadMedia("a data URL's picture is not valid base64") from exc


def normalize(data: bytes, max_pixels: int) -> bytes:
    """``data`` as a checked picture of at most ``MAX_VISION_SIDE`` pixels a side, in PNG
    or JPEG. Blocking: run it in a thread."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=READ_FORMATS) as image:
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise BadMedia(
                    f"a picture of {width}x{height} pixels is over the limit of {max_pixels}"
                )
            if image.format == "JPEG":
                # Decode at a reduced scale straight away when the picture is large.
                image.draft("RGB", (MAX_VISION_SIDE, MAX_VISION_SIDE))
            picture = ImageOps.exif_transpose(image) or image
            picture = _rgb(picture)
    except BadMedia:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher, limit
        raise BadMedia(f"a picture has more pixels than the limit of {max_pixels}") from exc
    except UnidentifiedImageError as exc:
        raise BadMedia(f"a picture is not one that can be read here ({_formats()})") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or malformed inside
        raise BadMedia(f"a picture is damaged: {exc}") from exc
    picture.thumbnail((MAX_VISION_SIDE, MAX_VISION_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    if out.tell() <= PNG_BUDGET:
        return out.getvalue()
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _rgb(image: Picture) -> Picture:
    """RGB, with any transparency laid on white (how a page shows a transparent picture)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return image.convert("RGB")


def _formats() -> str:
    return ", ".join("WebP" if f == "WEBP" else f for f in READ_FORMATS)
