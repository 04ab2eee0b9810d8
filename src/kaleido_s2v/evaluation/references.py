"""Reference images for evaluation: loading, letterboxing (docs/model.md#3-reference-preprocessing) and the
"no background" rule."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kaleido_s2v.common import letterbox as letterboxing
from kaleido_s2v.common.images import alpha_channel, on_white, open_image


@dataclass
class ReferenceImage:
    """A case's reference as evaluation sees it.

    image: (h, w, 3) uint8 RGB, transparency composited on white by `images.on_white` (docs/model.md#3-reference-preprocessing).
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
    """docs/contracts.md#14-metrics-controls-and-ablations: ≥ `fraction` of the pixels outside the subject mask (before letterboxing) are
    transparent or within `tolerance`/255 of white. A subject filling the whole image has none."""
    outside = ~subject
    count = int(outside.sum())
    if count == 0:
        return True
    blank = (reference.transparent | near_white(reference.image, tolerance)) & outside
    return bool(blank.sum() / count >= fraction)


def letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3): docs/model.md#3-reference-preprocessing's letterbox (`common.letterbox`), LANCZOS and white bars."""
    return np.asarray(letterboxing.letterbox(Image.fromarray(image), height, width))


def letterbox_mask(mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Place an (h, w) bool mask where `letterbox` places its image (nearest-neighbour resize).

    Returns (mask (height, width) bool, inside (height, width) bool: the non-bar area).
    """
    grey = Image.fromarray(mask.astype(np.uint8) * 255)  # mode "L", 0 or 255
    boxed = letterboxing.letterbox(grey, height, width, fill=0, resample=Image.Resampling.NEAREST)
    placed = np.asarray(boxed) > 127
    box = letterboxing.letterbox_placement(mask.shape[1], mask.shape[0], height, width)
    inside = np.zeros((height, width), dtype=bool)
    inside[box.top : box.top + box.height, box.left : box.left + box.width] = True
    return placed, inside
