"""`kaleido-s2v data synth` and `data run --executor/--workers` end to end through `kaleido_s2v.cli.main`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from kaleido_s2v.cli import main
from kaleido_s2v.common.video_io import probe_video, read_video
from kaleido_s2v.data.manifest import Manifest
from kaleido_s2v.data.samples import iter_samples


def test_synth_writes_count_scenes_that_decode_and_name_their_subjects(tmp_path, capsys):
    from kaleido_s2v.data.synthetic import SceneConfig, render_scene

    out = tmp_path / "scenes"
    argv = ["data", "synth", str(out), "--count", "3", "--seed", "5", "--size", "32", "48"]
    argv += ["--shots", "2", "--frames-per-shot", "5", "--fps", "6"]
    assert main(argv) == 0
    assert f"wrote 3 scenes to {out}" in capsys.readouterr().out
    names = [f"scene{i:03d}" for i in range(3)]
    expected_files = sorted(f"{n}{ext}" for n in names for ext in (".json", ".mp4"))
    assert sorted(p.name for p in out.iterdir()) == expected_files

    labels_per_scene = []
    for i, name in enumerate(names):
        info = probe_video(out / f"{name}.mp4")
        assert (info.num_frames, info.height, info.width) == (2 * 5, 32, 48)
        assert info.fps == pytest.approx(6.0)
        truth = json.loads((out / f"{name}.json").read_text())
        assert truth["name"] == name
        assert (truth["num_frames"], truth["height"], truth["width"], truth["fps"]) == (10, 32, 48, 6.0)
        assert truth["config"]["seed"] == 5 + i  # one seed per scene, from --seed on
        # every subject is named ("<texture> <colour> <shape>"), once, and every shot's caption names it
        subjects = truth["subjects"]
        assert 1 <= len(subjects) <= 3
        labels = [s["label"] for s in subjects]
        assert len(set(labels)) == len(labels)
        for subject in subjects:
            assert subject["label"] == f"{subject['texture']} {subject['colour']} {subject['shape']}"
        assert [(s["start"], s["end"]) for s in truth["shots"]] == [(0, 5), (5, 10)]
        for shot in truth["shots"]:
            assert all(label in shot["caption"] for label in labels), shot["caption"]
            assert [s["label"] for s in shot["subjects"]] == labels
            assert all(len(s["boxes"]) == len(s["masks"]) == 5 for s in shot["subjects"])
        labels_per_scene.append(tuple(labels))

        # the CLI's flags reach the renderer: the files are the scene the API draws with those settings
        config = SceneConfig(height=32, width=48, num_shots=2, frames_per_shot=5, fps=6.0, seed=5 + i)
        frames, expected = render_scene(config)
        assert truth == {**json.loads(json.dumps(expected)), "name": name}
        decoded, fps = read_video(out / f"{name}.mp4")
        assert decoded.shape == frames.shape == (10, 32, 48, 3) and fps == pytest.approx(6.0)
        # H.264 is lossy; the decoded frames stay close to the drawn ones
        assert np.abs(decoded.astype(np.int16) - frames.astype(np.int16)).mean() < 8
    assert len(set(labels_per_scene)) == 3  # different seeds, different casts


# --------------------------------------------------------------------------- data run --executor / --workers


def _write_config(path: Path, inputs: Path, **values) -> Path:
    """The tiniest pipeline config: ground-truth captions, boxes and masks, 9-frame clips."""
    config = {
        "inputs": [str(inputs)],
        "run_dir": "runs/from-config",
        "split": {"num_frames": 9, "fps": 8.0, "min_scene_len": 5},
        "caption": {"backend": "ground_truth"},
        "detect": {"backend": "ground_truth"},
        "segment": {"backend": "ground_truth"},
        "references": {"match": "appearance", "variants": ["cutout"]},
        **values,
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _workers(run_dir: Path) -> set[str]:
    return {row["worker"] for row in Manifest(run_dir).rows.values()}


@pytest.fixture(scope="module")
def local_cli_run(easy_scenes, tmp_path_factory):
    """`data run` of a config that says ray with 2 workers, overridden to local with 1 worker on the
    command line (and its run folder moved with --run-dir)."""
    root = tmp_path_factory.mktemp("cli_local")
    config = _write_config(root / "run.yaml", easy_scenes, executor="ray", workers=2)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        flags = ["--executor", "local", "--workers", "1", "--run-dir", "runs/local", "--no-progress"]
        status = main(["data", "run", str(config), *flags])
    finally:
        os.chdir(cwd)
    return status, root


def test_run_flags_override_the_configs_executor_workers_and_run_dir(local_cli_run):
    status, root = local_cli_run
    assert status == 0
    run_dir = root / "runs" / "local"
    assert not (root / "runs" / "from-config").exists()
    # local with one worker runs every stage call in this very process; Ray (the config's executor)
    # would have run them in its worker processes
    assert _workers(run_dir) == {f"{socket.gethostname()}:{os.getpid()}"}
    record = json.loads((run_dir / "run.json").read_text())
    samples = list(iter_samples(run_dir / "export"))
    assert len(samples) == len(record["exported"]) >= 3
    assert sorted(s.id for s in samples) == sorted(record["exported"])
    funnel = json.loads((run_dir / "funnel.json").read_text())
    assert funnel["export"]["kept"] == len(samples)
    for sample in samples:
        frames, _ = sample.read_video()
        assert frames.shape == (9, 64, 64, 3)
        assert len(sample.reference_images()) == len(sample.meta["subjects"]) >= 1


def test_run_executor_ray_flag_runs_in_ray_workers_with_the_local_result(
    easy_scenes, local_cli_run, tmp_path, monkeypatch, capsys
):
    _, local_root = local_cli_run
    local_dir = local_root / "runs" / "local"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    config = _write_config(tmp_path / "run.yaml", easy_scenes, executor="local", workers=1)
    monkeypatch.chdir(tmp_path)
    argv = ["data", "run", str(config), "--executor", "ray", "--workers", "2", "--run-dir", "runs/ray"]
    assert main([*argv, "--no-progress"]) == 0
    run_dir = tmp_path / "runs" / "ray"
    workers = _workers(run_dir)
    assert workers and not any(w.endswith(f":{os.getpid()}") for w in workers)  # all ran in Ray workers
    assert Manifest(run_dir).comparable_rows() == Manifest(local_dir).comparable_rows()
    assert json.loads((run_dir / "funnel.json").read_text()) == json.loads(
        (local_dir / "funnel.json").read_text()
    )
    ray_samples = {s.id: s for s in iter_samples(run_dir / "export")}
    local_samples = {s.id: s for s in iter_samples(local_dir / "export")}
    assert ray_samples.keys() == local_samples.keys() and ray_samples
    for sample_id, sample in ray_samples.items():
        assert sample.meta == local_samples[sample_id].meta
        assert sample.video_bytes() == local_samples[sample_id].video_bytes()
    out = capsys.readouterr().out
    assert f"{len(ray_samples)} samples in" in out


def test_run_workers_zero_on_the_command_line_is_an_error_not_the_configs_value(
    easy_scenes, tmp_path, capsys
):
    config = _write_config(tmp_path / "run.yaml", easy_scenes, run_dir=str(tmp_path / "run"))
    assert main(["data", "run", str(config), "--workers", "0", "--no-progress"]) == 2
    assert "workers must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
