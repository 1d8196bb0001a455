"""Image validation with pillow: decode fully, fix orientation and mode, enforce size limits."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 28
    max_aspect: float = 200.0
    max_pixels: int = 64_000_000  # decompression-bomb guard


class ImageRejected(ValueError):
    """An image that cannot be used; the message is the quarantine reason."""


def validate_image(data: bytes, limits: ImageLimits) -> bytes:
    """Return usable image bytes (the original when already clean, else a PNG re-encoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > limits.max_pixels:
                    raise ImageRejected(f"image_too_large: {width}x{height} exceeds {limits.max_pixels} pixels")
                fmt = probe.format
            image = Image.open(io.BytesIO(data))
            image.load()  # full decode: truncated files fail here, not at training time
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image_undecodable: {exc}") from exc

    if min(width, height) < limits.min_side:
        raise ImageRejected(f"image_too_small: {width}x{height}, min side {limits.min_side}")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ImageRejected(f"image_bad_aspect: {width}x{height} exceeds aspect {limits.max_aspect}")

    changed = image.getexif().get(0x0112, 1) != 1  # EXIF orientation other than "normal"
    oriented = ImageOps.exif_transpose(image) if changed else image
    if oriented.mode != "RGB":
        oriented = oriented.convert("RGBA").convert("RGB") if "A" in oriented.mode or oriented.mode == "P" else oriented.convert("RGB")
        changed = True
    if not changed and fmt in {"PNG", "JPEG", "WEBP"}:
        return data
    out = io.BytesIO()
    oriented.save(out, format="PNG")
    return out.getvalue()


def pixel_digest(data: bytes) -> str:
    """A digest of the decoded RGB pixels: equal for the same picture in any lossless encoding."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return hashlib.blake2b(rgb.tobytes() + repr(rgb.size).encode(), digest_size=16).hexdigest()
