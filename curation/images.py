"""Image validation with pillow: decode fully, fix orientation and mode, enforce size limits."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError


@dataclass(frozen=True)
class ImageLimits:
    min_side: int = 28
    max_aspect: float = 200.0
    max_pixels: int = 64_000_000  # decompression-bomb guard


def pillow_pixel_ceiling() -> int | None:
    """The most pixels pillow opens at all (it raises `DecompressionBombError` above twice
    `Image.MAX_IMAGE_PIXELS`); None when a user switched its guard off."""
    return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None


class ImageRejected(ValueError):
    """An image that cannot be used; the message is the quarantine reason."""


EXIF_ORIENTATION = 0x0112


def validate_image(data: bytes, limits: ImageLimits, name: str | None = None) -> bytes:
    """Return usable image bytes: the original when already clean, else a PNG re-encoding (8-bit
    RGB, EXIF orientation applied, no EXIF kept). `name` (the image's file, when it came from one)
    is named in the reason: `image_undecodable: img/a.png: an empty file (0 bytes), not an image`.

    Raises `ImageRejected` (`image_too_large`, `image_too_small`, `image_bad_aspect`,
    `image_undecodable`). Nothing else escapes: any failure of pillow's decoders on a file is the
    file's fault. Broken EXIF metadata does not reject an image: it is read as no orientation and
    left out of the re-encoded image, which later readers can then open."""
    try:
        if not data:
            raise ImageRejected("image_undecodable: an empty file (0 bytes), not an image")
        with warnings.catch_warnings():
            # pillow warns about what it skips in a damaged file (a tag past the end, corrupt EXIF):
            # the image passes or is quarantined with a reason, so the warnings only add noise. Our
            # own `max_pixels` is the bomb guard; pillow's warning below its hard limit must not
            # refuse an image the config allows (the config cannot allow more than that limit).
            warnings.simplefilter("ignore")
            return _validate(data, limits)
    except ImageRejected as exc:
        if name is None:
            raise
        key, _, rest = str(exc).partition(": ")
        raise ImageRejected(f"{key}: {name}: {rest}") from None
    except UnidentifiedImageError:  # pillow's text names its in-memory buffer, not the file
        raise ImageRejected(f"image_undecodable: {f'{name}: ' if name else ''}not an image pillow can read "
                            f"({len(data)} bytes starting {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:  # above pillow's hard ceiling (2 x MAX_IMAGE_PIXELS): too large, not broken
        raise ImageRejected(f"image_too_large: {f'{name}: ' if name else ''}exceeds {limits.max_pixels} pixels ({exc})") from None
    except Exception as exc:  # any decoder or metadata failure is the file's, never a crashed scan
        raise ImageRejected(f"image_undecodable: {f'{name}: ' if name else ''}{type(exc).__name__}: {exc}") from None


def _validate(data: bytes, limits: ImageLimits) -> bytes:
    with Image.open(io.BytesIO(data)) as probe:
        width, height = probe.size
        if width * height > limits.max_pixels:
            raise ImageRejected(f"image_too_large: {width}x{height} exceeds {limits.max_pixels} pixels")
        fmt = probe.format
    image = Image.open(io.BytesIO(data))
    image.load()  # full decode: truncated files fail here, not at training time

    if min(width, height) < limits.min_side:
        raise ImageRejected(f"image_too_small: {width}x{height}, min side {limits.min_side}")
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ImageRejected(f"image_bad_aspect: {width}x{height} exceeds aspect {limits.max_aspect}")

    orientation, exif_readable = _orientation(image)
    changed = orientation != 1 or not exif_readable  # unreadable EXIF: re-encode without it
    oriented = ImageOps.exif_transpose(image) if orientation != 1 else image
    if oriented.mode != "RGB":
        oriented = to_rgb(oriented)
        changed = True
    if not changed and fmt in {"PNG", "JPEG", "WEBP"}:
        return data
    out = io.BytesIO()
    oriented.save(out, format="PNG")  # pillow writes no EXIF to a PNG unless asked
    return out.getvalue()


def _orientation(image: Image.Image) -> tuple[int, bool]:
    """The EXIF orientation (1 to 8; 1 when absent or not a valid value) and whether the EXIF
    block could be read (a PNG `eXIf` chunk with a broken TIFF header cannot)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # SyntaxError "not a TIFF file", struct errors, truncated IFDs
        return 1, False
    if not isinstance(value, int) or not 1 <= value <= 8:
        return 1, False
    return value, True


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit and 32-bit greyscale scaled (not clipped), CMYK through
    pillow's conversion, transparency (alpha or a palette's) flattened onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(values)  # a float image may hold NaN or infinities: they take the ends of the range
        low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
        values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
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
