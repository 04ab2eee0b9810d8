"""Model-backed vision/language wrappers used by the data pipeline and evaluation.

Each class loads through the library that owns the model (transformers or diffusers) with
`from_pretrained(path_or_id, device="cpu", dtype=torch.float32, ...)`. Images are numpy
(H, W, 3) uint8 RGB. Names are imported lazily so `import kaleido_s2v.data.backends` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "Detection": "detection",
    "GroundingDinoDetector": "detection",
    "SamSegmenter": "segmentation",
    "ClipScorer": "similarity",
    "DinoV2Embedder": "similarity",
    "FluxFillInpainter": "inpainting",
    "Caption": "captioning",
    "VlmCaptioner": "captioning",
    "parse_caption": "captioning",
    "PoseVariator": "pose",
    "LaionAestheticPredictor": "aesthetics",
}

__all__ = [
    "Caption",
    "ClipScorer",
    "Detection",
    "DinoV2Embedder",
    "FluxFillInpainter",
    "GroundingDinoDetector",
    "LaionAestheticPredictor",
    "PoseVariator",
    "SamSegmenter",
    "VlmCaptioner",
    "parse_caption",
]

if TYPE_CHECKING:
    from kaleido_s2v.data.backends.aesthetics import LaionAestheticPredictor
    from kaleido_s2v.data.backends.captioning import Caption, VlmCaptioner, parse_caption
    from kaleido_s2v.data.backends.detection import Detection, GroundingDinoDetector
    from kaleido_s2v.data.backends.inpainting import FluxFillInpainter
    from kaleido_s2v.data.backends.pose import PoseVariator
    from kaleido_s2v.data.backends.segmentation import SamSegmenter
    from kaleido_s2v.data.backends.similarity import ClipScorer, DinoV2Embedder


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
