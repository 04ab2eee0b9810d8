"""Offline evaluation speed: seconds per video, with the share of each step.

Run: python benchmarks/bench_eval.py [--repeats 3]
Prints medians (and min–max) over repeats for a procedural video at the release size (832x480,
81 frames) and at a small size (448x256, 17 frames), one subject on a textured background.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _scene(height: int, width: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:height, :width]
    background = np.stack(
        [60 + 30 * np.sin(xx / 23.0), 140 + 40 * np.cos(yy / 31.0), 80 + 20 * np.sin((xx + yy) / 17.0)], -1
    ).astype(np.uint8)
    size = height // 3
    sy, sx = np.mgrid[:size, :size]
    disc = np.hypot(sy - size / 2, sx - size / 2) < size / 2 - 1
    subject = np.zeros((size, size, 3), np.uint8)
    subject[:] = (220, 30, 30)
    subject[(sy * 6 // size) % 2 == 1] = (30, 60, 220)
    video = []
    for t in range(frames):
        frame = background.copy()
        x = int((width - size) * t / max(1, frames - 1))
        region = frame[height // 3 : height // 3 + size, x : x + size]
        region[disc] = subject[disc]
        video.append(frame)
    reference = np.full((size + 8, size + 8, 3), 255, np.uint8)
    reference[4 : 4 + size, 4 : 4 + size][disc] = subject[disc]
    return np.stack(video), reference


def _time(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    from PIL import Image

    from kaleido_s2v.common.cases import Case, CaseReference
    from kaleido_s2v.common.video_io import read_video, write_video
    from kaleido_s2v.evaluation.config import EvalConfig
    from kaleido_s2v.evaluation.motion import flow_metrics
    from kaleido_s2v.evaluation.offline import OfflineBackend
    from kaleido_s2v.evaluation.scoring import score_video

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    config = EvalConfig()
    backend = OfflineBackend()
    print(
        f"offline backend, {config.num_frames} sampled frames, flow on ≤ {config.flow_pairs} pairs at {config.flow_width} px"
    )
    with tempfile.TemporaryDirectory() as folder:
        for height, width, frames in ((480, 832, 81), (256, 448, 17)):
            video, reference = _scene(height, width, frames)
            path = write_video(Path(folder) / f"v{width}.mp4", video, fps=16)
            ref_path = Path(folder) / f"ref{width}.png"
            Image.fromarray(reference).save(ref_path)
            case = Case("bench", "a ball moves right", [CaseReference(ref_path, "ball")])
            score_video(path, case, config, backend)  # warm-up (imports, caches)
            total = _time(lambda p=path, c=case: score_video(p, c, config, backend), repeats)
            decode = _time(lambda p=path: read_video(p), repeats)
            flow = _time(lambda v=video: flow_metrics(v, config.flow_width, config.flow_pairs), repeats)
            result = score_video(path, case, config, backend)
            t, d, f = (statistics.median(x) for x in (total, decode, flow))
            print(
                f"{width}x{height}x{frames}: {t:.2f} s/video (min {min(total):.2f}, max {max(total):.2f}); "
                f"decode {d:.2f} s ({100 * d / t:.0f}%), optical flow {f:.2f} s ({100 * f / t:.0f}%), "
                f"localisation+similarity+rest {t - d - f:.2f} s ({100 * (t - d - f) / t:.0f}%); "
                f"consistency {result.consistency:.3f}, motion {result.subjects[0].observed_direction}"
            )


if __name__ == "__main__":
    main()
