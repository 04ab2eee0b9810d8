"""The offline backend: no model weights, only colour histograms, HOG and SSIM (OpenCV, scikit-image).

Appearance is compared over each subject's whole mask and over its interior (`interior`), reference
and proposals alike. A reference with a background is segmented by GrabCut anchored on its centre
(`reference_seeds`). Localisation never compares whole frames: in each sampled frame, proposals come
from (a) colour back-projection of the reference subject's histogram (Swain & Ballard's ratio
histogram, so colours common in the frame but rare in the subject are suppressed) and (b) motion
against the per-pixel temporal median of the sampled frames; each proposal is then ranked by its
similarity to the reference subject. Its figures are labelled "not comparable" to model-backed ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleido_s2v.data.mask_cleanup import solid_subject
from kaleido_s2v.evaluation.candidates import Candidate
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.references import ReferenceImage, near_white

EVAL_EXTRA = 'pip install "kaleido-s2v[eval]"'
CROP_SIZE = 64
HIST_BINS = 8  # per RGB channel: 512 bins; RGB rather than hue so white, grey and black subjects work
MAX_PROPOSALS_PER_SOURCE = 8
INTERIOR = 0.6  # a subject's interior: the ellipse inscribed in this central share of its box
CORE = 0.05  # half-axes of a reference's surely-subject centre, fractions of its height and width


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise ImportError(f"the offline evaluation backend needs OpenCV: {EVAL_EXTRA}") from error
    return cv2


@dataclass
class Appearance:
    """Appearance of a masked crop: colour histogram (512,) summing to 1, unit HOG vector, and a
    (64, 64) grey crop in [0, 1] for SSIM."""

    histogram: np.ndarray
    hog: np.ndarray
    gray: np.ndarray


@dataclass
class OfflineFeature:
    """A subject's appearance over its whole mask and over its `interior`."""

    whole: Appearance
    interior: Appearance


def colour_histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised 8x8x8 RGB histogram of the masked pixels, flattened to (512,)."""
    pixels = image[mask]
    if len(pixels) == 0:
        return np.zeros(HIST_BINS**3, dtype=np.float64)
    bins = (pixels // (256 // HIST_BINS)).astype(np.int64)
    index = (bins[:, 0] * HIST_BINS + bins[:, 1]) * HIST_BINS + bins[:, 2]
    histogram = np.bincount(index, minlength=HIST_BINS**3).astype(np.float64)
    return _smooth(histogram) / histogram.sum()


def _smooth(histogram: np.ndarray) -> np.ndarray:
    """Spread each bin over its neighbours ([1, 2, 1] / 4 along each colour axis), so a colour that
    video compression pushed across a bin edge still meets its reference bin. Keeps the total."""
    cube = histogram.reshape(HIST_BINS, HIST_BINS, HIST_BINS)
    for axis in range(3):
        padded = np.pad(cube, [(1, 1) if a == axis else (0, 0) for a in range(3)], mode="edge")
        before = np.take(padded, range(0, HIST_BINS), axis=axis)
        middle = np.take(padded, range(1, HIST_BINS + 1), axis=axis)
        after = np.take(padded, range(2, HIST_BINS + 2), axis=axis)
        cube = (before + 2 * middle + after) / 4.0
    return cube.reshape(-1)


def histogram_intersection(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum())


def masked_crop(image: np.ndarray, mask: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The mask's bounding box resized to (size, size): (crop (size, size, 3) uint8 with
    outside-mask pixels set to mid grey, mask (size, size) bool)."""
    cv2 = _cv2()
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return np.full((size, size, 3), 128, dtype=np.uint8), np.zeros((size, size), bool)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y0:y1, x0:x1].copy()
    crop[~mask[y0:y1, x0:x1]] = 128
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    crop_mask = (
        cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0
    )
    return crop, crop_mask


