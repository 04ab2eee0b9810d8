"""OpenS2V-Eval's case list: conversion into our schema, and the runner's leaderboard label."""

import json

import numpy as np
import pytest

from evaluation.eval_scenes import green_background, make_video, moving_video, save_png, striped_ball
from kaleido_s2v.cli import main
from kaleido_s2v.common.cases import read_cases
from kaleido_s2v.evaluation.opens2v import convert_opens2v, write_opens2v_cases


@pytest.fixture
def opens2v_root(tmp_path):
    image, _ = striped_ball(40)
    save_png(tmp_path / "OpenS2V-Eval" / "Images" / "ball" / "1.png", image)
    save_png(tmp_path / "OpenS2V-Eval" / "Images" / "ball" / "2.png", image)
    document = {
        "singleobj_1": {
            "img_paths": ["Images/ball/1.png"],
            "prompt": "a ball rolls right",
            "class_label": ["ball"],
            "synthesis_flag": "False",
        },
        "multiobject_3": {
            "img_paths": ["Images/ball/1.png", "Images/ball/2.png"],
            "prompt": "two balls",
            "class_label": ["ball", "toy"],
        },
        "singleobj_2": {"img_paths": ["Images/ball/missing.png"], "prompt": "gone", "class_label": ["ball"]},
        "singleobj_4": {"img_paths": ["Images/ball/1.png"], "prompt": "", "class_label": ["ball"]},
        "singleobj_5": {
            "img_paths": ["Images/ball/1.png"],
            "prompt": "labels mismatch",
            "class_label": ["a", "b"],
        },
    }
    path = tmp_path / "OpenS2V-Eval" / "Open-Domain_Eval.json"
    path.write_text(json.dumps(document))
    return path


def test_convert_keeps_ids_labels_and_paths_and_reports_bad_entries(opens2v_root, tmp_path):
    cases, errors = convert_opens2v(opens2v_root)
    assert [c.id for c in cases] == ["singleobj_1", "multiobject_3"]
    assert cases[1].labels == ["ball", "toy"]
    assert cases[0].references[0].path == opens2v_root.parent / "Images" / "ball" / "1.png"
    reasons = {e.id: e.reason for e in errors}
    assert "missing.png" in reasons["singleobj_2"] and "prompt" in reasons["singleobj_4"]
    assert "2 class labels for 1 images" in reasons["singleobj_5"]
    assert [e.line for e in errors] == [3, 4, 5]

    written, _ = write_opens2v_cases(opens2v_root, tmp_path / "out" / "cases.jsonl")
    assert read_cases(tmp_path / "out" / "cases.jsonl") == written


def test_runner_labels_figures_not_comparable_to_the_leaderboard(opens2v_root, tmp_path):
    ball, mask = striped_ball(30)
    videos = tmp_path / "videos"
    make_video(videos / "singleobj_1.mp4", moving_video(green_background(), ball, mask, frames=9))
    make_video(videos / "multiobject_3.mp4", moving_video(green_background(), ball, mask, frames=9))
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            "--opens2v",
            str(opens2v_root),
            "--videos",
            str(videos),
            "--out",
            str(out),
            "--frames",
            "4",
            "--no-report",
        ]
    )
    assert code == 1  # three of its cases are bad
    metrics = json.loads((out / "metrics.json").read_text())
    assert "not comparable to the leaderboard" in metrics["comparability"]
    assert metrics["num_scored"] == 2 and {e["case"] for e in metrics["errors"]} == {
        "singleobj_2",
        "singleobj_4",
        "singleobj_5",
    }
    assert metrics["cases"]["singleobj_1"]["subjects"][0]["motion_correct"] is True
    assert len(read_cases(out / "opens2v_cases.jsonl")) == 2
    assert np.isfinite(metrics["summary"]["consistency"]["mean"])
