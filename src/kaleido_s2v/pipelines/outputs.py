"""Writing generated videos: MP4 (H.264 via the shared PyAV writer), GIF, PNG frames, side-car JSON.

The format follows the output path: `.mp4`, `.gif`, or a folder (no suffix) of `00000.png ...`.
Every artifact is written atomically, and nothing that `generate` did not write is replaced
(`check_output`).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.common.video_io import write_video

VIDEO_SUFFIXES = (".mp4", ".gif")
FRAME_NAME = re.compile(r"\d{5}\.png")  # what write_png_frames writes
GIF_MAX_FPS = 100  # GIF frame delays are whole hundredths of a second


def frames_to_uint8(frames) -> np.ndarray:
    """(F, H, W, 3) float in [0, 1] (numpy or tensor) or uint8 -> uint8 (F, H, W, 3).

    Floats are mapped as clamp(x, 0, 1) * 255, truncated to integers (docs/model.md#5-sampling-defaults's pixel rule, as Wan's
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


def check_fps(fps: float, path: str | os.PathLike) -> None:
    """Refuse a frame rate the output at `path` cannot play as recorded: fps must be a finite number > 0
    for every format (the side-car records it even for PNG frames), and at most GIF_MAX_FPS for `.gif`.

    No upper bound for MP4 or PNG frames: a high rate (slow-motion playback) is a valid MP4 time base.
    """
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps {fps!r} is not a frame rate; use a number > 0, e.g. --fps 16")
    if Path(path).suffix.lower() == ".gif" and fps > GIF_MAX_FPS:
        raise ValueError(
            f"fps {fps} is too fast for the GIF {path}: GIF frame delays are whole 10 ms, so at most "
            f"{GIF_MAX_FPS} fps; lower --fps or write .mp4"
        )


def save_frames(frames, path: str | os.PathLike, fps: float) -> Path:
    """Write frames to `path`: `.mp4` (H.264, yuv420p), `.gif`, or a folder of PNGs when there is no suffix.

    `fps` must pass `check_fps`.
    """
    path = Path(path)
    check_fps(fps, path)
    frames = frames_to_uint8(frames)
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
    """`folder/00000.png ...`; the folder appears complete or not at all.

    An existing folder is replaced only when it holds nothing but frame files; anything else in it
    makes this refuse (see `check_output` for the full rule `generate` applies first).
    """
    from PIL import Image

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {folder} exists and is not a folder; PNG frames need a folder path")
    _refuse_protected_folder(folder)
    foreign = _foreign_entries(folder) if folder.is_dir() else []
    if foreign:
        raise FileExistsError(
            f"output folder {folder} holds files that are not PNG frames ({', '.join(foreign)}); "
            "choose a new or empty folder"
        )
    with atomic_path(folder, directory=True, replace_folder=True) as temporary:
        for index, frame in enumerate(frames_to_uint8(frames)):
            Image.fromarray(frame).save(temporary / f"{index:05d}.png")
    return folder


def _foreign_entries(folder: Path, limit: int = 5) -> list[str]:
    """Names in `folder` that a PNG-frames output never writes (at most `limit`)."""
    foreign = sorted(entry.name for entry in folder.iterdir() if not FRAME_NAME.fullmatch(entry.name))
    return foreign[:limit] + ([f"... {len(foreign) - limit} more"] if len(foreign) > limit else [])


def _refuse_protected_folder(folder: Path) -> None:
    """`.`, `..`, `~`, the home folder, `/` and every ancestor of the working directory are never outputs."""
    resolved = folder.expanduser().resolve()
    cwd = Path.cwd().resolve()
    if (
        folder.name in ("", ".", "..", "~")
        or resolved == Path.home().resolve()
        or resolved in (cwd, *cwd.parents)
    ):
        raise ValueError(
            f"refusing to write PNG frames into {str(folder)!r} ({resolved}): it is the working folder, "
            "one of its parents or the home folder; name a new folder, e.g. --out frames"
        )


def is_own_output(path: str | os.PathLike) -> bool:
    """True when `path` was written by `generate`: its side-car names it and, for a folder, it holds only frames."""
    path = Path(path)
    sidecar = sidecar_path(path)
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict) or recorded.get("output") != path.name:
        return False
    return not _foreign_entries(path) if path.is_dir() else path.is_file()


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output whose writing would destroy what `generate` did not write.

    A new path or an empty folder is fine; an earlier output of `generate` (its side-car names it) is
    replaced. Anything else existing is refused unless `overwrite`, which replaces a file or a folder of
    PNG frames; a folder holding other files is always refused, and so are `.`, `..`, `~`, the home
    folder and every ancestor of the working directory.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES and suffix != "":
        raise ValueError(
            f"output {path}: unknown format {suffix!r}; use .mp4, .gif, or a folder name for PNG frames"
        )
    if suffix == "":
        _refuse_protected_folder(path)
    if not path.exists() and not path.is_symlink():
        return path
    if suffix and path.is_dir():
        raise FileExistsError(f"output {path} is an existing folder; a {suffix} output needs a file path")
    if suffix == "" and not path.is_dir():
        raise FileExistsError(f"output {path} exists and is not a folder; PNG frames need a folder path")
    if path.is_dir():
        foreign = _foreign_entries(path)
        if foreign:
            raise FileExistsError(
                f"output folder {path} holds files that are not PNG frames ({', '.join(foreign)}); "
                "nothing was written. Choose a new or empty folder"
            )
        if not any(path.iterdir()):
            return path
    if overwrite or is_own_output(path):
        return path
    raise FileExistsError(
        f"output {path} exists and was not written by kaleido-s2v generate (no side-car "
        f"{sidecar_path(path).name} naming it); nothing was written. Choose a new path or pass --overwrite"
    )


def sidecar_path(output: str | os.PathLike) -> Path:
    """The JSON beside an output: `clip.mp4` -> `clip.json`, `frames/` -> `frames.json`."""
    output = Path(output)
    return output.with_suffix(".json") if output.suffix else output.with_name(output.name + ".json")


def write_sidecar(output: str | os.PathLike, parameters: dict) -> Path:
    """Write every generation parameter beside `output` (atomically)."""
    path = sidecar_path(output)
    write_json_atomic(path, parameters)
    return path
