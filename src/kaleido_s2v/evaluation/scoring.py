"""Score one generated video against its case: the library call under `kaleido-s2v eval`.

The formulas are in docs/metrics.md; each function here names the metric it computes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kaleido_s2v.common.cases import Case
from kaleido_s2v.common.video_io import read_video
from kaleido_s2v.evaluation.candidates import Candidate, mask_iou
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.model_backend import ModelBackend
from kaleido_s2v.evaluation.motion import classify_displacement, expected_direction, flow_metrics
from kaleido_s2v.evaluation.offline import OfflineBackend
from kaleido_s2v.evaluation.references import (
    ReferenceImage,
    has_no_background,
    letterbox,
    letterbox_mask,
    load_reference,
)

MIN_FRAMES = 2  # motion amplitude, smoothness and direction compare frames
MIN_SIDE = 16  # px: the optical-flow window (15 px, motion.flow_metrics) must fit in a frame
SUBJECT_NOT_FOUND = "subject not found in the reference"


class Backend(Protocol):
    """What scoring asks of a backend; each backend states how it works through these attributes.

    name: recorded in every score (`VideoScore.backend`).
    analysis_width: the sampled frames are downscaled to this width before localisation (None: full size).
    presence_threshold_applies: True when its candidates are proposals, not detections, so the best
        one counts as the subject only at `EvalConfig.presence_threshold` similarity or more; False
        when a detector's own thresholds already decided that the subject is there.
    """

    name: str
    analysis_width: int | None
    presence_threshold_applies: bool

    def subject_mask(self, reference: ReferenceImage) -> np.ndarray | None:
        """(h, w) bool subject mask of the reference; None when the subject was not found in it."""

    def features(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list: ...
    def similarity_matrix(self, a: list, b: list) -> np.ndarray: ...
    def candidates(
        self, frames: np.ndarray, references: list[ReferenceImage]
    ) -> list[list[list[Candidate]]]: ...
    def background_similarity(
        self,
        reference: np.ndarray,
        reference_background: np.ndarray,
        frame: np.ndarray,
        frame_background: np.ndarray,
    ) -> float: ...
    def text_alignment(self, frames: np.ndarray, prompt: str) -> float | None: ...
    def aesthetics(self, frames: np.ndarray) -> float | None: ...


@dataclass
class SubjectScore:
    """One reference's figures in one video (None where a metric does not apply)."""

    label: str
    consistency: float  # mean over sampled frames of the best match's similarity (0 where absent)
    presence: float
    identity_correct: bool
    copy_paste: float  # fraction of sampled frames
    decoupling: float | None  # None: the reference has no background, or its subject was not found
    no_background: bool
    subject_found: bool  # False: SUBJECT_NOT_FOUND, so whether it has a background is unknown
    expected_direction: str | None
    observed_direction: str | None
    motion_correct: bool | None
    boxes: list[list[float] | None] = field(default_factory=list)  # per sampled frame, frame pixels


@dataclass
class VideoScore:
    """Every figure for one (video, case) pair, JSON-ready."""

    case_id: str
    video: str
    backend: str
    num_frames: int
    width: int
    height: int
    sampled_frames: list[int]
    subjects: list[SubjectScore]
    consistency: float
    presence: float
    decoupling: float | None
    no_background_references: int
    subject_not_found_references: int
    identity_accuracy: float
    attribute_swap: bool | None  # None for single-subject cases
    motion_accuracy: float | None
    copy_paste: float
    motion_amplitude: float | None
    motion_smoothness: float | None
    text_alignment: float | None
    aesthetics: float | None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> VideoScore:
        payload = dict(payload)
        payload["subjects"] = [SubjectScore(**subject) for subject in payload["subjects"]]
        return cls(**payload)


BACKEND_CONSTRUCTORS = {"offline": OfflineBackend.from_config, "model": ModelBackend.from_config}


def make_backend(config: EvalConfig) -> Backend:
    """The backend `config.backend` names (`BACKEND_CONSTRUCTORS`); the model backend loads its weights here."""
    return BACKEND_CONSTRUCTORS[config.backend](config)


