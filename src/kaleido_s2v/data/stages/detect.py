"""Stage `detect`: subject boxes on the clip's keyframe (its middle frame).

Backends: `motion` (offline, `moving_subjects`: pixels that differ from the shot's background once
the camera's motion is removed, grouped into regions and split where parts move differently; faces
from scikit-image's LBP frontal-face cascade are attributes of the subject around them,
`attach_faces`), `ground_truth` (the procedural scene's boxes), `grounding_dino` (the Grounding DINO
wrapper, prompted with the caption's subject words). A clip with no subject is rejected with reason
`no_subject`. Every result records the clip's `camera_motion` (`camera_motion.clip_camera_motion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kaleido_s2v.data.camera_motion import align_to, clip_camera_motion
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
from kaleido_s2v.data.stages.frames import keyframe_index, read_clip, read_keyframe, read_shot_frames
from kaleido_s2v.data.synthetic import GroundTruth

Detections = tuple[list[dict], str]  # (detections, rejection reason; "" when the clip goes on)
NEIGHBOUR_STEP = 2  # shot frames from the keyframe's anchor to the frame subjects' motion is read in
MIN_GROUP_TRACKS = 6  # corners that move together before they count as one subject's motion


@dataclass(frozen=True)
class DetectConfig:
    backend: str = "motion"
    max_subjects: int = 3
    # motion backend
    diff_threshold: int = 30  # max channel difference from the background, 0..255
    min_area: float = 0.004  # fraction of the frame
    faces: bool = True
    min_coverage: float = 0.5  # share of the shot's frames that must see a pixel for its background to count
    analysis_side: int = 480  # larger frames are downscaled to this longest side for motion, faces, camera
    # grounding_dino backend
    model_path: str | None = None
    device: str = "cpu"
    box_threshold: float = 0.25
    text_threshold: float = 0.25


def shot_background(aligned: np.ndarray, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """(background (H, W, 3) uint8, known (H, W) bool) from the shot's frames moved into the keyframe's
    view (aligned: (T, H, W, 3) float32, NaN where a frame does not reach; `camera_motion.align_to`):
    each pixel's median over the frames that cover it. A pixel that fewer than `min_share` of the frames
    cover is not `known`. Under a still camera this is the plain temporal median."""
    covered = (~np.isnan(aligned[..., 0])).sum(axis=0)
    known = covered >= max(1, min_share * len(aligned))
    background = np.zeros(aligned.shape[1:], np.uint8)
    background[known] = np.nanmedian(aligned[:, known], axis=0).round().astype(np.uint8)
    return background, known


def motion_regions(difference: np.ndarray, diff_threshold: int, min_area: float) -> list[np.ndarray]:
    """Moving regions of a frame, largest first, as (H, W) bool masks of at least `min_area` of it.

    A region's pixels are those whose `difference` (H, W) from the background exceeds `diff_threshold`
    (after a 3x3 opening that drops speckles, and a closing); pixels above half the threshold only
    join them: pixels that connect through them form one region, so a subject whose colours resemble
    the background in places is one region, not several fragments.
    """
    import cv2

    strong = cv2.morphologyEx(
        (difference > diff_threshold).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)
    )
    _, groups = cv2.connectedComponents((difference > diff_threshold // 2).astype(np.uint8))
    size = max(3, (min(difference.shape) // 32) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    minimum = min_area * difference.size
    regions = []
    for group in np.unique(groups[strong > 0]):
        region = cv2.morphologyEx(strong * (groups == group), cv2.MORPH_CLOSE, kernel) > 0
        if region.sum() >= minimum:
            regions.append(region)
    return sorted(regions, key=lambda r: -int(r.sum()))


def track_groups(
    frame: np.ndarray, later: np.ndarray, region: np.ndarray, tolerance: float = 1.0
) -> list[np.ndarray]:
    """Translations (2,) (dx, dy) of the groups of corners in `region` that move together from `frame`
    to `later` (both (H, W, 3) uint8, the camera's motion already removed), most tracks first.

    Corners are tracked with pyramidal Lucas-Kanade and kept when tracking back returns within a pixel;
    groups are found one after the other, each the largest set of remaining tracks whose displacements
    lie within `tolerance` px of one track's, and need `MIN_GROUP_TRACKS` tracks.
    """
    import cv2

    a = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(later, cv2.COLOR_RGB2GRAY)
    points = cv2.goodFeaturesToTrack(a, 200, 0.01, 3, mask=region.astype(np.uint8))
    if points is None:
        return []
    lk = {"winSize": (11, 11), "maxLevel": 3}
    forward, found, _ = cv2.calcOpticalFlowPyrLK(a, b, points, None, **lk)
    back, found_back, _ = cv2.calcOpticalFlowPyrLK(b, a, forward, None, **lk)
    good = (found.ravel() == 1) & (found_back.ravel() == 1)
    good &= np.linalg.norm((back - points).reshape(-1, 2), axis=1) < 1.0
    moves = (forward - points).reshape(-1, 2)[good]
    groups = []
    while len(moves) >= MIN_GROUP_TRACKS:
        near = np.linalg.norm(moves[None] - moves[:, None], axis=-1) <= tolerance  # (N, N)
        members = near[int(np.argmax(near.sum(axis=1)))]
        if members.sum() < MIN_GROUP_TRACKS:
            break
        groups.append(np.median(moves[members], axis=0))
        moves = moves[~members]
    return groups


def _largest_part(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The largest connected part of `mask` (H, W) bool after an opening with `kernel`."""
    import cv2

    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def split_by_motion(
    region: np.ndarray, frame: np.ndarray, later: np.ndarray, diff_threshold: int, min_pixels: int
) -> list[np.ndarray]:
    """`region` (H, W) bool split into the subjects that move differently in it, as (H, W) bool masks.

    Each group of corners that move together (`track_groups`, `frame` -> `later`) claims the pixels its
    translation explains: those whose colour reappears in `later` shifted by it (within half of
    `diff_threshold`, over a 3x3 neighbourhood), the group that explains a pixel best winning; a part
    is the largest connected piece of its pixels after an opening. A region stays whole unless at
    least two parts of `min_pixels` or more result. What no group explains is a part of its own only
    when it is at least as large as every group's part (a subject too plain to track moving next to
    one that is, not the fringe of a tracked one). Leftover pixels join the nearest part.
    """
    import cv2

    groups = track_groups(frame, later, region)
    if not groups:
        return [region]
    errors = []
    for dx, dy in groups:
        shifted = cv2.warpAffine(later, np.float32([[1, 0, -dx], [0, 1, -dy]]), later.shape[1::-1])
        error = np.abs(frame.astype(np.int16) - shifted).max(axis=-1).astype(np.float32)
        errors.append(cv2.blur(error, (3, 3)))
    errors = np.stack(errors)  # (G, H, W)
    owner = np.where(errors.min(axis=0) <= diff_threshold / 2, errors.argmin(axis=0) + 1, 0)
    kernel = np.ones((3, 3), np.uint8)
    parts = [_largest_part((owner == label) & region, kernel) for label in range(len(groups) + 1)]
    unexplained, parts = parts[0], [p for p in parts[1:] if p.sum() >= min_pixels]
    if parts and unexplained.sum() >= max(min_pixels, max(p.sum() for p in parts)):
        parts.append(unexplained)
    if len(parts) < 2:
        return [region]
    # every pixel of the region goes to the part nearest to it
    distances = np.stack([cv2.distanceTransform((~p).astype(np.uint8), cv2.DIST_L2, 3) for p in parts])
    nearest = distances.argmin(axis=0)
    return [region & (nearest == k) for k in range(len(parts))]


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


def moving_subjects(
    shot: np.ndarray, frame: np.ndarray, diff_threshold: int, min_area: float, min_coverage: float
) -> list[np.ndarray]:
    """The subjects moving in `frame` (H, W, 3) uint8, the keyframe of a shot whose frames are `shot`
    (T, H, W, 3) uint8 in time order, as (H, W) bool masks, largest region first.

    1. The shot's frames are moved into the keyframe's view (`camera_motion.align_to`), so a pan or
       zoom over a still scene leaves nothing behind.
    2. The background is their per-pixel median (`shot_background`); the residual motion is how far
       each keyframe pixel lies from it (largest channel difference; 0 where the background is unknown).
    3. It is grouped into regions (`motion_regions`), and each region is split where parts of it move
       differently between the keyframe and a shot frame `NEIGHBOUR_STEP` on (`split_by_motion`).
    """
    aligned, anchor = align_to(shot, frame)  # (T, H, W, 3) float32, NaN outside each frame's view
    background, known = shot_background(aligned, min_coverage)
    difference = np.where(known, np.abs(frame.astype(np.int16) - background).max(axis=-1), 0)
    step = NEIGHBOUR_STEP if anchor + NEIGHBOUR_STEP < len(aligned) else -min(anchor, NEIGHBOUR_STEP)
    neighbour = np.where(np.isnan(aligned[anchor + step]), frame, aligned[anchor + step]).astype(np.uint8)
    min_pixels = int(min_area * frame.shape[0] * frame.shape[1])
    return [
        part
        for region in motion_regions(difference, diff_threshold, min_area)
        for part in split_by_motion(region, frame, neighbour, diff_threshold, min_pixels)
    ]


def attach_faces(detections: list[dict], faces: list[list[float]]) -> list[dict]:
    """Faces (x0, y0, x1, y1) as attributes of the subjects they belong to, not subjects of their own.

    The rule: a face at least half of whose box lies inside a subject's box is that subject's face
    (recorded in its `faces`; the subject whose box holds most of it); any other face is a subject
    labelled "face".
    """
    out = [dict(d) for d in detections]
    for face in faces:
        area = (face[2] - face[0]) * (face[3] - face[1])
        inside = [_intersection(face, d["box"]) / area if area > 0 else 0.0 for d in detections]
        best = int(np.argmax(inside)) if inside else -1
        if best >= 0 and inside[best] >= 0.5:
            out[best].setdefault("faces", []).append(face)
        else:
            out.append({"label": "face", "box": face, "score": 1.0})
    return out


def _intersection(a: list[float], b: list[float]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


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
    """`moving_subjects` of the keyframe, labelled with the caption's subject word when it names exactly
    one (else "object"), each carrying its region as `hint`; frontal faces by `attach_faces`."""

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
        regions = moving_subjects(shot, small, c.diff_threshold, c.min_area, c.min_coverage)
        label = subjects[0] if len(subjects) == 1 else "object"
        detections = []
        for region in regions:
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
            faces = [[float(v * factor) for v in box] for box in detect_faces(small)]
            detections = attach_faces(detections, faces)
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
        camera = clip_camera_motion(read_clip(context.run_dir, item), self.config.analysis_side)
        data = {
            "keyframe": key,
            "source_frame": source_frame,
            "detections": detections,
            "camera_motion": camera.to_json(),
            "source": Path(item["source"]).name,
        }
        if not detections:
            return StageResult.reject("no_subject", data)
        return StageResult.ok(data)
