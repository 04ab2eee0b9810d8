"""Box-prompted segmentation with SAM or SAM2 (transformers).

SAM v1 uses its transformers processor (it runs without torchvision). SAM2's processor needs
torchvision, so for SAM2 this module does the processor's work itself: resize to the model's
square input, rescale and normalise, scale the boxes by the same factors, and upsample the
low-resolution mask logits back to the image size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kaleido_s2v.data.backends._common import (
    check_image,
    check_model_type,
    read_model_config,
    resolve_model_source,
    to_pil,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_boxes(boxes, width: int, height: int) -> np.ndarray:
    """(N, 4) float boxes x0, y0, x1, y1 in pixels, clipped to the image; N may be 0."""
    array = np.asarray([tuple(getattr(box, "box", box)) for box in boxes], dtype=np.float32).reshape(-1, 4)
    if array.size == 0:
        return array
    if not np.all(np.isfinite(array)):
        raise ValueError(f"boxes contain NaN or inf: {array.tolist()}")
    bad = np.nonzero((array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1]))[0]
    if bad.size:
        raise ValueError(
            f"box {int(bad[0])} = {array[bad[0]].tolist()} has x1 <= x0 or y1 <= y0; boxes are x0, y0, x1, y1"
        )
    array[:, 0::2] = array[:, 0::2].clip(0, width)
    array[:, 1::2] = array[:, 1::2].clip(0, height)
    return array


class SamSegmenter:
    """One boolean mask per box for a single image."""

    def __init__(self, model, kind: str, processor=None, preprocess: dict | None = None) -> None:
        mask_logits = {"sam": self._sam_logits, "sam2": self._sam2_logits}
        if kind not in mask_logits:
            raise ValueError(f"kind {kind!r} must be 'sam' or 'sam2'")
        if kind == "sam" and processor is None:
            raise ValueError("a SAM v1 model needs its SamProcessor")
        self.model = model.eval()
        self.kind = kind
        self._mask_logits = mask_logits[kind]
        self.processor = processor
        preprocess = preprocess or {}
        size = preprocess.get("size") or {}
        default = int(model.config.vision_config.backbone_config.image_size) if kind == "sam2" else 1024
        self.input_size = int(size.get("height", size.get("longest_edge", default)))
        self.mean = tuple(preprocess.get("image_mean", IMAGENET_MEAN))
        self.std = tuple(preprocess.get("image_std", IMAGENET_STD))
        self.mask_threshold = float(preprocess.get("mask_threshold", 0.0))

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> SamSegmenter:
        """Load a SAM (`model_type` "sam") or SAM2 (`"sam2"`) folder, by the loader `SAM_LOADERS` names."""
        source, local_dir = resolve_model_source(path_or_id)
        config = read_model_config(source, local_dir)
        kind = check_model_type(config, list(SAM_LOADERS), "SAM / SAM2 segmenter", source)
        return SAM_LOADERS[kind](source, local_dir, device, dtype)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def segment(self, image: np.ndarray, boxes: Sequence) -> np.ndarray:
        """Masks (N, H, W) bool for N boxes (x0, y0, x1, y1 pixels, or `Detection`s)."""
        image = check_image(image)
        height, width = image.shape[:2]
        box_array = check_boxes(boxes, width, height)
        if len(box_array) == 0:
            return np.zeros((0, height, width), dtype=bool)
        return (self._mask_logits(image, box_array) > self.mask_threshold).cpu().numpy()

    def _sam_logits(self, image: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        batch = self.processor(images=to_pil(image), input_boxes=[boxes.tolist()], return_tensors="pt")
        outputs = self.model(
            pixel_values=batch["pixel_values"].to(self.device, self.dtype),
            input_boxes=batch["input_boxes"].to(self.device, self.dtype),
            multimask_output=False,
        )
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(),
            batch["original_sizes"],
            batch["reshaped_input_sizes"],
            binarize=False,
        )[0]  # (N, 1, H, W) logits
        return masks[:, 0]

    def _sam2_logits(self, image: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        height, width = image.shape[:2]
        size = self.input_size
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
        pixels = torch.nn.functional.interpolate(
            pixels, size=(size, size), mode="bilinear", align_corners=False
        )
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        pixels = (pixels - mean) / std  # (1, 3, S, S)
        scale = torch.tensor([size / width, size / height, size / width, size / height])
        input_boxes = torch.from_numpy(boxes) * scale  # (N, 4) in the model's S x S frame
        outputs = self.model(
            pixel_values=pixels.to(self.device, self.dtype),
            input_boxes=input_boxes[None].to(self.device, self.dtype),  # (1, N, 4)
            multimask_output=False,
        )
        low_res = outputs.pred_masks[0, :, 0].float().cpu()  # (N, h, w) logits
        return torch.nn.functional.interpolate(
            low_res[:, None], size=(height, width), mode="bilinear", align_corners=False
        )[:, 0]  # (N, H, W)


def _load_sam(
    source: str, local_dir: Path | None, device: str | torch.device, dtype: torch.dtype
) -> SamSegmenter:
    from transformers import SamModel, SamProcessor

    model = SamModel.from_pretrained(source, dtype=dtype).to(device)
    return SamSegmenter(model, "sam", processor=SamProcessor.from_pretrained(source))


def _load_sam2(
    source: str, local_dir: Path | None, device: str | torch.device, dtype: torch.dtype
) -> SamSegmenter:
    from transformers import Sam2Model

    model = Sam2Model.from_pretrained(source, dtype=dtype).to(device)
    return SamSegmenter(model, "sam2", preprocess=_read_preprocessor_config(source, local_dir))


SAM_LOADERS = {"sam": _load_sam, "sam2": _load_sam2}  # model_type -> loader


def _read_preprocessor_config(source: str, local_dir: Path | None) -> dict:
    if local_dir is not None:
        path = local_dir / "preprocessor_config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    try:
        return read_model_config(source, None, "preprocessor_config.json")
    except Exception:  # a Hub folder without one: fall back to SAM2's defaults
        return {}
