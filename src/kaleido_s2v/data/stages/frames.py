"""Frame access shared by the stages: decode with timestamps, pick frames, read clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kaleido_s2v.common.video_io import read_video


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
