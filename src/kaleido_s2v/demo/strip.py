"""A PNG strip of held-out cases: each case's references, then its generated frames, and optionally
the ground-truth clip underneath (the README's picture and `demo eval`'s `eval/strip.png`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.common.cases import Case, read_cases
from kaleido_s2v.common.letterbox import letterbox
from kaleido_s2v.common.video_io import read_video

GAP = 4  # white pixels between references and frames, and between rows


def _row(references: list[np.ndarray], frames: np.ndarray, slots: int) -> np.ndarray:
    """(H, W_row, 3): `slots` reference cells (empty ones white), a gap, then every frame side by side.

    references: (H, W, 3) uint8 each, already at the frame size; frames: (F, H, W, 3) uint8.
    """
    height, width = frames.shape[1:3]
    cells = references + [np.full((height, width, 3), 255, np.uint8)] * (slots - len(references))
    gap = np.full((height, GAP, 3), 255, np.uint8)
    return np.concatenate([*cells, gap, *frames], axis=1)


def write_strip(
    cases_file: str | os.PathLike,
    videos: str | os.PathLike,
    out: str | os.PathLike,
    truth: str | os.PathLike | None = None,
    max_cases: int = 4,
    scale: int = 2,
) -> Path:
    """Write `out` (PNG): for the first `max_cases` cases with a video `<videos>/<id>.mp4`, a row of
    references and generated frames, and below it the same references with `<truth>/<id>.mp4`."""
    cases = [
        c for c in read_cases(cases_file) if isinstance(c, Case) and (Path(videos) / f"{c.id}.mp4").is_file()
    ]
    cases = cases[:max_cases]
    if not cases:
        raise FileNotFoundError(f"no case of {cases_file} has a video in {videos}")
    slots = max(len(c.references) for c in cases)
    rows = []
    for case in cases:
        frames, _ = read_video(Path(videos) / f"{case.id}.mp4")
        height, width = frames.shape[1:3]
        references = []
        for reference in case.references:
            with Image.open(reference.path) as image:
                references.append(np.asarray(letterbox(image.convert("RGB"), height, width)))
        rows.append(_row(references, frames, slots))
        if truth is not None:
            true_frames, _ = read_video(Path(truth) / f"{case.id}.mp4")
            rows.append(_row(references, true_frames[: len(frames)], slots))
        rows.append(np.full((GAP, rows[-1].shape[1], 3), 255, np.uint8))
    picture = np.concatenate(rows[:-1], axis=0)
    picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    out = Path(out)
    with atomic_path(out) as temporary:
        Image.fromarray(picture).save(temporary, format="PNG")
    return out


LABEL_HEIGHT = 18  # pixels of the white bar carrying each strip's label


def stack_strips(strips: dict[str, str | os.PathLike], out: str | os.PathLike, shrink: int = 2) -> Path:
    """Write `out` (PNG): the strips (`write_strip` pictures, e.g. one per ablation cell) one under
    another, each shrunk by `shrink` (they are drawn at 2x) under a bar with its label."""
    parts = []
    for label, path in strips.items():
        with Image.open(path) as image:
            image = image.convert("RGB")
            parts.append(
                (label, image.resize((image.width // shrink, image.height // shrink), Image.NEAREST))
            )
    width = max(image.width for _, image in parts)
    blocks = []
    for label, image in parts:
        bar = Image.new("RGB", (width, LABEL_HEIGHT), "white")
        ImageDraw.Draw(bar).text((4, 3), label, fill="black")
        canvas = Image.new("RGB", (width, image.height), "white")
        canvas.paste(image, (0, 0))
        blocks += [np.asarray(bar), np.asarray(canvas), np.full((GAP * 2, width, 3), 255, np.uint8)]
    out = Path(out)
    with atomic_path(out) as temporary:
        Image.fromarray(np.concatenate(blocks[:-1], axis=0)).save(temporary, format="PNG", optimize=True)
    return out
