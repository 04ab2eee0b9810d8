"""Motion metrics: optical-flow amplitude and smoothness, and the caption's expected direction."""

from __future__ import annotations

import re

import numpy as np

_DIRECTION_WORDS = {
    "left": {"left", "leftward", "leftwards"},
    "right": {"right", "rightward", "rightwards"},
    "up": {"up", "upward", "upwards", "rises", "rising", "climbs", "climbing", "ascends", "ascending"},
    "down": {"down", "downward", "downwards", "falls", "falling", "descends", "descending", "drops", "sinks"},
    "stays": {"stays", "still", "stationary", "static", "motionless", "remains", "unmoving"},
}
_CLAUSE_SPLIT = re.compile(r"[.;,!?]|\bwhile\b|\band\b|\bwhereas\b")


def _gray(frames: np.ndarray, width: int) -> list[np.ndarray]:
    import cv2

    height = max(2, round(frames.shape[1] * width / frames.shape[2]))
    return [
        cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (width, height), interpolation=cv2.INTER_AREA)
        for f in frames
    ]


def flow_metrics(
    frames: np.ndarray, width: int = 128, max_pairs: int = 64
) -> tuple[float | None, float | None]:
    """(amplitude, smoothness) from Farneback flow between adjacent frames.

    frames: (F, H, W, 3) uint8, every frame of the video. Pairs (t, t+1) are spread evenly over the
    clip, at most `max_pairs`. amplitude = mean over pairs and pixels of |flow| / frame width (per
    frame step); smoothness = 1 − mean over pairs of mean |frame_t − warp(frame_{t+1}, flow)| / 255.
    A one-frame video has neither (None, None).
    """
    import cv2

    if len(frames) < 2:
        return None, None
    gray = _gray(frames, min(width, frames.shape[2]))
    height, width_px = gray[0].shape
    starts = np.unique(np.linspace(0, len(frames) - 2, min(max_pairs, len(frames) - 1)).round().astype(int))
    grid_x, grid_y = np.meshgrid(np.arange(width_px, dtype=np.float32), np.arange(height, dtype=np.float32))
    amplitudes, errors = [], []
    for t in starts:
        flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (h, w, 2)
        amplitudes.append(float(np.linalg.norm(flow, axis=-1).mean()) / width_px)
        warped = cv2.remap(
            gray[t + 1],
            grid_x + flow[..., 0],
            grid_y + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        errors.append(float(np.abs(gray[t].astype(np.float32) - warped.astype(np.float32)).mean()) / 255.0)
    return float(np.mean(amplitudes)), 1.0 - float(np.mean(errors))


def classify_displacement(dx: float, dy: float, frame_width: int, stays_fraction: float = 0.05) -> str:
    """left / right / up / down / stays for a centroid displacement in pixels (y grows downwards)."""
    if max(abs(dx), abs(dy)) < stays_fraction * frame_width:
        return "stays"
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def expected_direction(prompt: str, label: str, single_subject: bool) -> str | None:
    """The direction the caption gives this subject, or None when it names none or several.

    Reads the clauses (split at punctuation, 'and', 'while') that mention the label's last word;
    a single-subject case falls back to the whole prompt when no clause names the label.
    """
    head = label.lower().split()[-1] if label.strip() else ""
    clauses = [c for c in _CLAUSE_SPLIT.split(prompt.lower()) if c.strip()]
    words_of = [set(re.findall(r"[a-z]+", clause)) for clause in clauses]
    chosen = [words for words in words_of if head and (head in words or head + "s" in words)]
    if not chosen and single_subject:
        chosen = [set(re.findall(r"[a-z]+", prompt.lower()))]
    found = {d for words in chosen for d, vocabulary in _DIRECTION_WORDS.items() if words & vocabulary}
    return found.pop() if len(found) == 1 else None
