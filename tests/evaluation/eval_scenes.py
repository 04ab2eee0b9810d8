"""Procedural subjects, backgrounds and videos with known answers for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from kaleido_s2v.common.video_io import write_video

HEIGHT, WIDTH = 96, 128
RED, BLUE, YELLOW = (220, 30, 30), (30, 60, 220), (240, 220, 40)


def striped_ball(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The subject: a red disc with blue horizontal stripes and a yellow centre. Returns (image, mask)."""
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    radius = np.hypot(yy - centre, xx - centre)
    mask = radius <= size / 2 - 0.5
    image = np.full((size, size, 3), 255, np.uint8)
    image[mask] = RED
    stripes = mask & ((yy * 6 // size) % 2 == 1)
    image[stripes] = BLUE
    image[radius <= size / 8] = YELLOW
    return image, mask


def block_square(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A distractor with exactly the ball's colour histogram: its pixels sorted into a square."""
    ball, mask = striped_ball(size)
    colours = ball[mask]
    colours = colours[np.lexsort(colours.T[::-1])]
    side = int(np.ceil(np.sqrt(len(colours))))
    image = np.full((side, side, 3), 255, np.uint8)
    flat = image.reshape(-1, 3)
    flat[: len(colours)] = colours
    square_mask = np.zeros((side, side), bool)
    square_mask.reshape(-1)[: len(colours)] = True
    return image, square_mask


def green_background(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    frame[..., 0] = 40 + 20 * np.sin(xx / 9.0)
    frame[..., 1] = 140 + 40 * np.cos(yy / 11.0)
    frame[..., 2] = 60 + rng.integers(0, 10, (HEIGHT, WIDTH))
    return frame


def structured_background() -> np.ndarray:
    """A background with structure: diagonal bands and a few rectangles in muted colours."""
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    band = ((xx + yy) // 12) % 3
    palette = np.array([[90, 150, 90], [150, 130, 80], [70, 110, 140]], np.uint8)
    frame[:] = palette[band]
    frame[10:30, 10:50] = (200, 200, 160)
    frame[60:90, 80:120] = (60, 60, 60)
    return frame


def shuffled_blocks(background: np.ndarray, block: int = 16, seed: int = 1) -> np.ndarray:
    """The same pixels (so the same colour histogram) with 16x16 blocks permuted: a new layout."""
    rng = np.random.default_rng(seed)
    rows, cols = HEIGHT // block, WIDTH // block
    tiles = [
        background[r * block : (r + 1) * block, c * block : (c + 1) * block]
        for r in range(rows)
        for c in range(cols)
    ]
    order = rng.permutation(len(tiles))
    out = np.empty_like(background)
    for index, tile_index in enumerate(order):
        r, c = divmod(index, cols)
        out[r * block : (r + 1) * block, c * block : (c + 1) * block] = tiles[tile_index]
    return out


def paste(
    frame: np.ndarray, subject: np.ndarray, mask: np.ndarray, x: int, y: int, scale: float = 1.0
) -> np.ndarray:
    """Paste a subject with its top-left corner at (x, y), resized by `scale` (nearest neighbour)."""
    if scale != 1.0:
        size = (max(2, round(subject.shape[1] * scale)), max(2, round(subject.shape[0] * scale)))
        subject = np.asarray(Image.fromarray(subject).resize(size, Image.NEAREST))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    out = frame.copy()
    h, w = mask.shape
    region = out[y : y + h, x : x + w]
    region[mask[: region.shape[0], : region.shape[1]]] = subject[: region.shape[0], : region.shape[1]][
        mask[: region.shape[0], : region.shape[1]]
    ]
    return out


def make_video(path: Path, frames: list[np.ndarray], fps: float = 8.0) -> Path:
    return write_video(path, np.stack(frames).astype(np.uint8), fps=fps, crf=10)


def save_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_cases(path: Path, cases: list[dict]) -> Path:
    path.write_text("".join(json.dumps(case) + "\n" for case in cases))
    return path


def empty_video(path: Path) -> Path:
    """An MP4 container with a video stream and no frames."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    return path


def whole_frame_similarity(reference: np.ndarray, frames: np.ndarray) -> float:
    """The naive metric docs/contracts.md#14-metrics-controls-and-ablations says must fail: colour histogram of the whole reference vs whole frames."""
    from kaleido_s2v.evaluation.offline import colour_histogram, histogram_intersection

    def full(image):
        return colour_histogram(image, np.ones(image.shape[:2], bool))

    return float(np.mean([histogram_intersection(full(reference), full(frame)) for frame in frames]))


def moving_video(
    background: np.ndarray, subject, mask, start=(10, 30), step=(4, 0), frames=17, scale=(1.0, 1.0)
):
    """Frames of a subject moving by `step` pixels per frame and scaling linearly over the clip."""
    out = []
    for t in range(frames):
        s = scale[0] + (scale[1] - scale[0]) * t / max(1, frames - 1)
        out.append(paste(background, subject, mask, start[0] + step[0] * t, start[1] + step[1] * t, s))
    return out
