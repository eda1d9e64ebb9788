"""Checks on downloaded bytes: content type, md5, and a full decode with Pillow.

The file extension comes from the format Pillow recognised, from this fixed table, never
from the URL or a header, so nothing a server sends can reach a file path.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from scrapy.pipelines.media import FileException

# Pillow format -> extension. Anything else (SVG is not even an image to Pillow, TIFF and
# BMP are not what boards serve) is rejected.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp"}


class Rejected(FileException):
    """A post or download that must not be stored; `reason` names the skip counter.

    A FileException, so that FilesPipeline passes it through unchanged to item_completed."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedImage:
    sha256: str
    ext: str
    width: int
    height: int


def is_image_content_type(value: bytes | str | None) -> bool:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return bool(value) and value.split(";")[0].strip().lower().startswith("image/")


def check_md5(data: bytes, expected: str) -> None:
    actual = hashlib.md5(data).hexdigest()  # noqa: S324 (the boards' own identifier, not security)
    if actual != expected.lower():
        raise Rejected("md5_mismatch", f"API says {expected}, bytes hash to {actual}")


def sniff_format(data: bytes) -> str:
    """The extension for these bytes, from Pillow's header parse (cheap, no decode)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise Rejected("bad_image", f"not an image Pillow can read ({exc})") from None
    if fmt not in EXTENSIONS:
        raise Rejected("bad_image", f"format {fmt} is not one of {', '.join(EXTENSIONS)}")
    return EXTENSIONS[fmt]


def verify_image(data: bytes, *, max_pixels: int) -> VerifiedImage:
    """Decode the whole image: truncated files, bombs and garbage raise Rejected("bad_image")."""
    ext = sniff_format(data)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we refuse outright.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise Rejected("bad_image", f"{width}x{height} is over the {max_pixels}-pixel bomb limit")
                image.verify()  # structure and checksums (PNG CRCs)
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # a full decode: verify() misses truncated JPEG data
    except Rejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise Rejected("bad_image", f"{type(exc).__name__}: {exc}") from None
    return VerifiedImage(hashlib.sha256(data).hexdigest(), ext, width, height)