def _blurred_colours(crop: np.ndarray, mask: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Blur inside the mask only (normalised convolution), at the common crop scale: fine texture
    mixes into its average colour the same way in a reference and in a compressed video frame,
    where chroma subsampling has already mixed it."""
    cv2 = _cv2()
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    total = cv2.GaussianBlur(crop.astype(np.float32) * mask[..., None], (0, 0), sigma)
    return np.clip(total / np.maximum(weight, 1e-6)[..., None], 0, 255).astype(np.uint8)


def interior(mask: np.ndarray) -> np.ndarray:
    """The subject's interior: the pixels of `mask` (H, W) bool inside the ellipse inscribed in the
    central `INTERIOR` of its box (the whole mask when that leaves nothing). A segmentation's errors
    sit at its rim, where a reference's own background leaks in and where a video's proposal takes
    in its surroundings; interior to interior compares subject with subject."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return mask
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    ry, rx = INTERIOR * (y1 - y0) / 2, INTERIOR * (x1 - x0) / 2
    inside = ((yy - (y0 + y1) / 2) / ry) ** 2 + ((xx - (x0 + x1) / 2) / rx) ** 2 <= 1
    inner = np.zeros_like(mask, dtype=bool)
    inner[y0:y1, x0:x1] = inside & mask[y0:y1, x0:x1]
    return inner if inner.any() else mask


def offline_feature(image: np.ndarray, mask: np.ndarray) -> OfflineFeature:
    """The subject under `mask` (H, W) bool in `image` (H, W, 3), whole and interior."""
    return OfflineFeature(whole=appearance(image, mask), interior=appearance(image, interior(mask)))


def appearance(image: np.ndarray, mask: np.ndarray) -> Appearance:
    from skimage.feature import hog

    crop, crop_mask = masked_crop(image, mask)
    gray = crop.astype(np.float32).mean(axis=-1) / 255.0
    descriptor = hog(
        gray, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), feature_vector=True
    )
    norm = np.linalg.norm(descriptor)
    return Appearance(
        histogram=colour_histogram(_blurred_colours(crop, crop_mask), crop_mask),
        hog=(descriptor / norm if norm > 0 else descriptor).astype(np.float32),
        gray=gray,
    )


def offline_similarity(a: OfflineFeature, b: OfflineFeature) -> float:
    """In [0, 1]: the mean of the whole subjects' and the interiors' `appearance_similarity`. A
    reference whose own background leaked into its mask still matches its subject on the interior,
    and the whole keeps the outline, which tells a ball from a square of the same colours."""
    return (appearance_similarity(a.whole, b.whole) + appearance_similarity(a.interior, b.interior)) / 2


def appearance_similarity(a: Appearance, b: Appearance) -> float:
    """Mean of colour-histogram intersection, HOG cosine (clipped at 0) and SSIM (clipped at 0): in [0, 1]."""
    from skimage.metrics import structural_similarity

    colour = histogram_intersection(a.histogram, b.histogram)
    shape = max(0.0, float(a.hog @ b.hog))
    structure = max(0.0, float(structural_similarity(a.gray, b.gray, data_range=1.0)))
    return (colour + shape + structure) / 3.0


