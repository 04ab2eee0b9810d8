"""Opening images: the one loader every reference image in the package goes through (bottom layer).

`open_image` reads a file path, or a file's bytes (a tar shard member), and applies these rules in order:

1. Size: an image with more pixels than PIL's `Image.MAX_IMAGE_PIXELS` (89,478,485 by default; whatever
   the process set it to, None turns the check off) raises `ImageError`, from its header, before any
   decoding. PIL alone only warns between the limit and twice it; here its DecompressionBombWarning is
   an error too.
2. Decode: PIL decodes the file fully (the first frame of an animation). A missing path raises
   FileNotFoundError; anything else that is not a readable image (an empty file, a truncated file,
   text, an unknown format) raises `ImageError`, a ValueError whose one-line message names the file.
3. Orientation: the EXIF orientation tag is applied (`ImageOps.exif_transpose`), so the pixels are
   upright as a viewer shows them and the tag is dropped.
4. Eight bits (`to_8bit`, also applied to in-memory PIL images): the result is 8-bit RGB, or 8-bit RGBA
   (straight alpha) when the image carries transparency (`has_transparency`): an alpha channel (RGBA,
   LA, PA, and the premultiplied RGBa, La), a palette with transparency, or a PNG transparent colour (tRNS).
   - 16-bit samples keep their high byte (value >> 8, so 32768 -> 128 and 65535 -> 255): PIL already
     opens 16-bit RGB, RGBA and grey+alpha files that way; 16-bit greyscale (PIL modes "I;16*") is
     mapped here, its transparent grey level compared at full 16-bit precision. PIL's 32-bit "I" mode
     is read as 16-bit greyscale, clipped to [0, 65535].
   - Float greyscale (PIL mode "F") must lie in [0, 1] and becomes round(value * 255)
     (`unit_float_to_uint8`, the rule for float arrays given to the pipeline too); else `ImageError`.
   - Every other mode ("1" bilevel, "L", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", an opaque palette)
     takes PIL's own conversion to RGB.

`on_white` is the one transparency rule: RGBA is alpha-composited onto opaque white with
`Image.alpha_composite` (docs/model.md#3-reference-preprocessing). `alpha_channel` gives the alpha a caller needs beside it.

The DecompressionBombWarning is raised as an error inside a `warnings.catch_warnings` block, which
changes the process's warning filters for its duration; the package opens images from one thread.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

WHITE = (255, 255, 255)

_SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")

# What PIL raises for a file it cannot decode (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


class ImageError(ValueError):
    """An image that cannot be used; the message names the file (or value) and what to do."""


def open_image(source: str | os.PathLike | bytes, label: str = "") -> Image.Image:
    """Decode an image file (a path, or its bytes) into 8-bit RGB, or RGBA when it has transparency.

    The rules are the module docstring's. `label` starts every error message (e.g. "reference 1"); a
    path is always named after it, so give bytes a label that says where they came from.
    """
    name = _describe(source, label)
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{name} is empty (0 bytes); re-export the image")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{name} does not exist")
        if path.is_file() and path.stat().st_size == 0:
            raise ImageError(f"{name} is an empty file (0 bytes); re-export the image")
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as opened:
                opened.load()
                upright = ImageOps.exif_transpose(opened)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{name} is refused as a possible decompression bomb ({error}); the limit is PIL's "
            f"Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels: downscale the image"
        ) from error
    except _DECODE_ERRORS as error:
        raise ImageError(
            f"{name} is not a readable image ({error}); re-export it as PNG, JPEG or WebP"
        ) from error
    return to_8bit(upright, name)


def to_8bit(image: Image.Image, name: str = "image") -> Image.Image:
    """8-bit RGB copy of `image`, or RGBA when it has transparency (module docstring, rule 4).

    `name` names the image in the error raised for float values outside [0, 1].
    """
    if image.mode in _SIXTEEN_BIT_GREY_MODES:
        image = _sixteen_bit_grey_to_8bit(image)
    elif image.mode == "F":
        image = Image.fromarray(unit_float_to_uint8(np.asarray(image), name))
    elif image.mode == "La":
        image = image.convert("LA")  # PIL converts La to RGBA only by way of LA
    return image.convert("RGBA" if has_transparency(image) else "RGB")


def has_transparency(image: Image.Image) -> bool:
    """An alpha channel, a palette with alpha, or a transparent colour or palette entries (tRNS)."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A")


def unit_float_to_uint8(values: np.ndarray, name: str) -> np.ndarray:
    """Float values in [0, 1] as uint8 round(value * 255); NaN, infinity or values outside [0, 1] raise."""
    if not np.isfinite(values).all():
        raise ImageError(f"{name}: float values include NaN or infinity; expected finite values in [0, 1]")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise ImageError(
            f"{name}: float values span [{low:.3g}, {high:.3g}]; expected [0, 1]: rescale them or use 8-bit"
        )
    return np.round(values * 255).astype(np.uint8)


def on_white(image: Image.Image) -> Image.Image:
    """RGB image of an `open_image` / `to_8bit` result: RGBA alpha-composited onto opaque white."""
    if image.mode == "RGB":
        return image
    if image.mode != "RGBA":
        raise ValueError(f"on_white takes RGB or RGBA (from open_image or to_8bit), got mode {image.mode!r}")
    background = Image.new("RGBA", image.size, WHITE + (255,))
    return Image.alpha_composite(background, image).convert("RGB")


def alpha_channel(image: Image.Image) -> np.ndarray:
    """(H, W) uint8 alpha of an `open_image` / `to_8bit` result: 255 everywhere for RGB."""
    if image.mode == "RGBA":
        return np.asarray(image.getchannel("A"))
    return np.full((image.height, image.width), 255, np.uint8)


def _sixteen_bit_grey_to_8bit(image: Image.Image) -> Image.Image:
    """Mode L keeping the high byte of each 16-bit sample; LA when a tRNS grey level marks transparency."""
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    grey = Image.fromarray((values >> 8).astype(np.uint8))
    transparent_level = image.info.get("transparency")
    if not isinstance(transparent_level, int):
        return grey
    alpha = Image.fromarray(np.where(values == transparent_level, 0, 255).astype(np.uint8))
    return Image.merge("LA", (grey, alpha))


def _describe(source: str | os.PathLike | bytes, label: str) -> str:
    if isinstance(source, bytes):
        return label or "image bytes"
    return f"{label}: {source}" if label else str(source)
