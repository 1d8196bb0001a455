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
        oriented = to_rgb(oriented)
        changed = True
    if not changed and fmt in {"PNG", "JPEG", "WEBP"}:
        return data
    out = io.BytesIO()
    oriented.save(out, format="PNG")
    return out.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and 32-bit greyscale scaled (not clipped), CMYK through
    pillow's conversion, transparency (alpha or a palette's) flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pixel_digest(data: bytes) -> str:
    """A digest of the decoded RGB pixels: equal for the same picture in any lossless encoding."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return hashlib.blake2b(rgb.tobytes() + repr(rgb.size).encode(), digest_size=16).hexdigest()
