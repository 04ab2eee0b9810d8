"""Pose/appearance variation of a subject by re-painting its region with FLUX Fill.

The subject is cut out onto white, a box around it (enlarged so limbs can move) is repainted
from a prompt naming the subject, and the new subject mask is the non-white part of that box.
Everything outside the box stays pure white, so the result is a reference-style cut-out.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from kaleido_s2v.data.backends._common import MODELS_EXTRA, check_image, check_mask
from kaleido_s2v.data.backends.inpainting import FluxFillInpainter

POSE_PROMPT = "a {label} in a different pose, full view, isolated on a plain white background"


def expanded_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    """The mask's bounding box (x0, y0, x1, y1, exclusive ends) grown by `margin` of its size."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    grow_x, grow_y = round((x1 - x0) * margin), round((y1 - y0) * margin)
    height, width = mask.shape
    return max(0, x0 - grow_x), max(0, y0 - grow_y), min(width, x1 + grow_x), min(height, y1 + grow_y)


def non_white_mask(image: np.ndarray, region: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels inside `region` farther than `tolerance` from white, holes filled, largest part kept."""
    try:
        from scipy import ndimage
    except ImportError as error:
        raise ImportError(f"PoseVariator needs scipy (it comes with scikit-image): {MODELS_EXTRA}") from error

    mask = region & ((255 - image.astype(np.int16)).max(axis=-1) > tolerance)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


class PoseVariator:
    """Re-draw a masked subject in another pose; returns (cut-out on white, its new mask)."""

    def __init__(
        self,
        inpainter: FluxFillInpainter,
        prompt_template: str = POSE_PROMPT,
        margin: float = 0.15,
        white_tolerance: int = 24,
    ) -> None:
        if "{label}" not in prompt_template:
            raise ValueError(f"prompt_template {prompt_template!r} must contain '{{label}}'")
        if not 0.0 <= margin <= 1.0:
            raise ValueError(f"margin {margin} must be in [0, 1] (a fraction of the subject box)")
        self.inpainter = inpainter
        self.prompt_template = prompt_template
        self.margin = margin
        self.white_tolerance = white_tolerance

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        num_inference_steps: int = 50,
        guidance_scale: float = 30.0,
        max_side: int = 1024,
        margin: float = 0.15,
    ) -> PoseVariator:
        """Load a FluxFillPipeline folder (see `FluxFillInpainter.from_pretrained`)."""
        inpainter = FluxFillInpainter.from_pretrained(
            path_or_id,
            device=device,
            dtype=dtype,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            max_side=max_side,
        )
        return cls(inpainter, margin=margin)

    def vary(
        self, image: np.ndarray, mask: np.ndarray, seed: int, label: str = "subject"
    ) -> tuple[np.ndarray, np.ndarray]:
        """`image` (H, W, 3) uint8 and the subject's `mask` (H, W) bool → a new (H, W, 3) uint8
        cut-out on white and its (H, W) bool mask (inside the enlarged subject box)."""
        image = check_image(image)
        mask = check_mask(mask, image.shape[:2])
        if not mask.any():
            raise ValueError(
                "mask is empty; pass the subject's mask (H, W) bool with at least one True pixel"
            )
        cutout = np.full_like(image, 255)
        cutout[mask] = image[mask]
        x0, y0, x1, y1 = expanded_box(mask, self.margin)
        region = np.zeros_like(mask)
        region[y0:y1, x0:x1] = True
        varied = self.inpainter.inpaint(cutout, region, self.prompt_template.format(label=label), seed)
        new_mask = non_white_mask(varied, region, self.white_tolerance)
        varied = np.where(new_mask[..., None], varied, np.uint8(255))
        return varied, new_mask
