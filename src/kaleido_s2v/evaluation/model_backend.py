"""The model backend: Grounding DINO finds each subject by its label, SAM segments it (else its box
is the mask), DINOv2 (else CLIP) compares the crop with the reference; CLIP scores text alignment and
the LAION head aesthetics. `ModelBackend.models` says which of them ran. It uses the data pipeline's
wrappers in `kaleido_s2v.data.backends`."""

from __future__ import annotations

import hashlib

import numpy as np

from kaleido_s2v.data import backends  # cheap: the wrappers and torch load on first use of a name
from kaleido_s2v.evaluation.candidates import Candidate
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.references import ReferenceImage, near_white

_NEUTRAL_GREY = 128


def _fill_outside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask's bounding box with outside-mask pixels set to grey: what the embedder sees."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.full((16, 16, 3), _NEUTRAL_GREY, np.uint8)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y0:y1, x0:x1].copy()
    crop[~mask[y0:y1, x0:x1]] = _NEUTRAL_GREY
    if crop.shape[0] < 2 or crop.shape[1] < 2:
        crop = np.pad(
            crop, ((0, max(0, 2 - crop.shape[0])), (0, max(0, 2 - crop.shape[1])), (0, 0)), mode="edge"
        )
    return crop


class ModelBackend:
    """Model-backed subject localisation and similarity.

    detector: `GroundingDinoDetector`; segmenter: `SamSegmenter` or None (then the box is the mask);
    embedder: anything with `image_features(images) -> (N, D)` unit rows (DINOv2 or CLIP);
    clip: `ClipScorer` for text alignment, or None; aesthetic: `LaionAestheticPredictor` or None.
    """

    name = "model"
    analysis_width = None  # the models take the sampled frames at full size (their processors resize)
    presence_threshold_applies = False  # Grounding DINO's box and text thresholds decide presence

    def __init__(
        self, detector, segmenter, embedder, clip=None, aesthetic=None, white_tolerance: int = 10
    ) -> None:
        if detector is None or embedder is None:
            raise ValueError(
                "the model backend needs a Grounding DINO detector and a DINOv2 or CLIP embedder"
            )
        self.detector = detector
        self.segmenter = segmenter
        self.embedder = embedder
        self.clip = clip
        self.aesthetic = aesthetic
        self.white_tolerance = white_tolerance
        self._reference_backgrounds: dict[str, np.ndarray] = {}  # the last reference's embedding

    @classmethod
    def from_config(cls, config: EvalConfig) -> ModelBackend:
        """Load the folders `config.models` names; DINOv2 is the embedder, else CLIP."""
        import torch

        paths = config.models
        dtype = getattr(torch, config.dtype)
        if paths.grounding_dino is None:
            raise ValueError("the model backend needs --grounding-dino PATH (a Grounding DINO folder)")
        if paths.dinov2 is None and paths.clip is None:
            raise ValueError("the model backend needs --dinov2 PATH or --clip PATH to compare subjects")
        detector = backends.GroundingDinoDetector.from_pretrained(paths.grounding_dino, config.device, dtype)
        segmenter = (
            backends.SamSegmenter.from_pretrained(paths.sam, config.device, dtype) if paths.sam else None
        )
        clip = backends.ClipScorer.from_pretrained(paths.clip, config.device, dtype) if paths.clip else None
        embedder = (
            backends.DinoV2Embedder.from_pretrained(paths.dinov2, config.device, dtype)
            if paths.dinov2
            else clip
        )
        aesthetic = None
        if paths.aesthetic is not None:
            if paths.clip is None:
                raise ValueError(
                    "--aesthetic HEAD needs --clip PATH (the CLIP ViT-L/14 the LAION head was trained on)"
                )
            aesthetic = backends.LaionAestheticPredictor.from_pretrained(
                paths.clip, paths.aesthetic, config.device, dtype
            )
        return cls(
            detector,
            segmenter,
            embedder,
            clip=clip,
            aesthetic=aesthetic,
            white_tolerance=config.white_tolerance,
        )

    @property
    def models(self) -> dict[str, str]:
        """What runs in each role (metrics.json's `models`); a role without its model names what
        replaces it: boxes for SAM's masks, CLIP's image features for DINOv2's (identity and
        background features alike), nothing for text alignment and aesthetics."""
        return {
            "detection": "grounding_dino",
            "masks": "sam" if self.segmenter is not None else "boxes (no --sam given)",
            "identity_features": "clip (no --dinov2 given)" if self.embedder is self.clip else "dinov2",
            "text_alignment": "clip" if self.clip is not None else "not used (no --clip given)",
            "aesthetics": "laion head on clip"
            if self.aesthetic is not None
            else "not used (no --aesthetic given)",
        }

    def _detect(self, image: np.ndarray, label: str) -> list[Candidate]:
        detections = [d for d in self.detector.detect(image, [label]) if d.label == label]
        if not detections:
            return []
        height, width = image.shape[:2]
        if self.segmenter is not None:
            masks = self.segmenter.segment(image, [d.box for d in detections])  # (N, H, W) bool
        else:
            masks = np.zeros((len(detections), height, width), bool)
            for mask, d in zip(masks, detections, strict=True):
                x0, y0, x1, y1 = (int(round(v)) for v in d.box)
                mask[y0:y1, x0:x1] = True
        candidates = []
        for detection, mask in zip(detections, masks, strict=True):
            if not mask.any():  # an empty SAM mask: fall back to the box
                x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
                mask = np.zeros((height, width), bool)
                mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = True
            candidates.append(Candidate(box=tuple(detection.box), mask=mask, score=float(detection.score)))
        return candidates

    def subject_mask(self, reference: ReferenceImage) -> np.ndarray | None:
        """Alpha where the reference has it; the non-white pixels of a cut-out on white (its border
        ≥ 90% white); otherwise the best detection of its label, segmented; None when nothing of its
        label is detected (the subject was not found in the reference)."""
        if reference.has_alpha:
            return ~reference.transparent
        white = near_white(reference.image, self.white_tolerance)
        border = np.concatenate([white[0], white[-1], white[:, 0], white[:, -1]])
        if border.mean() >= 0.9 and not white.all():
            return ~white
        candidates = self._detect(reference.image, reference.label)
        if candidates:
            return max(candidates, key=lambda c: c.score).mask
        return None

    def features(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[np.ndarray]:
        if not images:
            return []
        crops = [_fill_outside(image, mask) for image, mask in zip(images, masks, strict=True)]
        return list(np.asarray(self.embedder.image_features(crops), dtype=np.float32))

    def similarity_matrix(self, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
        """Cosine similarity clipped to [0, 1]: (len(a), len(b))."""
        if not a or not b:
            return np.zeros((len(a), len(b)))
        return np.clip(np.stack(a) @ np.stack(b).T, 0.0, 1.0).astype(np.float64)

    def candidates(self, frames: np.ndarray, references: list[ReferenceImage]) -> list[list[list[Candidate]]]:
        return [[self._detect(frame, reference.label) for frame in frames] for reference in references]

    def background_similarity(
        self,
        reference: np.ndarray,
        reference_background: np.ndarray,
        frame: np.ndarray,
        frame_background: np.ndarray,
    ) -> float:
        """Cosine (clipped to [0, 1]) of the embeddings of the two images with their subjects greyed out.

        The reference's embedding is kept for the next frames (it is the same for every frame).
        """
        key = hashlib.sha1(reference.tobytes() + np.packbits(reference_background).tobytes()).hexdigest()
        if key not in self._reference_backgrounds:
            ref = reference.copy()
            ref[~reference_background] = _NEUTRAL_GREY
            self._reference_backgrounds = {
                key: np.asarray(self.embedder.image_features([ref]), np.float32)[0]
            }
        gen = frame.copy()
        gen[~frame_background] = _NEUTRAL_GREY
        features = np.asarray(self.embedder.image_features([gen]), dtype=np.float32)[0]
        return float(np.clip(self._reference_backgrounds[key] @ features, 0.0, 1.0))

    def text_alignment(self, frames: np.ndarray, prompt: str) -> float | None:
        """Mean over sampled frames of the CLIP cosine between frame and prompt; None without CLIP."""
        if self.clip is None:
            return None
        return float(np.asarray(self.clip.image_text_similarity(list(frames), [prompt]))[:, 0].mean())

    def aesthetics(self, frames: np.ndarray) -> float | None:
        """Mean LAION aesthetic score over sampled frames; None without the head."""
        if self.aesthetic is None:
            return None
        return float(np.asarray(self.aesthetic.score(list(frames))).mean())
