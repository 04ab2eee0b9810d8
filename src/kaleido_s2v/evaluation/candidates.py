"""A localised subject in one frame: what every backend's `candidates` returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Candidate:
    """A proposal or detection: box (x0, y0, x1, y1) in frame pixels, (H, W) bool mask, and the
    detector's confidence (1.0 for offline proposals)."""

    box: tuple[float, float, float, float]
    mask: np.ndarray
    score: float


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
