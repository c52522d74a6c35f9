"""Pictures from callers: data URLs read, pictures opened with caps and re-encoded."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from gateway.media import BadMedia
from gateway.media.pictures import PNG_BUDGET, data_url_bytes, normalize
from protocols.vision import MAX_VISION_SIDE, image_format

PIXELS = 50_000_000


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and that holds no pixels at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_data_urls() -> None:
    url = "data:image/png;base64," + base64.b64encode(b"picture").decode()
    assert data_url_bytes(url, 100) == b"picture"
    assert data_url_bytes("data:;base64,cGljdHVyZQ==", 100) == b"picture"
    bad = {
        "data:text/html;base64,PGI+": "text/html is not a picture",
        "data:image/png;base64,@@@": "not valid base64",
        "data:image/png,rawtext": "must be data:image",
        "data:image/png;base64," + "A" * 400: "larger than 100 bytes",
    }
    for url, why in bad.items():
        with pytest.raises(BadMedia, match=why):
            data_url_bytes(url, 100)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_every_common_format_is_read_and_sent_on_as_png_or_jpeg(fmt: str) -> None:
    out = normalize(encoded(Image.new("RGB", (120, 80), (10, 200, 30)), fmt), PIXELS)
    assert image_format(out) in ("PNG", "JPEG")
    assert opened(out).size == (120, 80) and opened(out).mode == "RGB"


def test_large_pictures_are_scaled_down_keeping_their_shape() -> None:
    out = normalize(encoded(Image.new("RGB", (4000, 1000)), "PNG"), PIXELS)
    assert opened(out).size == (MAX_VISION_SIDE, MAX_VISION_SIDE // 4)


def test_a_picture_that_is_large_as_png_goes_on_as_jpeg() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)
    out = normalize(encoded(Image.fromarray(noise), "PNG"), PIXELS)
    assert image_format(out) == "JPEG"
    small = normalize(encoded(Image.new("RGB", (900, 900)), "PNG"), PIXELS)
    assert image_format(small) == "PNG" and len(small) <= PNG_BUDGET


def test_transparency_is_laid_on_white_and_the_picture_turned_upright() -> None:
    clear = normalize(encoded(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG"), PIXELS)
    assert opened(clear).getpixel((0, 0)) == (255, 255, 255)
    sideways = Image.new("RGB", (40, 20))
    exif = sideways.getexif()
    exif[0x0112] = 6  # "rotate 90° to view"
    upright = normalize(encoded(sideways, "JPEG", exif=exif), PIXELS)
    assert opened(upright).size == (20, 40)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "not one that can be read"),
        (b"hello, not a picture", "not one that can be read"),
        (encoded(Image.new("RGB", (8, 8)), "BMP"), "not one that can be read"),
        (encoded(Image.new("RGB", (64, 64)), "PNG")[:60], "damaged"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not one that can be read"),
    ],
)
def test_what_is_not_a_picture_is_refused_with_why(data: bytes, why: str) -> None:
    with pytest.raises(BadMedia, match=why):
        normalize(data, PIXELS)


def test_a_picture_claiming_too_many_pixels_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(BadMedia, match="over the limit of 50000000"):
        normalize(png_claiming(10_000, 6_000), PIXELS)
    with pytest.raises(BadMedia, match="more pixels than the limit"):  # past Pillow's own too
        normalize(png_claiming(20_000, 20_000), PIXELS)
