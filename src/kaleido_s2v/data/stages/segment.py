"""Stage `segment`: one mask per detected subject on the keyframe.

Backends: `grabcut` (offline: OpenCV GrabCut seeded by the box, and by the motion region when the
detector found one, then made one solid part), `ground_truth` (the procedural scene's masks), `sam`
(the SAM wrapper, box prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleido_s2v.data.mask_cleanup import solid_subject
from kaleido_s2v.data.masks import rle_decode, rle_encode
from kaleido_s2v.data.stages.base import (
    Context,
    Stage,
    StageResult,
    choose_backend,
    model_class,
    require,
    require_model_path,
)
from kaleido_s2v.data.stages.frames import read_keyframe
from kaleido_s2v.data.synthetic import GroundTruth

Masks = tuple[list[np.ndarray], str]  # ((H, W) bool mask per detection, rejection reason; "" to go on)


@dataclass(frozen=True)
class SegmentConfig:
    backend: str = "grabcut"
    iterations: int = 5
    max_side: int = 320  # GrabCut windows longer than this are segmented downscaled
    model_path: str | None = None
    device: str = "cpu"


def grabcut(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    hint: np.ndarray | None,
    iterations: int,
    context: float = 0.5,
    max_side: int = 320,
) -> np.ndarray:
    """(H, W) bool mask of the object in `box`; `hint` (H, W) bool marks probable foreground.

    GrabCut runs on a window around the box (the box grown by `context` of its size on each side),
    which is where its background model needs samples from; the rest of the frame stays background.
    Windows longer than `max_side` are segmented downscaled.
    """
    import cv2

    height, width = image.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    result = np.zeros((height, width), bool)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return result
    mx, my = max(4, int((x1 - x0) * context)), max(4, int((y1 - y0) * context))
    wx0, wy0, wx1, wy1 = max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)
    window = np.ascontiguousarray(image[wy0:wy1, wx0:wx1, ::-1])  # BGR for OpenCV
    inside = np.zeros(window.shape[:2], bool)
    inside[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = True
    seed = np.full(window.shape[:2], cv2.GC_BGD, np.uint8)
    local_hint = hint[wy0:wy1, wx0:wx1] & inside if hint is not None else None
    if local_hint is not None and local_hint.any():
        seed[inside] = cv2.GC_PR_BGD
        seed[local_hint] = cv2.GC_PR_FGD
        core = cv2.erode(local_hint.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        seed[core] = cv2.GC_FGD
    else:
        seed[inside] = cv2.GC_PR_FGD
    if (seed == cv2.GC_BGD).sum() < 8:  # the box covers the frame: GrabCut needs background samples
        result[y0:y1, x0:x1] = True
        return result
    window_height, window_width = seed.shape
    factor = max(1, int(np.ceil(max(window_height, window_width) / max_side)))
    if factor > 1:  # large windows: GrabCut at a lower resolution, the mask upsampled back
        size = (max(2, window_width // factor), max(2, window_height // factor))
        window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
        seed = cv2.resize(seed, size, interpolation=cv2.INTER_NEAREST)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means on OpenCV's global RNG: reset it so a mask does not
    # depend on what the process segmented before (resumed and parallel runs must give the same masks)
    cv2.setRNGSeed(0)
    cv2.grabCut(window, seed, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    foreground = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).astype(np.uint8)
    if factor > 1:
        foreground = cv2.resize(foreground, (window_width, window_height), interpolation=cv2.INTER_NEAREST)
    result[wy0:wy1, wx0:wx1] = foreground.astype(bool) & inside
    return result


class SegmentFromGroundTruth:
    """The procedural scene's mask of each detected label at the keyframe (empty for other labels)."""

    def __init__(self, config: SegmentConfig):
        """Nothing to set: the scene's JSON beside the video holds every mask."""

    def __call__(self, item: dict, context: Context, detected: dict) -> Masks:
        truth = GroundTruth.for_video(item["source"])
        if truth is None:
            return [], "no_ground_truth"
        by_label = {s["label"]: s["mask"] for s in truth.subjects_at(detected["source_frame"])}
        height, width = item["height"], item["width"]
        empty = np.zeros((height, width), bool)
        masks = [by_label.get(d["label"], empty)[:height, :width] for d in detected["detections"]]
        return masks, ""


class SegmentWithGrabCut:
    """OpenCV GrabCut in each box of the keyframe, seeded by the detector's motion region if any, made
    one solid part (`mask_cleanup.solid_subject`)."""

    def __init__(self, config: SegmentConfig):
        self.iterations, self.max_side = config.iterations, config.max_side

    def __call__(self, item: dict, context: Context, detected: dict) -> Masks:
        image = read_keyframe(context.run_dir, item)
        masks = []
        for d in detected["detections"]:
            hint = rle_decode(d["hint"]) if "hint" in d else None
            mask = grabcut(image, tuple(d["box"]), hint, self.iterations, max_side=self.max_side)
            masks.append(solid_subject(mask))
        return masks, ""


class SegmentWithSam:
    """The SAM wrapper on the keyframe, prompted with the boxes; the model loads on the first clip."""

    def __init__(self, config: SegmentConfig):
        self.model_path = require_model_path(SegmentStage.name, config.backend, config.model_path)
        self.device = config.device
        self._model = None

    def __call__(self, item: dict, context: Context, detected: dict) -> Masks:
        if self._model is None:
            self._model = model_class(SegmentStage.name, "SamSegmenter").from_pretrained(
                self.model_path, device=self.device
            )
        image = read_keyframe(context.run_dir, item)
        boxes = [tuple(d["box"]) for d in detected["detections"]]
        return list(np.asarray(self._model.segment(image, boxes), dtype=bool)), ""


SEGMENTERS = {"grabcut": SegmentWithGrabCut, "ground_truth": SegmentFromGroundTruth, "sam": SegmentWithSam}


class SegmentStage(Stage):
    name = "segment"

    def __init__(self, config: SegmentConfig):
        segmenter = choose_backend(self.name, config.backend, SEGMENTERS)
        require(self.name, "cv2")
        self._segment = segmenter(config)
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        masks, rejection = self._segment(item, context, context.upstream["detect"])
        if rejection:
            return StageResult.reject(rejection)
        return StageResult.ok(
            {"masks": [rle_encode(m) for m in masks], "areas": [int(m.sum()) for m in masks]}
        )
