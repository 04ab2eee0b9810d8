"""Stage `detect`: subject boxes on the clip's keyframe (its middle frame).

Backends: `motion` (offline: pixels that differ from the shot's temporal-median background, grouped
into connected regions; plus faces from scikit-image's LBP frontal-face cascade), `ground_truth`
(the procedural scene's boxes), `grounding_dino` (the Grounding DINO wrapper, prompted with the
caption's subject words). A clip with no subject is rejected with reason `no_subject`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kaleido_s2v.data.masks import mask_box, rle_encode
from kaleido_s2v.data.stages.base import (
    Context,
    Stage,
    StageResult,
    choose_backend,
    model_class,
    require,
    require_model_path,
)
from kaleido_s2v.data.stages.frames import keyframe_index, read_keyframe, read_shot_frames
from kaleido_s2v.data.synthetic import GroundTruth

Detections = tuple[list[dict], str]  # (detections, rejection reason; "" when the clip goes on)


@dataclass(frozen=True)
class DetectConfig:
    backend: str = "motion"
    max_subjects: int = 3
    # motion backend
    diff_threshold: int = 30  # max channel difference from the background, 0..255
    min_area: float = 0.004  # fraction of the frame
    faces: bool = True
    analysis_side: int = 480  # larger frames are downscaled to this longest side for motion and faces
    # grounding_dino backend
    model_path: str | None = None
    device: str = "cpu"
    box_threshold: float = 0.25
    text_threshold: float = 0.25


def motion_regions(
    background: np.ndarray, frame: np.ndarray, diff_threshold: int, min_area: float
) -> list[np.ndarray]:
    """Connected regions of `frame` that differ from `background`, largest first, as (H, W) bool masks."""
    import cv2

    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=-1)
    foreground = (diff > diff_threshold).astype(np.uint8)
    size = max(3, (min(frame.shape[:2]) // 32) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    minimum = min_area * frame.shape[0] * frame.shape[1]
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [labels == i for i in order if stats[i, cv2.CC_STAT_AREA] >= minimum]


def detect_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Frontal faces (x0, y0, x1, y1) by scikit-image's bundled LBP cascade."""
    from skimage import data as skdata
    from skimage.color import rgb2gray
    from skimage.feature import Cascade

    if min(image.shape[:2]) < 24:
        return []
    cascade = Cascade(skdata.lbp_frontal_face_cascade_filename())
    found = cascade.detect_multi_scale(
        img=rgb2gray(image),
        scale_factor=1.2,
        step_ratio=1,
        min_size=(24, 24),
        max_size=tuple(image.shape[:2]),
    )
    return [(f["c"], f["r"], f["c"] + f["width"], f["r"] + f["height"]) for f in found]


class DetectFromGroundTruth:
    """The procedural scene's subjects at the keyframe, with their exact boxes."""

    def __init__(self, config: DetectConfig):
        """Nothing to set: the scene's JSON beside the video holds every box."""

    def __call__(self, item: dict, context: Context, subjects: list[str]) -> Detections:
        truth = GroundTruth.for_video(item["source"])
        if truth is None:
            return [], "no_ground_truth"
        source_frame = item["source_frames"][keyframe_index(item)]
        detections = [
            {"label": s["label"], "box": [float(v) for v in s["box"]], "score": 1.0}
            for s in truth.subjects_at(source_frame)
        ]
        return detections, ""


class DetectFromMotion:
    """Regions of the keyframe that differ from the shot's temporal-median background, labelled with
    the caption's subject word when it names exactly one (else "object"); plus frontal faces."""

    def __init__(self, config: DetectConfig):
        self.config = config

    def __call__(self, item: dict, context: Context, subjects: list[str]) -> Detections:
        import cv2

        c = self.config
        frame = read_keyframe(context.run_dir, item)
        shot = read_shot_frames(item)
        height, width = frame.shape[:2]
        factor = max(1, int(np.ceil(max(height, width) / c.analysis_side)))
        size = (width // factor, height // factor)
        small = frame
        if factor > 1:
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            shot = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in shot])
        background = np.median(shot, axis=0).astype(np.uint8)
        label = subjects[0] if len(subjects) == 1 else "object"
        detections = []
        for region in motion_regions(background, small, c.diff_threshold, c.min_area):
            mask = region
            if factor > 1:  # back to full resolution
                mask = (
                    cv2.resize(region.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
                )
            box = mask_box(mask)
            detections.append(
                {
                    "label": label,
                    "box": [float(v) for v in box],
                    "score": float(mask.mean()),
                    "hint": rle_encode(mask),
                }
            )
        if c.faces:
            for box in detect_faces(small):
                detections.append({"label": "face", "box": [float(v * factor) for v in box], "score": 1.0})
        return detections, ""


class DetectWithGroundingDino:
    """The Grounding DINO wrapper on the keyframe, prompted with the caption's subject words; the
    model loads on the first clip."""

    def __init__(self, config: DetectConfig):
        require_model_path(DetectStage.name, config.backend, config.model_path)
        self.config = config
        self._model = None

    def __call__(self, item: dict, context: Context, subjects: list[str]) -> Detections:
        if not subjects:
            return [], "no_subject_words"
        c = self.config
        if self._model is None:
            self._model = model_class(DetectStage.name, "GroundingDinoDetector").from_pretrained(
                c.model_path, device=c.device, box_threshold=c.box_threshold, text_threshold=c.text_threshold
            )
        frame = read_keyframe(context.run_dir, item)
        detections = [
            {"label": d.label, "box": [float(v) for v in d.box], "score": float(d.score)}
            for d in self._model.detect(frame, list(subjects))
        ]
        return detections, ""


DETECTORS = {
    "motion": DetectFromMotion,
    "ground_truth": DetectFromGroundTruth,
    "grounding_dino": DetectWithGroundingDino,
}


class DetectStage(Stage):
    name = "detect"

    def __init__(self, config: DetectConfig):
        detector = choose_backend(self.name, config.backend, DETECTORS)
        require(self.name, "cv2", "skimage")
        self._detect = detector(config)
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        key = keyframe_index(item)
        source_frame = item["source_frames"][key]
        detections, rejection = self._detect(item, context, context.upstream["caption"].get("subjects", []))
        if rejection:
            return StageResult.reject(rejection)
        detections = sorted(detections, key=lambda d: -d["score"])[: self.config.max_subjects]
        data = {
            "keyframe": key,
            "source_frame": source_frame,
            "detections": detections,
            "source": Path(item["source"]).name,
        }
        if not detections:
            return StageResult.reject("no_subject", data)
        return StageResult.ok(data)
