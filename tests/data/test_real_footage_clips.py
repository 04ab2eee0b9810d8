"""The shipped offline config on the real-footage set: a clip from every shot of 3 s or more, and a hint
naming the split settings when every shot is too short."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaleido_s2v.data.config import load_config
from kaleido_s2v.data.manifest import Manifest
from kaleido_s2v.data.runner import run_pipeline

OFFLINE = Path(__file__).parents[2] / "configs" / "data" / "offline.yaml"


def _run(real_footage, run_dir: Path, **split):
    overrides = {"inputs": [str(real_footage["folder"] / "videos")], "run_dir": str(run_dir), "workers": 1}
    return run_pipeline(load_config(OFFLINE, {**overrides, "split": split}), progress=False)


def _found_shots(run_dir: Path) -> dict[str, list[dict]]:
    """Video name -> the shots `split` found in it (start, end, clips)."""
    rows = [row for row in Manifest(run_dir).rows.values() if row["stage"] == "split"]
    return {row["item_id"].rsplit("-", 1)[0]: json.loads(row["data"])["shots"] for row in rows}


def test_offline_config_cuts_a_clip_from_every_shot_of_3_s_or_more(real_footage, tmp_path):
    summary = _run(real_footage, tmp_path)
    found = _found_shots(tmp_path)
    for name, truth in real_footage["truth"].items():
        true_ranges = [(s["start"], s["end"]) for s in truth["shots"]]
        assert [(s["start"], s["end"]) for s in found[name]] == true_ranges  # the hard cuts, exactly
        for shot, true_shot in zip(found[name], truth["shots"], strict=True):
            if (true_shot["end"] - true_shot["start"]) / truth["fps"] >= 3.0:
                assert shot["clips"] >= 1, (name, shot)
    assert summary.funnel["split"]["clips"] >= 7 and "hint" not in summary.funnel["split"]


def test_every_shot_too_short_gives_a_hint_in_the_funnel_and_the_cli(real_footage, tmp_path, capsys):
    from kaleido_s2v.cli import main

    summary = _run(real_footage, tmp_path / "run", num_frames=81)
    assert summary.funnel["split"]["shots"]["clipped"] == 0
    hint = summary.funnel["split"]["hint"]
    for words in (
        "split.num_frames 81",
        "split.fps 16",
        "2.00 s (shortest)",
        "4.00 s (longest)",
        "at most 57",
    ):
        assert words in hint
    assert json.loads((tmp_path / "run" / "funnel.json").read_text())["split"]["hint"] == hint

    config = tmp_path / "short.yaml"
    config.write_text(
        OFFLINE.read_text()
        .replace("[dataset/videos]", f"[{real_footage['folder'] / 'videos'}]")
        .replace("num_frames: 33", "num_frames: 81")
    )
    assert (
        main(
            [
                "data",
                "run",
                str(config),
                "--run-dir",
                str(tmp_path / "cli"),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["data", "report", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert out.count(f"hint: {hint}") == 2


@pytest.mark.parametrize("num_frames", [57, 61])
def test_the_hinted_num_frames_is_the_largest_that_fits(real_footage, tmp_path, num_frames):
    summary = _run(real_footage, tmp_path, num_frames=num_frames)
    assert (summary.funnel["split"]["clips"] > 0) == (num_frames == 57)
