"""Stage `probe`: is the source a readable video, and what is it (fps, frames, size, frame rate mode)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kaleido_s2v.data.stages.base import Context, StageResult, check_backend, config_dict


@dataclass(frozen=True)
class ProbeConfig:
    backend: str = "pyav"
    # a variable frame rate is handled by resampling on timestamps; "reject" drops such videos instead
    variable_frame_rate: str = "resample"
    vfr_tolerance: float = (
        0.5  # frame durations may vary by this fraction of the median before it counts as VFR
    )


class ProbeStage:
    name = "probe"
    group = False

    def __init__(self, config: ProbeConfig):
        check_backend(self.name, config.backend, ("pyav",))
        if config.variable_frame_rate not in ("resample", "reject"):
            raise ValueError(
                f"probe.variable_frame_rate must be 'resample' or 'reject', got {config.variable_frame_rate!r}"
            )
        self.config = config

    def fingerprint_parts(self) -> dict:
        return {"backend": self.config.backend, "config": config_dict(self.config)}

    def run(self, item: dict, context: Context) -> StageResult:
        import av

        from kaleido_s2v.data.stages.frames import frame_times

        try:
            with av.open(item["source"]) as container:
                if not container.streams.video:
                    return StageResult.reject("no_video_stream")
                stream = container.streams.video[0]
                width, height = stream.width, stream.height
                first = next(container.decode(stream), None)
            times = frame_times(item["source"])
        except (av.error.FFmpegError, UnicodeDecodeError, OSError) as error:
            return StageResult.reject("unreadable", {"error": str(error)[:300]})
        if first is None or len(times) == 0:
            return StageResult.reject("zero_frames")
        durations = np.diff(times)
        median = float(np.median(durations)) if len(durations) else 0.0
        vfr = bool(
            len(durations) > 1
            and median > 0
            and np.max(np.abs(durations - median)) > self.config.vfr_tolerance * median
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
        if vfr and self.config.variable_frame_rate == "reject":
            return StageResult.reject("variable_frame_rate", data)
        return StageResult.ok(data)
