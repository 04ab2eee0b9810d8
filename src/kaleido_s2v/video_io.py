"""Reading and writing videos with PyAV (shared by data, training, inference and evaluation)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from kaleido_s2v.atomic import atomic_path


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int
    width: int
    height: int


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Stream metadata; counts frames by decoding when the container does not say."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            num_frames = stream.frames or sum(1 for _ in container.decode(stream))
            return VideoInfo(fps=fps, num_frames=num_frames, width=stream.width, height=stream.height)
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame. Returns (frames (F, H, W, 3) uint8 RGB, fps)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error
    if not frames:
        raise ValueError(f"video {path} has 0 frames")
    return np.stack(frames), fps


def write_video(
    path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str = "libx264", crf: int = 18
) -> Path:
    """Write (F, H, W, 3) uint8 RGB frames atomically as MP4 (H.264, yuv420p).

    H.264 with yuv420p needs even sizes; odd sizes are rejected rather than silently cropped.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if len(frames) == 0:
        raise ValueError("cannot write a video with 0 frames")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    path = Path(path)
    with atomic_path(path) as temporary:
        with av.open(str(temporary), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf)}
            for array in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(stream.encode())
    return path
