"""Stage `split`: find shots with PySceneDetect and cut clips by the rules of docs/contracts.md#4-clips.

Per shot: skip `skip_frames` at each end, resample by timestamp to `fps`, keep `num_frames`
(4k+1) frames, or record the shot as `too_short`. Up to `max_clips_per_shot` consecutive,
non-overlapping clips are cut from one shot.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from kaleido_s2v.common.video_io import write_video
from kaleido_s2v.data.stages.base import (
    FAILED,
    Context,
    Stage,
    StageResult,
    choose_backend,
    require,
)
from kaleido_s2v.data.stages.frames import decode_frames, frame_times


@dataclass(frozen=True)
class SplitConfig:
    backend: str = "pyscenedetect"
    threshold: float = 27.0  # ContentDetector threshold
    min_scene_len: int = 8  # frames
    skip_frames: int = 3
    num_frames: int = 81
    fps: float = 16.0
    max_clips_per_shot: int = 1

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.num_frames % 4 != 1:
            raise ValueError(f"split.num_frames must be 4k+1 (e.g. 81, 17, 9), got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"split.fps must be positive, got {self.fps}")


def detect_shots(path: str, threshold: float, min_scene_len: int, num_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the shots, by PySceneDetect's ContentDetector."""
    from scenedetect import ContentDetector, detect

    scenes = detect(str(path), ContentDetector(threshold=threshold, min_scene_len=min_scene_len))
    if not scenes:
        return [(0, num_frames)]
    ranges = [(int(a.frame_num), int(b.frame_num)) for a, b in scenes]
    ranges[-1] = (ranges[-1][0], max(ranges[-1][1], num_frames))
    return ranges


def clip_windows(
    times: np.ndarray, start: int, end: int, skip: int, num_frames: int, fps: float, max_clips: int
) -> list[list[int]]:
    """Source frame indices of each clip cut from the shot [start, end), resampled by timestamp."""
    first, last = start + skip, end - skip  # usable [first, last)
    windows: list[list[int]] = []
    if last - first < 1:
        return windows
    usable = times[first:last]
    t0 = usable[0]
    eps = 1e-6
    while len(windows) < max_clips:
        targets = t0 + np.arange(num_frames) / fps
        if targets[-1] > usable[-1] + eps:
            break
        # the frame shown at each target time: the last one that started at or before it
        picks = np.searchsorted(usable, targets + eps, side="right") - 1
        windows.append([int(first + p) for p in picks])
        t0 = targets[-1] + 1.0 / fps
        later = usable[usable >= t0 - eps]
        if len(later) == 0:
            break
        t0 = later[0]
    return windows


SHOT_DETECTORS = {"pyscenedetect": detect_shots}


class SplitStage(Stage):
    name = "split"

    def __init__(self, config: SplitConfig):
        self._detect_shots = choose_backend(self.name, config.backend, SHOT_DETECTORS)
        require(self.name, "scenedetect", "cv2")
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        c = self.config
        probe = context.upstream["probe"]
        times = frame_times(item["source"])
        shots = self._detect_shots(item["source"], c.threshold, c.min_scene_len, probe["num_frames"])
        height, width = probe["height"] // 2 * 2, probe["width"] // 2 * 2  # H.264 needs even sizes
        shot_rows, clips = [], []
        for shot_index, (start, end) in enumerate(shots):
            windows = clip_windows(
                times, start, end, c.skip_frames, c.num_frames, c.fps, c.max_clips_per_shot
            )
            shot_rows.append(
                {
                    "shot": shot_index,
                    "start": start,
                    "end": end,
                    "clips": len(windows),
                    "reason": "" if windows else "too_short",
                }
            )
            for k, window in enumerate(windows):
                clips.append(
                    {
                        "id": f"{item['id']}_s{shot_index:02d}c{k}",
                        "video_id": item["id"],
                        "source": item["source"],
                        "shot": shot_index,
                        "shot_range": [start, end],
                        "source_frames": window,
                        "fps": c.fps,
                        "width": width,
                        "height": height,
                    }
                )
        if not clips:
            return StageResult.reject("too_short", {"shots": shot_rows, "clips": []})
        wanted = sorted({i for clip in clips for i in clip["source_frames"]})
        decoded = decode_frames(item["source"], wanted)
        artifacts = {}
        for clip in clips:
            frames = np.stack([decoded[i][:height, :width] for i in clip["source_frames"]])
            path, relative = context.new_artifact(f"{clip['id']}.mp4")
            write_video(path, frames, fps=c.fps)
            clip["clip"] = relative
            artifacts[clip["id"]] = relative
        return StageResult.ok({"shots": shot_rows, "clips": clips}, artifacts)

    def next_items(self, item: dict, data: dict) -> list[dict]:
        """A video goes on as its clips."""
        return data["clips"]

    def funnel_details(self, rows: dict[str, dict]) -> dict:
        """Shots found, shots that gave a clip, why the others gave none, and the clips cut."""
        shots = [
            shot
            for row in rows.values()
            if row["status"] != FAILED
            for shot in json.loads(row["data"]).get("shots", [])
        ]
        return {
            "shots": {
                "total": len(shots),
                "clipped": sum(1 for shot in shots if shot["clips"]),
                "dropped": dict(Counter(shot["reason"] for shot in shots if shot["reason"])),
            },
            "clips": sum(shot["clips"] for shot in shots),
        }