def sample_indices(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly from the first to the last frame (fewer if the video is short)."""
    if num_frames <= 0:
        raise ValueError("a video with 0 frames cannot be scored")
    return sorted(set(np.linspace(0, num_frames - 1, min(count, num_frames)).round().astype(int).tolist()))


def check_video_fit(num_frames: int, width: int, height: int, name: str) -> None:
    """Raise ValueError naming the video when it is unfit for scoring: fewer than MIN_FRAMES frames
    (every motion metric compares frames), or a side under MIN_SIDE px (Farneback flow averages over a
    15-px window, SSIM over a 7-px one). Measured on the moving-ball scene scaled down: motion amplitude
    reads 0.004-0.016 from 128x96 down to 12x9, 0.075 at 8x6; a side under 7 px makes decoupling raise;
    2x2 scores motion 0 and decoupling 1.0. Neither backend needs more: both resize their crops."""
    if num_frames < MIN_FRAMES:
        raise ValueError(
            f"video {name} has {num_frames} frame(s); scoring needs at least {MIN_FRAMES} (motion compares frames)"
        )
    if min(width, height) < MIN_SIDE:
        raise ValueError(
            f"video {name} is {width}x{height}; scoring needs at least {MIN_SIDE} px a side "
            "(the optical-flow window is 15 px)"
        )


def _read_frames(path: Path) -> np.ndarray:
    """Decode a video file; FileNotFoundError when missing, ValueError naming it when empty (0 bytes),
    truncated or not a video."""
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"video {path} is empty (0 bytes)")
    frames, _ = read_video(path)
    return frames


def _resize_frames(frames: np.ndarray, width: int) -> np.ndarray:
    import cv2

    if frames.shape[2] <= width:
        return frames
    height = max(2, round(frames.shape[1] * width / frames.shape[2]))
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def score_video(
    video: str | os.PathLike | np.ndarray,
    case: Case,
    config: EvalConfig | None = None,
    backend: Backend | None = None,
) -> VideoScore:
    """Score one video (a path, or (F, H, W, 3) uint8 frames) against `case`'s references and prompt.

    Raises FileNotFoundError for a missing video or reference and ValueError naming the file for an
    unreadable, empty or truncated one, and for a video `check_video_fit` finds unfit.
    """
    config = config or EvalConfig()
    backend = backend or make_backend(config)
    if isinstance(video, np.ndarray):
        frames, name = video, "<frames>"
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    else:
        frames, name = _read_frames(Path(video)), str(Path(video))
    check_video_fit(len(frames), frames.shape[2], frames.shape[1], name)
    references = [load_reference(ref.path, ref.label) for ref in case.references]
    found = []
    for reference in references:
        mask = backend.subject_mask(reference)
        found.append(mask is not None)
        # Without its subject, the whole reference stands for it in the features and copy-paste.
        reference.subject = mask if mask is not None else np.ones(reference.image.shape[:2], bool)

    amplitude, smoothness = flow_metrics(frames, width=config.flow_width, max_pairs=config.flow_pairs)
    indices = sample_indices(len(frames), config.num_frames)
    sampled = frames[indices]  # (N, H, W, 3)
    if backend.analysis_width is not None:
        sampled = _resize_frames(sampled, backend.analysis_width)
    scale = frames.shape[2] / sampled.shape[2]  # analysis pixels → video pixels, for the report's boxes
    count, height, width = sampled.shape[:3]

    # 1. Localise: for each reference and frame, the candidate most similar to that reference.
    reference_features = backend.features([r.image for r in references], [r.subject for r in references])
    all_candidates = backend.candidates(sampled, references)
    best: list[list[Candidate | None]] = []  # [reference][frame]
    best_similarity = np.zeros((len(references), count))  # to its own reference
    crop_similarity = np.full(
        (len(references), count, len(references)), np.nan
    )  # best crop vs every reference
    for r, per_frame in enumerate(all_candidates):
        row: list[Candidate | None] = []
        for f, candidates in enumerate(per_frame):
            if not candidates:
                row.append(None)
                continue
            features = backend.features([sampled[f]] * len(candidates), [c.mask for c in candidates])
            similarity = backend.similarity_matrix(features, reference_features)  # (C, R)
            k = int(np.argmax(similarity[:, r]))
            present = not backend.presence_threshold_applies or similarity[k, r] >= config.presence_threshold
            row.append(candidates[k] if present else None)
            if present:
                best_similarity[r, f] = similarity[k, r]
                crop_similarity[r, f] = similarity[k]
        best.append(row)

    # 2. Per-subject figures.
    letterboxed = [letterbox(r.image, height, width) for r in references]
    placed = [letterbox_mask(r.subject, height, width) for r in references]  # (subject, inside)
    subject_masks = [
        np.any([c.mask for c in (best[r][f] for r in range(len(references))) if c is not None], axis=0)
        if any(best[r][f] is not None for r in range(len(references)))
        else np.zeros((height, width), bool)
        for f in range(count)
    ]
    subjects: list[SubjectScore] = []
    for r, reference in enumerate(references):
        present = [c is not None for c in best[r]]
        others = [j for j in range(len(references)) if j != r]
        closest_own = [
            present[f] and all(crop_similarity[r, f, r] > crop_similarity[r, f, j] for j in others)
            for f in range(count)
        ]
        iou_hits = [
            c is not None and mask_iou(c.mask, placed[r][0]) >= config.copy_paste_iou for c in best[r]
        ]
        # The no-background rule reads the pixels outside the subject: without a subject, neither the
        # rule nor decoupling can be judged.
        no_background = found[r] and has_no_background(
            reference, reference.subject, config.white_tolerance, config.no_background_fraction
        )
        decoupling = None
        if found[r] and not no_background:
            reference_background = ~placed[r][0] & placed[r][1]  # letterbox bars never count
            similarities = [
                backend.background_similarity(
                    letterboxed[r], reference_background, sampled[f], ~subject_masks[f]
                )
                for f in range(count)
            ]
            decoupling = 1.0 - float(np.mean(similarities))
        expected = expected_direction(case.prompt, reference.label, single_subject=len(references) == 1)
        observed = _observed_direction(best[r], width, config.stays_fraction)
        subjects.append(
            SubjectScore(
                label=reference.label,
                consistency=float(best_similarity[r].mean()),
                presence=float(np.mean(present)),
                identity_correct=bool(sum(closest_own) >= count / 2),
                copy_paste=float(np.mean(iou_hits)),
                decoupling=decoupling,
                no_background=bool(no_background),
                subject_found=found[r],
                expected_direction=expected,
                observed_direction=observed,
                motion_correct=None if expected is None else observed == expected,
                boxes=[None if c is None else [round(float(v) * scale, 1) for v in c.box] for c in best[r]],
            )
        )

    decoupled = [s.decoupling for s in subjects if s.decoupling is not None]
    judged = [s.motion_correct for s in subjects if s.motion_correct is not None]
    return VideoScore(
        case_id=case.id,
        video=name,
        backend=backend.name,
        num_frames=len(frames),
        width=int(frames.shape[2]),
        height=int(frames.shape[1]),
        sampled_frames=indices,
        subjects=subjects,
        consistency=float(np.mean([s.consistency for s in subjects])),
        presence=float(np.mean([s.presence for s in subjects])),
        decoupling=float(np.mean(decoupled)) if decoupled else None,
        no_background_references=int(sum(s.no_background for s in subjects)),
        subject_not_found_references=int(sum(not s.subject_found for s in subjects)),
        identity_accuracy=float(np.mean([s.identity_correct for s in subjects])),
        attribute_swap=_attribute_swap(crop_similarity) if len(references) > 1 else None,
        motion_accuracy=float(np.mean(judged)) if judged else None,
        copy_paste=float(np.mean([s.copy_paste for s in subjects])),
        motion_amplitude=amplitude,
        motion_smoothness=smoothness,
        text_alignment=backend.text_alignment(sampled, case.prompt),
        aesthetics=backend.aesthetics(sampled),
    )


def _observed_direction(row: list[Candidate | None], width: int, stays_fraction: float) -> str | None:
    """Direction of the subject's centroid from its first to its last present sampled frame."""
    centroids = []
    for candidate in row:
        if candidate is not None:
            ys, xs = np.nonzero(candidate.mask)
            centroids.append((xs.mean(), ys.mean()))
    if len(centroids) < 2:
        return None
    (x0, y0), (x1, y1) = centroids[0], centroids[-1]
    return classify_displacement(x1 - x0, y1 - y0, width, stays_fraction)


def _attribute_swap(crop_similarity: np.ndarray) -> bool:
    """True when some pair (i, j) has, in at least half the frames where both were found, i's crop
    closer to reference j than to i and j's crop closer to reference i than to j.

    crop_similarity: (R, N, R), NaN where a subject was not found.
    """
    subjects, frames = crop_similarity.shape[:2]
    for i in range(subjects):
        for j in range(i + 1, subjects):
            both = ~np.isnan(crop_similarity[i, :, i]) & ~np.isnan(crop_similarity[j, :, j])
            if not both.any():
                continue
            exchanged = (crop_similarity[i, :, j] > crop_similarity[i, :, i]) & (
                crop_similarity[j, :, i] > crop_similarity[j, :, j]
            )
            if exchanged[both].sum() >= both.sum() / 2:
                return True
    return False
