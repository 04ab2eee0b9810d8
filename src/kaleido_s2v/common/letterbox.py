"""Letterboxing (docs/model.md#3-reference-preprocessing): fit an image inside (height, width) keeping its aspect ratio, centred, padded.

One geometry for every image that is letterboxed: references at generation and in training, and the
reference images and subject masks that evaluation places into a frame. With r = image width / image
height, the image is resized to (W, int(W / r)) if r > W / H, else to (int(H * r), H) (at least 1 pixel
each way), and placed at left = (W - new width) // 2, top = (H - new height) // 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from kaleido_s2v.common.images import WHITE


@dataclass(frozen=True)
class Placement:
    """Where a letterboxed image sits on its (height, width) canvas, in pixels."""

    left: int
    top: int
    width: int
    height: int


def letterbox_placement(image_width: int, image_height: int, height: int, width: int) -> Placement:
    """The size and centred position of an image_width x image_height image fitted inside (height, width)."""
    ratio = image_width / image_height
    if ratio > width / height:
        new_width, new_height = width, max(1, int(width / ratio))
    else:
        new_width, new_height = max(1, int(height * ratio)), height
    return Placement((width - new_width) // 2, (height - new_height) // 2, new_width, new_height)


def letterbox(
    image: Image.Image,
    height: int,
    width: int,
    fill: int | tuple[int, ...] = WHITE,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """`image` resized with `resample` to fit inside (height, width) and pasted centred on a canvas of that
    size filled with `fill` (in the image's mode: white RGB for references, 0 for a mode "L" mask)."""
    placement = letterbox_placement(image.width, image.height, height, width)
    resized = image.resize((placement.width, placement.height), resample)
    canvas = Image.new(image.mode, (width, height), fill)
    canvas.paste(resized, (placement.left, placement.top))
    return canvas
