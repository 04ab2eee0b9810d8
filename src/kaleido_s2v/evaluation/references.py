"""Reference images for evaluation: loading, SPEC §3 letterboxing, and the "no background" rule."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class ReferenceImage:
    """A case's reference as evaluation sees it.

    image: (h, w, 3) uint8 RGB, transparency composited on white by `images.on_white` (SPEC §3).
    transparent: (h, w) bool, pixels with alpha < 128 (all False for an opaque image).
    subject: (h, w) bool subject mask (filled in by a backend).
    """

    label: str
    path: Path
    image: np.ndarray
    transparent: np.ndarray
    subject: np.ndarray | None = None

    @property
    def has_alpha(self) -> bool:
        return bool(self.transparent.any())


def load_reference(path: str | os.PathLike, label: str) -> ReferenceImage:
    """Read an image file through `images.open_image` (EXIF orientation, 16-bit and modes mapped to
    8 bits); raise FileNotFoundError / ValueError naming the file when it cannot."""
    from kaleido_s2v.common.images import alpha_channel, on_white, open_image

    path = Path(path)
    opened = open_image(path, label=f"reference {label!r}")
    return ReferenceImage(
        label=label,
        path=path,
        image=np.asarray(on_white(opened)),
        transparent=alpha_channel(opened) < 128,
    )


def near_white(image: np.ndarray, tolerance: int) -> np.ndarray:
    """(H, W) bool: every channel within `tolerance` of 255."""
    return (image >= 255 - tolerance).all(axis=-1)


def has_no_background(
    reference: ReferenceImage, subject: np.ndarray, tolerance: int = 10, fraction: float = 0.95
) -> bool:
    """SPEC §11: ≥ `fraction` of the pixels outside the subject mask (before letterboxing) are
    transparent or within `tolerance`/255 of white. A subject filling the whole image has none."""
    outside = ~subject
    count = int(outside.sum())
    if count == 0:
        return True
    blank = (reference.transparent | near_white(reference.image, tolerance)) & outside
    return bool(blank.sum() / count >= fraction)


def letterbox_geometry(
    image_height: int, image_width: int, height: int, width: int
) -> tuple[int, int, int, int]:
    """SPEC §3's fit-inside-and-centre placement: (left, top, new_width, new_height)."""
    ratio = image_width / image_height
    if ratio > width / height:
        new_width, new_height = width, int(width / ratio)
    else:
        new_width, new_height = int(height * ratio), height
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    return (width - new_width) // 2, (height - new_height) // 2, new_width, new_height


def letterbox(image: np.ndarray, height: int, width: int, fill: int = 255) -> np.ndarray:
    """(h, w, 3) uint8 → (height, width, 3), resized (LANCZOS) to fit and padded centred with `fill`."""
    from PIL import Image

    left, top, new_width, new_height = letterbox_geometry(image.shape[0], image.shape[1], height, width)
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.LANCZOS))
    canvas = np.full((height, width, 3), fill, dtype=np.uint8)
    canvas[top : top + new_height, left : left + new_width] = resized
    return canvas


def letterbox_mask(mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Place an (h, w) bool mask as `letterbox` places its image.

    Returns (mask (height, width) bool, inside (height, width) bool: the non-bar area).
    """
    from PIL import Image

    left, top, new_width, new_height = letterbox_geometry(mask.shape[0], mask.shape[1], height, width)
    resized = np.asarray(
        Image.fromarray(mask.astype(np.uint8) * 255).resize((new_width, new_height), Image.NEAREST)
    )
    placed = np.zeros((height, width), dtype=bool)
    placed[top : top + new_height, left : left + new_width] = resized > 127
    inside = np.zeros((height, width), dtype=bool)
    inside[top : top + new_height, left : left + new_width] = True
    return placed, inside
