"""The runner: resume, fingerprints, export read-back, bad inputs; Ray against local."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.manifest import Manifest
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.samples import iter_samples


def _data(root: Path) -> dict:
    """Every row's decoded results (stricter than docs/contracts.md#9-resume-per-command's comparison, which checks artifacts only)."""
    return {key: row["data"] for key, row in Manifest(root).rows.items()}


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under the export and shard folders."""
    out = {}
    for folder in ("export", "shards"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def reference_run(easy_scenes, tmp_path_factory, clip_config):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    summary = run_pipeline(config_from_dict(clip_config([easy_scenes], run_dir)), progress=False)
    return run_dir, summary


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    easy_scenes, tmp_path, clip_config, reference_run, monkeypatch
):
    from kaleido_s2v.data.stages.segment import SegmentStage

    reference_dir, reference = reference_run
    original = SegmentStage.run
    calls = {"n": 0}

    def crashing(self, item, context):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated kill in the middle of the segment stage")
        return original(self, item, context)

    monkeypatch.setattr(SegmentStage, "run", crashing)
    config = config_from_dict(clip_config([easy_scenes], tmp_path))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, progress=False)
    monkeypatch.setattr(SegmentStage, "run", original)
    resumed = run_pipeline(config, progress=False)
    # the three segment results written before the crash were reused
    assert resumed.executed_by_stage["segment"] == reference.executed_by_stage["segment"] - 3
    assert resumed.executed_by_stage["probe"] == resumed.executed_by_stage["detect"] == 0
    assert Manifest(tmp_path).comparable_rows() == Manifest(reference_dir).comparable_rows()
    assert _data(tmp_path) == _data(reference_dir)
    assert _files(tmp_path) == _files(reference_dir)
    assert resumed.funnel == reference.funnel


def test_rerun_skips_and_a_changed_threshold_reruns_only_what_follows(easy_scenes, tmp_path, clip_config):
    values = clip_config([easy_scenes], tmp_path)
    first = run_pipeline(config_from_dict(values), progress=False)
    assert first.executed == sum(first.executed_by_stage.values()) > 0
    again = run_pipeline(config_from_dict(values), progress=False)
    assert again.executed == 0 and again.exported == first.exported
    # inputs that contain the run folder do not pick up its clips and exports
    inside = run_pipeline(
        config_from_dict({**values, "inputs": [str(easy_scenes), str(tmp_path)]}), progress=False
    )
    assert inside.executed == 0 and inside.funnel["probe"]["in"] == first.funnel["probe"]["in"]
    values["filter"] = {"min_area": 0.05}  # a stricter size threshold
    changed = run_pipeline(config_from_dict(values), progress=False)
    ran = {stage for stage, n in changed.executed_by_stage.items() if n}
    assert ran <= {"filter", "references", "export"} and "filter" in ran
    assert changed.funnel["filter"]["subjects_dropped"].get("too_small", 0) > first.funnel["filter"][
        "subjects_dropped"
    ].get("too_small", 0)
    # the export folder holds exactly this run's samples
    assert sorted(s.id for s in iter_samples(tmp_path / "export")) == sorted(changed.exported)


def test_export_reads_back_in_both_forms(reference_run):
    run_dir, summary = reference_run
    folder = list(iter_samples(run_dir / "export"))
    shards = list(iter_samples(run_dir / "shards"))
    assert [s.id for s in folder] == [s.id for s in shards] == sorted(summary.exported)
    for a, b in zip(folder, shards, strict=True):
        assert a.meta == b.meta and a.caption == b.caption and a.video_bytes() == b.video_bytes()
        meta = a.meta
        assert {"caption", "fps", "num_frames", "width", "height", "subjects", "seed", "fingerprint"} <= set(
            meta
        )
        assert meta["caption"] == a.caption
        frames, fps = a.read_video()
        assert frames.shape == (meta["num_frames"], meta["height"], meta["width"], 3) == (9, 64, 64, 3)
        assert fps == pytest.approx(meta["fps"]) == 8.0
        assert len(a.reference_images()) == len(meta["subjects"]) >= 1
        for subject in meta["subjects"]:
            assert {"label", "reference", "variant", "backend", "source"} <= set(subject)
            assert subject["variant"] in ("cutout", "inpainted", "pose")
            assert {"video", "shot", "frame"} <= set(subject["source"])


