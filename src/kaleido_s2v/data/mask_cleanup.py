"""One rule for turning a rough segmentation into a subject's mask: one solid part."""

from __future__ import annotations

import numpy as np

GAP = 0.2  # widest gap closed, as a fraction of the mask's side


def solid_subject(mask: np.ndarray) -> np.ndarray:
    """`mask` (H, W) bool made one solid subject: gaps narrower than `GAP` of its side closed, then its
    largest 8-connected part, with the holes in it filled.

    A colour segmentation (GrabCut) splits a striped or patterned subject along the stripes that
    resemble the background, keeps stray islands of the subject's colours elsewhere in its window and
    opens holes; a subject cut out for a reference, or matched in a video, has none of these. The
    side is the square root of the mask's area. An empty mask stays empty.
    """
    import cv2

    if not mask.any():
        return np.asarray(mask, bool)
    size = max(3, int(GAP * np.sqrt(mask.sum())) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    closed = cv2.morphologyEx(np.pad(mask.astype(np.uint8), size), cv2.MORPH_CLOSE, kernel)[
        size:-size, size:-size
    ]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if count <= 1:
        return np.asarray(mask, bool)
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    outside = np.pad(largest, 1)
    cv2.floodFill(outside, None, (0, 0), 1)  # what the border's flood cannot reach is subject or hole
    return (largest > 0) | (outside[1:-1, 1:-1] == 0)
