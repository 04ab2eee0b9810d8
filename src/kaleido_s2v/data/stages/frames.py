"""Frame access shared by the stages: decode with timestamps, pick frames, read clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _packet_pts(path: str | os.PathLike) -> tuple[np.ndarray, float, int]:
    """(sorted presentation timestamps of every frame, stream time base, stream start) from the packets."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
        return np.sort(np.asarray(pts, dtype=np.int64)), float(stream.time_base), int(stream.start_time or 0)


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Presentation time (seconds) of every frame in presentation order, from the packets (no decoding)."""
    pts, base, start = _packet_pts(path)
    return (pts - start).astype(np.float64) * base


def decode_frames(
    path: str | os.PathLike, indices: list[int] | None = None, seek_after: int = 64
) -> dict[int, np.ndarray]:
    """Decode the frames whose index (presentation order) is in `indices` (all when None).

    When the first wanted frame lies more than `seek_after` frames into the video, the decoder seeks
    to the key frame before it and identifies frames by their timestamps, so a clip late in a long
    video does not cost decoding everything before it. Returns {index: (H, W, 3) uint8 RGB}.
    """
    import av

    wanted = None if indices is None else set(indices)
    if wanted is not None and not wanted:
        return {}
    out: dict[int, np.ndarray] = {}
    first = min(wanted) if wanted else 0
    last = max(wanted) if wanted else None
    if wanted and first > seek_after:
        pts, _, _ = _packet_pts(path)
        index_of = {int(p): i for i, p in enumerate(pts)}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(pts[first]), backward=True, any_frame=False, stream=stream)
            for frame in container.decode(stream):
                index = index_of.get(frame.pts)
                if index is None:
                    continue
                if index in wanted:
                    out[index] = frame.to_ndarray(format="rgb24")
                if index >= last:
                    break
        if set(out) == wanted:
            return out
        out = {}  # a stream whose seeking or timestamps cannot be trusted: decode from the start
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if wanted is None or index in wanted:
                out[index] = frame.to_ndarray(format="rgb24")
            if last is not None and index >= last:
                break
    return out


def read_clip(run_dir: Path, item: dict) -> np.ndarray:
    """The clip of a clip item as (F, H, W, 3) uint8."""
    from kaleido_s2v.video_io import read_video

    frames, _ = read_video(run_dir / item["clip"])
    return frames


def keyframe_index(item: dict) -> int:
    """The clip frame the image stages annotate: the middle one."""
    return len(item["source_frames"]) // 2


def read_keyframe(run_dir: Path, item: dict) -> np.ndarray:
    frames = decode_frames(run_dir / item["clip"], [keyframe_index(item)])
    return frames[keyframe_index(item)]


def read_shot_frames(item: dict, max_frames: int = 32) -> np.ndarray:
    """Up to `max_frames` source frames spread over the item's whole shot, (T, H, W, 3) uint8, cropped
    the same way the clip was (to even sizes)."""
    start, end = item["shot_range"]
    picks = np.unique(np.linspace(start, end - 1, min(max_frames, end - start)).round().astype(int)).tolist()
    frames = decode_frames(item["source"], picks)
    height, width = item["height"], item["width"]
    return np.stack([frames[i][:height, :width] for i in picks if i in frames])


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


def write_clip(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write (F, H, W, 3) uint8 RGB frames atomically as H.264 MP4, bit-for-bit reproducibly.

    Like `video_io.write_video`, but reproducible, because SPEC §10.3 compares runs by artifact
    sha256: with `video_io.write_video` the same frames gave different P-frames from run to run in a
    process that had imported torch (measured). Adaptive quantisation, the macroblock tree and psy
    optimisations are off (their float maths was the varying part), and frames reach x264 converted
    in numpy with zeroed row padding (see `_yuv420_frame`).
    """
    from fractions import Fraction

    import av

    from kaleido_s2v.atomic import atomic_path

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be (F>0, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    path = Path(path)
    with atomic_path(path) as temporary:
        with av.open(str(temporary), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "x264-params": "aq-mode=0:mbtree=0:psy=0"}
            for array in frames:
                container.mux(stream.encode(_yuv420_frame(np.ascontiguousarray(array))))
            container.mux(stream.encode())
    return path
