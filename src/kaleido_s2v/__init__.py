"""kaleido-s2v: multi-subject reference-to-video generation (Kaleido on Wan2.1)."""

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names resolve lazily so `kaleido-s2v --help` and the data tools do not import torch.
_LAZY = {
    "KaleidoTransformer3DModel": "kaleido_s2v.models.transformer",
    "KaleidoPipeline": "kaleido_s2v.pipelines.kaleido",
}

if TYPE_CHECKING:
    from kaleido_s2v.models.transformer import KaleidoTransformer3DModel
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kaleido_s2v' has no attribute {name!r}")


__all__ = ["KaleidoTransformer3DModel", "KaleidoPipeline"]
