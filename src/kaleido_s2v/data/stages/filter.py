"""Stage `filter`: keep the subjects (and clips) worth training on; every rejection has a reason.

Clip reasons: `dark`, `blurry`, `camera_motion` (the camera's net motion over the clip, `detect`'s
`camera_motion`, moves the frame's corners by more than `max_camera_motion` of its diagonal on
average), `no_subject_kept`. Subject reasons: `empty_mask`, `too_small`, `too_large`, `fragmented`,
`mostly_background` (less than `min_motion_share` of the mask's pixels lie in the detector's motion
region: most of it did not move with the subject; only for detections that carry a motion region),
`overlap`, `no_face` (a person-like label without a detected face), `low_similarity` (image–text
similarity of the crop and its label, `clip` backend only).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from kaleido_s2v.data.camera_motion import CameraMotion
from kaleido_s2v.data.masks import box_iou, rle_decode
from kaleido_s2v.data.stages.base import (
    Context,
    Stage,
    StageResult,
    choose_backend,
    model_class,
    require,
    require_model_path,
)
from kaleido_s2v.data.stages.detect import detect_faces
from kaleido_s2v.data.stages.frames import read_keyframe

PEOPLE_WORDS = ("person", "man", "woman", "boy", "girl", "child", "people", "lady", "guy", "human")


@dataclass(frozen=True)
class FilterConfig:
    backend: str = "offline"
    min_area: float = 0.01  # mask area as a fraction of the frame
    max_area: float = 0.9
    max_overlap_iou: float = 0.5  # box IoU between two subjects; the lower-scored one is dropped
    max_fragments_share: float = 0.3  # share of the mask outside its largest connected part
    require_face_for_people: bool = True
    dark_threshold: float = 20.0  # mean luma below this rejects the clip
    blur_threshold: float = 5.0  # Laplacian variance below this rejects the clip
    # mean travel of the frame's corners over the clip, fraction of its diagonal; a slow pan (a third
    # of the frame in 2 s) is about 0.3: beyond 0.5 too little of the keyframe stays in view for the
    # residual motion to tell subjects from background
    max_camera_motion: float = 0.5
    min_motion_share: float = 0.5  # share of a subject's mask inside its motion region
    min_similarity: float = 0.2  # clip backend
    model_path: str | None = None
    device: str = "cpu"


def colour_histogram(image: np.ndarray, mask: np.ndarray) -> list[float]:
    """L1-normalised 8x4x4 HSV histogram of the masked pixels (the offline appearance descriptor)."""
    import cv2

    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], mask.astype(np.uint8), [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
    total = hist.sum()
    return (hist / total).round(6).tolist() if total else hist.tolist()


def largest_part_share(mask: np.ndarray) -> float:
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0.0
    return float(stats[1:, cv2.CC_STAT_AREA].max() / mask.sum())


def motion_share(mask: np.ndarray, region: np.ndarray) -> float:
    """Share of the mask's pixels (both (H, W) bool) that lie in the detector's motion region."""
    total = int(mask.sum())
    return float((mask & region).sum() / total) if total else 0.0


def is_person(label: str) -> bool:
    words = label.lower().replace(",", " ").split()
    return any(w in PEOPLE_WORDS or w.rstrip("s") in PEOPLE_WORDS for w in words)


class KeepEverySubject:
    """The `offline` backend adds no check to the geometric and face rules."""

    def __init__(self, config: FilterConfig):
        """Nothing to set."""

    def __call__(self, image: np.ndarray, kept: list[dict]) -> tuple[list[dict], list[dict]]:
        return kept, []


class ClipLabelSimilarity:
    """The `clip` backend: a subject whose masked crop (on white) is less similar than
    `min_similarity` to "a photo of a <label>" is dropped as `low_similarity`; the model loads on the
    first clip. Each kept subject records its similarity."""

    def __init__(self, config: FilterConfig):
        self.model_path = require_model_path(FilterStage.name, config.backend, config.model_path)
        self.device, self.min_similarity = config.device, config.min_similarity
        self._model = None

    def __call__(self, image: np.ndarray, kept: list[dict]) -> tuple[list[dict], list[dict]]:
        """(subjects still kept, rejections) of the subjects `kept` so far."""
        if not kept:
            return kept, []
        if self._model is None:
            self._model = model_class(FilterStage.name, "ClipScorer").from_pretrained(
                self.model_path, device=self.device
            )
        crops = []
        for s in kept:
            x0, y0, x1, y1 = (int(round(v)) for v in s["box"])
            mask = rle_decode(s["mask"])[y0:y1, x0:x1]
            crops.append(np.where(mask[..., None], image[y0:y1, x0:x1], 255).astype(np.uint8))
        scores = np.asarray(
            self._model.image_text_similarity(crops, [f"a photo of a {s['label']}" for s in kept])
        )
        still, rejected = [], []
        for i, s in enumerate(kept):
            s["similarity"] = round(float(scores[i, i]), 6)
            if s["similarity"] < self.min_similarity:
                rejected.append({"label": s["label"], "reason": "low_similarity"})
            else:
                still.append(s)
        return still, rejected


SUBJECT_CHECKS = {"offline": KeepEverySubject, "clip": ClipLabelSimilarity}


class FilterStage(Stage):
    name = "filter"

    def __init__(self, config: FilterConfig):
        check = choose_backend(self.name, config.backend, SUBJECT_CHECKS)
        require(self.name, "cv2", "skimage")
        self._check_subjects = check(config)
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        import cv2

        c = self.config
        detected, segmented = context.upstream["detect"], context.upstream["segment"]
        image = read_keyframe(context.run_dir, item)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        quality = {
            "luma": round(float(grey.mean()), 3),
            "sharpness": round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 3),
        }
        camera = CameraMotion.from_json(detected["camera_motion"])
        quality["camera_travel"] = round(camera.travel(image.shape[1], image.shape[0]), 4)
        base = {
            "keyframe": detected["keyframe"],
            "source_frame": detected["source_frame"],
            "quality": quality,
        }
        if quality["luma"] < c.dark_threshold:
            return StageResult.reject("dark", base)
        if quality["sharpness"] < c.blur_threshold:
            return StageResult.reject("blurry", base)
        if quality["camera_travel"] > c.max_camera_motion:
            return StageResult.reject("camera_motion", base)
        frame_area = image.shape[0] * image.shape[1]
        candidates, rejected = [], []
        for d, rle in zip(detected["detections"], segmented["masks"], strict=True):
            mask = rle_decode(rle)
            area = mask.sum() / frame_area
            reason = ""
            if mask.sum() == 0:
                reason = "empty_mask"
            elif area < c.min_area:
                reason = "too_small"
            elif area > c.max_area:
                reason = "too_large"
            elif 1 - largest_part_share(mask) > c.max_fragments_share:
                reason = "fragmented"
            elif "hint" in d and motion_share(mask, rle_decode(d["hint"])) < c.min_motion_share:
                reason = "mostly_background"
            elif c.require_face_for_people and is_person(d["label"]):
                x0, y0, x1, y1 = (int(round(v)) for v in d["box"])
                if not detect_faces(image[y0:y1, x0:x1]):
                    reason = "no_face"
            if reason:
                rejected.append({"label": d["label"], "reason": reason})
            else:
                candidates.append(
                    {
                        **{k: d[k] for k in ("label", "box", "score", "faces") if k in d},
                        "mask": rle,
                        "area": round(float(area), 6),
                    }
                )
        kept: list[dict] = []
        for cand in sorted(candidates, key=lambda s: -s["score"]):
            if any(box_iou(cand["box"], k["box"]) > c.max_overlap_iou for k in kept):
                rejected.append({"label": cand["label"], "reason": "overlap"})
            else:
                kept.append(cand)
        kept, dropped = self._check_subjects(image, kept)
        rejected += dropped
        for s in kept:
            s["histogram"] = colour_histogram(image, rle_decode(s["mask"]))
        data = {**base, "subjects": kept, "rejected_subjects": rejected}
        if not kept:
            return StageResult.reject("no_subject_kept", data)
        return StageResult.ok(data)

    def funnel_details(self, rows: dict[str, dict]) -> dict:
        """How many subjects were dropped, by reason."""
        subjects = [s for row in rows.values() for s in json.loads(row["data"]).get("rejected_subjects", [])]
        return {"subjects_dropped": dict(sorted(Counter(s["reason"] for s in subjects).items()))}