def offline_subject_mask(reference: ReferenceImage, white_tolerance: int) -> np.ndarray:
    """The reference's subject without a model: its alpha where it has one; the non-white pixels
    when its border is mostly white (a cut-out on white); otherwise GrabCut from `reference_seeds`,
    reduced to one solid part (`mask_cleanup.solid_subject`)."""
    cv2 = _cv2()
    image = reference.image
    height, width = image.shape[:2]
    if reference.has_alpha:
        return ~reference.transparent
    white = near_white(image, white_tolerance)
    border = np.concatenate([white[0], white[-1], white[:, 0], white[:, -1]])
    if border.mean() >= 0.9:
        mask = ~white
        kernel = np.ones((3, 3), np.uint8)
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
        return mask if mask.any() else ~white
    # GrabCut at ≤ 160 px (it is quadratic-ish in size), then back to full size.
    scale = min(1.0, 160.0 / max(height, width))
    small = cv2.resize(
        image, (max(2, round(width * scale)), max(2, round(height * scale))), interpolation=cv2.INTER_AREA
    )
    grab = reference_seeds(*small.shape[:2])
    cv2.setRNGSeed(0)
    cv2.grabCut(
        cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
        grab,
        None,
        np.zeros((1, 65), np.float64),
        np.zeros((1, 65), np.float64),
        3,
        cv2.GC_INIT_WITH_MASK,
    )
    small_mask = ((grab == cv2.GC_FGD) | (grab == cv2.GC_PR_FGD)).astype(np.uint8)
    mask = solid_subject(cv2.resize(small_mask, (width, height), interpolation=cv2.INTER_NEAREST) > 0)
    if not mask.any():  # GrabCut found nothing: fall back to the inset box itself
        mask = np.zeros((height, width), bool)
        mask[height // 10 : height - height // 10, width // 10 : width - width // 10] = True
    return mask


def reference_seeds(height: int, width: int) -> np.ndarray:
    """GrabCut's starting labels (height, width) uint8 for a reference with a background: the border
    (a tenth of each side) is background, the inset box probably subject, and a small central ellipse
    (`CORE` of each side across) surely subject. A reference centres its subject, so the core anchors
    GrabCut's subject colours on it rather than on whatever fills most of the inset box."""
    cv2 = _cv2()
    seeds = np.full((height, width), cv2.GC_BGD, np.uint8)
    seeds[height // 10 : height - height // 10, width // 10 : width - width // 10] = cv2.GC_PR_FGD
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    core = ((yy - height / 2) / (CORE * height)) ** 2 + ((xx - width / 2) / (CORE * width)) ** 2 <= 1
    seeds[core] = cv2.GC_FGD
    return seeds


def _components(mask: np.ndarray, min_area: int) -> list[np.ndarray]:
    cv2 = _cv2()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    kept = [labels == i for i in order if stats[i, cv2.CC_STAT_AREA] >= min_area]
    return kept[:MAX_PROPOSALS_PER_SOURCE]


def _clean(mask: np.ndarray, close_size: int) -> np.ndarray:
    cv2 = _cv2()
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_size, close_size))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel) > 0


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def back_projection(frame: np.ndarray, subject_histogram: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1]: min(subject histogram / frame histogram, 1) at each pixel's colour bin."""
    frame_histogram = colour_histogram(frame, np.ones(frame.shape[:2], bool))
    ratio = np.minimum(subject_histogram / np.maximum(frame_histogram, 1e-12), 1.0)
    bins = (frame // (256 // HIST_BINS)).astype(np.int64)
    index = (bins[..., 0] * HIST_BINS + bins[..., 1]) * HIST_BINS + bins[..., 2]
    return ratio[index]


class OfflineBackend:
    """Subject masks, proposals, features and background similarity without model weights."""

    name = "offline"
    analysis_width = 256  # px: it localises subjects in the sampled frames downscaled to this width
    presence_threshold_applies = True  # proposals are not detections: similarity decides presence

    def __init__(
        self, white_tolerance: int = 10, motion_threshold: int = 30, back_projection_threshold: float = 0.5
    ):
        self.white_tolerance = white_tolerance
        self.motion_threshold = motion_threshold
        self.back_projection_threshold = back_projection_threshold

    @classmethod
    def from_config(cls, config: EvalConfig) -> OfflineBackend:
        return cls(white_tolerance=config.white_tolerance)

    def subject_mask(self, reference: ReferenceImage) -> np.ndarray:
        return offline_subject_mask(reference, self.white_tolerance)

    def features(self, images: list[np.ndarray], masks: list[np.ndarray]) -> list[OfflineFeature]:
        return [offline_feature(image, mask) for image, mask in zip(images, masks, strict=True)]

    def similarity_matrix(self, a: list[OfflineFeature], b: list[OfflineFeature]) -> np.ndarray:
        """(len(a), len(b)) similarities in [0, 1]."""
        return np.array([[offline_similarity(x, y) for y in b] for x in a], dtype=np.float64).reshape(
            len(a), len(b)
        )

    def candidates(self, frames: np.ndarray, references: list[ReferenceImage]) -> list[list[list[Candidate]]]:
        """Proposals for each reference in each frame: [reference][frame] -> candidates.

        frames: (N, H, W, 3) uint8, the sampled frames.
        """
        count, height, width = frames.shape[:3]
        min_area = max(16, int(0.001 * height * width))
        close_size = max(3, (min(height, width) // 24) | 1)
        motion_masks: list[list[np.ndarray]] = [[] for _ in range(count)]
        if count >= 3:
            background = np.median(frames, axis=0).astype(np.int16)  # (H, W, 3)
            for index, frame in enumerate(frames):
                moving = np.abs(frame.astype(np.int16) - background).max(axis=-1) > self.motion_threshold
                motion_masks[index] = _components(_clean(moving, close_size), min_area)
        result: list[list[list[Candidate]]] = []
        for reference in references:
            histogram = colour_histogram(reference.image, reference.subject)
            per_frame = []
            for index, frame in enumerate(frames):
                likely = back_projection(frame, histogram) >= self.back_projection_threshold
                masks = _components(_clean(likely, close_size), min_area) + motion_masks[index]
                per_frame.append([Candidate(box=_box(mask), mask=mask, score=1.0) for mask in masks])
            result.append(per_frame)
        return result

    def background_similarity(
        self,
        reference: np.ndarray,
        reference_background: np.ndarray,
        frame: np.ndarray,
        frame_background: np.ndarray,
    ) -> float:
        """Similarity in [0, 1] of two backgrounds at the same size: the mean of colour-histogram
        intersection (over each one's own background pixels) and SSIM (clipped at 0) averaged over
        the pixels that are background in both."""
        from skimage.metrics import structural_similarity

        colour = histogram_intersection(
            colour_histogram(reference, reference_background), colour_histogram(frame, frame_background)
        )
        both = reference_background & frame_background
        if not both.any():
            return colour
        _, ssim_map = structural_similarity(
            reference.astype(np.float32).mean(-1) / 255.0,
            frame.astype(np.float32).mean(-1) / 255.0,
            data_range=1.0,
            full=True,
        )
        structure = max(0.0, float(ssim_map[both].mean()))
        return (colour + structure) / 2.0

    def text_alignment(self, frames: np.ndarray, prompt: str) -> float | None:
        return None  # needs CLIP: the model backend

    def aesthetics(self, frames: np.ndarray) -> float | None:
        return None  # needs the LAION predictor: the model backend