def _bad_inputs(folder: Path, video_makers) -> list[Path]:
    from kaleido_s2v.common.video_io import write_video

    timestamped_video, zero_frame_video = video_makers
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    still = np.tile(np.linspace(40, 220, 64, dtype=np.uint8)[None, None, :, None], (40, 64, 1, 3))
    static = write_video(folder / "static.mp4", still, fps=8)  # no subject anywhere
    vfr = folder / "vfr.mp4"
    timestamped_video(vfr, [sum(40 if i % 2 else 120 for i in range(k)) for k in range(30)])
    return [garbage, corrupt, zero_frame_video(folder / "empty.avi"), static, vfr]


def test_bad_inputs_are_rejections_with_reasons(easy_scenes, tmp_path, clip_config, video_makers):
    bad = _bad_inputs(tmp_path, video_makers)
    values = clip_config([easy_scenes, *bad], tmp_path / "run", probe={"variable_frame_rate": "reject"})
    values["caption"] = {"backend": "template"}
    summary = run_pipeline(config_from_dict(values), progress=False)
    probe = summary.funnel["probe"]["dropped"]
    assert probe == {"rejected:unreadable": 2, "rejected:zero_frames": 1, "rejected:variable_frame_rate": 1}
    assert summary.funnel["detect"]["dropped"] == {"rejected:no_subject": 1}  # the static video
    assert len(summary.exported) >= 6  # the good scenes still made it through
    rows = Manifest(tmp_path / "run").rows.values()
    assert all(r["status"] != "failed" for r in rows), [r["reason"] for r in rows if r["status"] == "failed"]
    captions = {s.caption for s in iter_samples(tmp_path / "run" / "export")}
    assert all(c.startswith("[template]") for c in captions)


def test_config_errors_are_clear(tmp_path):
    from kaleido_s2v.data.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("inputs: [x]\nrun_dir: r\nfilter: {min_areaa: 0.1}\n")
    with pytest.raises(ValueError, match=r"unknown config key 'filter.min_areaa'"):
        load_config(path)
    path.write_text("inputs: [x]\nrun_dir: r\ndetect: {backend: yolo}\n")
    config = load_config(path)
    with pytest.raises(ValueError, match="unknown backend 'yolo'"):
        run_pipeline(config, progress=False)


