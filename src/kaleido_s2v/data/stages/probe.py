"""Stage `probe`: is the source a readable video, and what is it (fps, frames, size, frame rate mode)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleido_s2v.data.stages.base import Context, Stage, StageResult, choose_backend
from kaleido_s2v.data.stages.frames import frame_times


@dataclass(frozen=True)
class ProbeConfig:
    backend: str = "pyav"
    # a variable frame rate is handled by resampling on timestamps; "reject" drops such videos instead
    variable_frame_rate: str = "resample"
    vfr_tolerance: float = (
        0.5  # frame durations may vary by this fraction of the median before it counts as VFR
    )


def probe_with_pyav(source: str, config: ProbeConfig) -> StageResult:
    """Open `source` with PyAV: its size, frame count, frame rate and whether that rate varies."""
    import av

    try:
        with av.open(source) as container:
            if not container.streams.video:
                return StageResult.reject("no_video_stream")
            stream = container.streams.video[0]
            width, height = stream.width, stream.height
            first = next(container.decode(stream), None)
        times = frame_times(source)
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
        return StageResult.reject("unreadable", {"error": str(error)[:300]})
    if first is None or len(times) == 0:
        return StageResult.reject("zero_frames")
    durations = np.diff(times)
    median = float(np.median(durations)) if len(durations) else 0.0
    vfr = bool(
        len(durations) > 1
        and median > 0
        and np.max(np.abs(durations - median)) > config.vfr_tolerance * median
    )
    fps = 1.0 / median if median > 0 else 0.0
    data = {
        "fps": round(fps, 6),
        "num_frames": int(len(times)),
        "width": int(width),
        "height": int(height),
        "duration": round(float(times[-1] + median), 6),
        "variable_frame_rate": vfr,
    }
    if vfr and config.variable_frame_rate == "reject":
        return StageResult.reject("variable_frame_rate", data)
    return StageResult.ok(data)


PROBERS = {"pyav": probe_with_pyav}


class ProbeStage(Stage):
    name = "probe"

    def __init__(self, config: ProbeConfig):
        self._probe = choose_backend(self.name, config.backend, PROBERS)
        if config.variable_frame_rate not in ("resample", "reject"):
            raise ValueError(
                f"probe.variable_frame_rate must be 'resample' or 'reject', got {config.variable_frame_rate!r}"
            )
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        return self._probe(item["source"], self.config)
