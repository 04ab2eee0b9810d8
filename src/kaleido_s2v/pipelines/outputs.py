"""Writing generated videos: MP4 (H.264 via the shared PyAV writer), GIF, PNG frames, side-car JSON.

The format follows the output path: `.mp4`, `.gif`, or a folder (no suffix) of `00000.png ...`.
Every artifact is written atomically.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from kaleido_s2v.atomic import atomic_path, write_json_atomic
from kaleido_s2v.video_io import write_video

VIDEO_SUFFIXES = (".mp4", ".gif")


def frames_to_uint8(frames) -> np.ndarray:
    """(F, H, W, 3) float in [0, 1] (numpy or tensor) or uint8 -> uint8 (F, H, W, 3).

    Floats are mapped as clamp(x, 0, 1) * 255, truncated to integers (SPEC §5's pixel rule, as Wan's
    own writer and diffusers' `export_to_video` do).
    """
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_frames(frames, path: str | os.PathLike, fps: float) -> Path:
    """Write frames to `path`: `.mp4` (H.264, yuv420p), `.gif`, or a folder of PNGs when there is no suffix."""
    frames = frames_to_uint8(frames)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return write_video(path, frames, fps=fps)
    if suffix == ".gif":
        return write_gif(path, frames, fps=fps)
    if suffix == "":
        return write_png_frames(path, frames)
    raise ValueError(
        f"output {path}: unknown format {suffix!r}; use .mp4, .gif, or a folder name for PNG frames"
    )


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """An endlessly looping GIF (frame durations rounded to 10 ms, GIF's unit)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames_to_uint8(frames)]
    duration_ms = max(10, int(round(100.0 / fps)) * 10)
    path = Path(path)
    with atomic_path(path) as temporary:
        images[0].save(temporary, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path


def write_png_frames(folder: str | os.PathLike, frames: np.ndarray) -> Path:
    """`folder/00000.png ...`; the folder appears complete or not at all."""
    from PIL import Image

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {folder} exists and is not a folder; PNG frames need a folder path")
    with atomic_path(folder) as temporary:
        temporary.mkdir(parents=True)
        for index, frame in enumerate(frames_to_uint8(frames)):
            Image.fromarray(frame).save(temporary / f"{index:05d}.png")
        if folder.exists():
            shutil.rmtree(folder)
    return folder


def sidecar_path(output: str | os.PathLike) -> Path:
    """The JSON beside an output: `clip.mp4` -> `clip.json`, `frames/` -> `frames.json`."""
    output = Path(output)
    return output.with_suffix(".json") if output.suffix else output.with_name(output.name + ".json")


def write_sidecar(output: str | os.PathLike, parameters: dict) -> Path:
    """Write every generation parameter beside `output` (atomically)."""
    path = sidecar_path(output)
    write_json_atomic(path, parameters)
    return path