def test_cli_run_and_report(easy_scenes, tmp_path, monkeypatch, capsys):
    from kaleido_s2v.cli import main

    config = tmp_path / "run.yaml"
    config.write_text(
        json.dumps(
            {
                "inputs": [str(easy_scenes)],
                "run_dir": "runs/one",
                "workers": 1,
                "split": {"num_frames": 9, "fps": 8.0, "min_scene_len": 5},
                "caption": {"backend": "ground_truth"},
                "references": {"match": "appearance"},
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    assert main(["data", "run", str(config), "--no-progress"]) == 0
    assert main(["data", "report", "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "references" in out and "contact sheet" in out
    from PIL import Image

    sheet = Image.open(tmp_path / "runs" / "one" / "report" / "contact_sheet.png")
    assert sheet.size[0] > 64 and sheet.size[1] > 3 * 64
    assert main(["data", "run", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.slow
def test_ray_executor_gives_the_local_manifest(easy_scenes, tmp_path, clip_config, reference_run):
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    values = clip_config([easy_scenes], tmp_path, executor="ray", workers=2)
    summary = run_pipeline(config_from_dict(values), progress=False)
    reference_dir, reference = reference_run
    assert Manifest(tmp_path).comparable_rows() == Manifest(reference_dir).comparable_rows()
    assert _data(tmp_path) == _data(reference_dir)
    assert _files(tmp_path) == _files(reference_dir)
    assert summary.exported == reference.exported
    workers = {r["worker"] for r in Manifest(tmp_path).rows.values()}
    assert not any(w.endswith(f":{os.getpid()}") for w in workers)  # every call ran in a Ray worker


def test_process_pool_gives_the_in_process_manifest(easy_scenes, tmp_path, clip_config, reference_run):
    values = clip_config([easy_scenes], tmp_path, workers=2)
    summary = run_pipeline(config_from_dict(values), progress=False)
    reference_dir, reference = reference_run
    assert Manifest(tmp_path).comparable_rows() == Manifest(reference_dir).comparable_rows()
    assert _data(tmp_path) == _data(reference_dir)
    assert _files(tmp_path) == _files(reference_dir)
    assert len({r["worker"] for r in Manifest(tmp_path).rows.values()}) >= 2
    assert summary.exported == reference.exported


@pytest.mark.parametrize("form", ["export", "shards"])
def test_training_dataset_reads_the_export(reference_run, form):
    from kaleido_s2v.training.config import DataConfig
    from kaleido_s2v.training.datasets import VideoSampleDataset

    run_dir, summary = reference_run
    config = DataConfig(paths=(str(run_dir / form),), resolutions=((64, 64),), num_frames=9, fps=8.0)
    dataset = VideoSampleDataset(config)
    assert len(dataset) == len(summary.exported)
    example = dataset[0]
    assert example.pixels.shape == (3, 9, 64, 64)
    assert example.references.shape[1:] == (3, 64, 64)
    assert example.references.shape[0] == example.bucket.num_references >= 1
    assert -1.0 <= float(example.pixels.min()) and float(example.pixels.max()) <= 1.0
    # the trainer takes the exported clip as is (meta/ present: no skipping or resampling)
    frames, _ = next(s for s in iter_samples(run_dir / form) if s.id == example.key).read_video()
    expected = torch_from(frames)
    assert float((example.pixels - expected).abs().max()) < 1e-5


def torch_from(frames: np.ndarray):
    import torch

    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


# A run in miniature: it probes the scenes on a `LocalExecutor` pool of two workers, prints the
# workers' pids and waits, its pool still open; the test then kills it with SIGKILL.
_POOL_PARENT = """
import multiprocessing, sys, time
from pathlib import Path
from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.runner import LocalExecutor, Task, build_stages, discover_inputs, video_item
from kaleido_s2v.data.stages.base import Context

config = config_from_dict({"inputs": [sys.argv[1]], "run_dir": sys.argv[2], "workers": 2})
context = Context(run_dir=Path(sys.argv[2]), artifact_dir=Path("artifacts"), upstream={})
tasks = [Task("probe", video_item(path, 0)[0], context) for path in discover_inputs(config.inputs)]
executor = LocalExecutor(config, build_stages(config))
for _ in executor.map(tasks):
    pass
print(" ".join(str(child.pid) for child in multiprocessing.active_children()), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped yet, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
def test_pool_workers_end_when_the_run_is_killed(easy_scenes, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    log = tmp_path / "parent.log"  # also takes the pool's warnings after the kill, out of the test output
    with log.open("w") as stderr:
        parent = subprocess.Popen(
            [sys.executable, "-c", _POOL_PARENT, str(easy_scenes), str(tmp_path / "run")],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    workers: list[int] = []
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers), log.read_text()
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "pool workers outlived the killed run"
    finally:
        parent.kill()
        parent.stdout.close()
        for pid in workers:  # the workers this test started, should the assertion have failed
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_split_fans_videos_out_into_the_clips_the_later_stages_see(reference_run):
    """3 scenes of 3 shots, one clip per shot: 9 clips reach `caption`, and the funnel says why."""
    _, summary = reference_run
    split = summary.funnel["split"]
    assert split["in"] == split["kept"] == 3
    assert split["shots"] == {"total": 9, "clipped": 9, "dropped": {}}
    assert split["clips"] == summary.funnel["caption"]["in"] == 9
    assert "subjects_dropped" in summary.funnel["filter"]
    assert not {"shots", "clips", "subjects_dropped"} & set(summary.funnel["caption"])
