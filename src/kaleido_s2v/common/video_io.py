"""Reading and writing videos with PyAV (shared by data, training, inference and evaluation)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import atomic_path


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int
    width: int
    height: int


@contextmanager
def _video_stream(path: Path):
    """(container, first video stream) of `path`; a missing file, a file without a video stream and
    any decoding error (also one raised while the caller decodes) become one error naming the file."""
    import av

    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            yield container, container.streams.video[0]
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot read video {path}: {error}") from error


def _frame_rate(stream) -> float:
    return float(stream.average_rate or stream.guessed_rate or 0)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Stream metadata; counts frames by decoding when the container does not say."""
    with _video_stream(Path(path)) as (container, stream):
        num_frames = stream.frames or sum(1 for _ in container.decode(stream))
        return VideoInfo(
            fps=_frame_rate(stream), num_frames=num_frames, width=stream.width, height=stream.height
        )


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame. Returns (frames (F, H, W, 3) uint8 RGB, fps)."""
    path = Path(path)
    with _video_stream(path) as (container, stream):
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        fps = _frame_rate(stream)
    if not frames:
        raise ValueError(f"video {path} has 0 frames")
    return np.stack(frames), fps


def rgb_to_yuv420(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB -> Y (H, W), U and V (H/2, W/2) uint8: BT.601 limited range, 2x2 chroma mean
    (what decoders assume for untagged H.264, and what swscale does by default)."""
    rgb = array.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    height, width = y.shape

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    return tuple(np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, half(u), half(v)))


def _yuv420_frame(array: np.ndarray):
    """An RGB (H, W, 3) uint8 array as a yuv420p VideoFrame, converted in numpy, row padding zeroed.

    x264 reads the padding bytes at the end of each plane row and swscale's vector code reads past
    the row end; PyAV leaves that memory uninitialised, which made encoded bytes vary (measured here).
    """
    import av

    frame = av.VideoFrame(array.shape[1], array.shape[0], "yuv420p")
    for plane, values in zip(frame.planes, rgb_to_yuv420(array), strict=True):
        padded = np.zeros((plane.height, plane.line_size), np.uint8)
        padded[:, : plane.width] = values
        plane.update(padded.tobytes())
    return frame


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write (F, H, W, 3) uint8 RGB frames atomically as H.264 MP4 (yuv420p), bit-for-bit reproducibly.

    Runs are compared by artifact sha256 (docs/contracts.md#9-resume-per-command), so the encoder must not vary: x264's adaptive
    quantisation, macroblock tree and psy optimisations are off (their float maths varied from run
    to run, measured), it runs on one thread, and frames reach it converted in numpy with zeroed row
    padding (`_yuv420_frame`). H.264 with yuv420p needs even sizes; odd sizes are rejected rather
    than silently cropped.
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
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "threads": "1", "x264-params": "aq-mode=0:mbtree=0:psy=0"}
            for array in frames:
                container.mux(stream.encode(_yuv420_frame(np.ascontiguousarray(array))))
            container.mux(stream.encode())
    return path
