"""Evaluation settings: one frozen dataclass whose fingerprint keys the per-video cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from kaleido_s2v.common.hashing import json_digest

# Each backend's name and what its figures can be compared with (metrics.json's `comparability`).
BACKEND_NOTES = {
    "offline": "offline backend (colour histograms + HOG/SSIM, proposals from colour back-projection and "
    "motion): not comparable to model-backed figures",
    "model": "model backend (DINOv2 / CLIP / Grounding DINO / SAM)",
}
BACKENDS = tuple(BACKEND_NOTES)
LEADERBOARD_NOTE = (
    "not comparable to the leaderboard: OpenS2V-Eval scores with YOLO-World, GME and GPT-4o, "
    "this runner with the metrics of docs/metrics.md"
)


@dataclass(frozen=True)
class ModelPaths:
    """Local folders (or Hub ids) of the model backend's components; None leaves a metric out."""

    dinov2: str | None = None
    clip: str | None = None
    grounding_dino: str | None = None
    sam: str | None = None
    aesthetic: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    """What `eval` computes and how.

    num_frames: frames sampled uniformly from each video for consistency, decoupling, presence,
        identity, copy-paste and text alignment (motion uses every frame, see `flow_pairs`).
    presence_threshold: offline backend only; a frame counts as containing a subject when its best
        proposal's similarity to the reference reaches this value (the model backend uses the
        detector's own thresholds).
    stays_fraction: a centroid displacement under this fraction of the frame width is "stays".
    copy_paste_iou: IoU at or above which a frame's subject mask counts as the pasted reference.
    white_tolerance / no_background_fraction: docs/contracts.md#14-metrics-controls-and-ablations's "reference has no background" rule.
    flow_width: frames are resized to this width before optical flow.
    flow_pairs: at most this many adjacent-frame pairs (evenly spread) enter the motion metrics.
    """

    backend: str = "offline"
    num_frames: int = 16
    presence_threshold: float = 0.5
    stays_fraction: float = 0.05
    copy_paste_iou: float = 0.8
    white_tolerance: int = 10
    no_background_fraction: float = 0.95
    flow_width: int = 128
    flow_pairs: int = 64
    models: ModelPaths = field(default_factory=ModelPaths)
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {list(BACKENDS)}")
        if self.num_frames < 2:
            raise ValueError(f"num_frames {self.num_frames} must be at least 2 (motion direction needs two)")
        for name in ("presence_threshold", "stays_fraction", "copy_paste_iou", "no_background_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} is outside [0, 1]")
        if not 0 <= self.white_tolerance <= 255:
            raise ValueError(f"white_tolerance {self.white_tolerance} is outside 0..255")
        if self.flow_width < 16 or self.flow_pairs < 1:
            raise ValueError(
                f"flow_width {self.flow_width} must be ≥ 16 and flow_pairs {self.flow_pairs} ≥ 1"
            )

    @property
    def comparability(self) -> str:
        return BACKEND_NOTES[self.backend]

    def to_json(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """sha256 of every setting that changes a score (the device does not)."""
        payload = self.to_json()
        payload.pop("device")
        payload["version"] = METRICS_VERSION
        return json_digest(payload)[:16]


# Bump when a formula changes so cached per-video results are recomputed.
METRICS_VERSION = 1
