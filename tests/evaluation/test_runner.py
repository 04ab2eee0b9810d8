"""`kaleido-s2v eval` end to end on synthetic cases: outputs, bad input, cache, controls, compare."""

import csv
import json
from html.parser import HTMLParser

import numpy as np
import pytest

from evaluation.eval_scenes import (
    block_square,
    empty_video,
    green_background,
    make_video,
    moving_video,
    save_png,
    striped_ball,
    write_cases,
)
from kaleido_s2v.cli import main
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.runner import derangement, evaluate, run_eval


@pytest.fixture
def eval_folder(tmp_path, ball_reference):
    """Three good cases, a 0-frame video, a missing reference, a missing video and a bad line."""
    square, square_mask = block_square(40)
    canvas = np.full((48, 48, 3), 255, np.uint8)
    canvas[4 : 4 + square.shape[0], 4 : 4 + square.shape[1]][square_mask] = square[square_mask]
    save_png(tmp_path / "refs" / "square.png", canvas)
    ball, ball_mask = striped_ball(30)
    small_square, small_mask = block_square(30)
    background = green_background()
    videos = tmp_path / "videos"
    make_video(videos / "right.mp4", moving_video(background, ball, ball_mask))
    make_video(videos / "left.mp4", moving_video(background, ball, ball_mask, start=(80, 30), step=(-4, 0)))
    make_video(
        videos / "square.mp4", moving_video(background, small_square, small_mask, step=(0, 2), start=(50, 10))
    )
    empty_video(videos / "empty.mp4")
    make_video(videos / "noref.mp4", moving_video(background, ball, ball_mask, frames=5))
    ref = [{"path": "refs/ball.png", "label": "ball"}]
    cases = write_cases(
        tmp_path / "cases.jsonl",
        [
            {"id": "right", "prompt": "a ball moves right", "references": ref},
            {"id": "left", "prompt": "a ball moves left", "references": ref},
            {"id": "square", "prompt": "a square moves down", "references": [{"path": "refs/square.png"}]},
            {"id": "empty", "prompt": "nothing", "references": ref},
            {"id": "noref", "prompt": "a ball", "references": [{"path": "refs/gone.png", "label": "ball"}]},
            {"id": "novideo", "prompt": "a ball", "references": ref},
        ],
    )
    cases.write_text(cases.read_text() + '{"id": "broken", "prompt": \n')
    return tmp_path, videos, cases


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_cli_scores_good_cases_reports_bad_ones_and_writes_the_report(eval_folder, capsys):
    root, videos, cases = eval_folder
    out = root / "report"
    assert (
        main(["eval", "--videos", str(videos), "--cases", str(cases), "--out", str(out), "--frames", "6"])
        == 1  # four cases failed
    )
    printed = capsys.readouterr()
    assert (
        "not comparable" in printed.out and "3 of 7 cases scored (0 with a warning), 4 failed" in printed.out
    )
    assert len([line for line in printed.err.splitlines() if line.startswith("warning: ")]) == 4

    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["cases"]) == ["left", "right", "square"]
    assert metrics["num_scored"] == 3 and metrics["num_cases"] == 7 and metrics["num_failed"] == 4
    assert sorted(f["id"] or f"line {f['line']}" for f in metrics["failed_cases"]) == [
        "empty",
        "line 7",
        "noref",
        "novideo",
    ]
    errors = {(e["case"], e["stage"]): e["error"] for e in metrics["errors"]}
    assert "0 frames" in errors[("empty", "scoring")] or "no video stream" in errors[("empty", "scoring")]
    assert "gone.png" in errors[("noref", "case file")]
    assert "novideo.mp4" in errors[("novideo", "video")]
    assert any(case is None and stage == "case file" for case, stage in errors)  # the bad line (line 7)
    assert any(e["line"] == 7 for e in metrics["errors"])
    assert metrics["summary"]["motion_accuracy"] == {"mean": 1.0, "n": 3}
    assert metrics["summary"]["decoupling"] == {
        "mean": None,
        "n": 0,
        "no_background_references": 3,
        "subject_not_found_references": 0,
    }
    assert metrics["controls"]["chance"]["consistency"]["n"] == 3
    assert metrics["controls"]["motion_accuracy_uniform"] == pytest.approx(0.2)
    assert (
        "text_alignment" in metrics["unavailable"] and "offline" in metrics["unavailable"]["text_alignment"]
    )
    assert "not comparable" in metrics["comparability"]

    rows = list(csv.DictReader((out / "cases.csv").open()))
    by_id = {row["case_id"]: row for row in rows}
    assert set(by_id) >= {"right", "left", "square", "empty", "noref", "novideo"}
    assert by_id["right"]["decoupling"] == "" and by_id["right"]["no_background_references"] == "1"
    assert float(by_id["right"]["consistency"]) > 0.5 and by_id["right"]["error"] == ""
    assert by_id["novideo"]["consistency"] == "" and "novideo.mp4" in by_id["novideo"]["error"]

    parser = _Collector()
    parser.feed((out / "report.html").read_text())
    assert "table" in parser.tags and len(parser.images) >= 5  # 2 plots + 3 strips
    for src in parser.images:
        png = out / src
        assert png.is_file() and png.stat().st_size > 500
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_reuses_results_and_a_changed_video_is_rescored(eval_folder):
    root, videos, cases = eval_folder
    config = EvalConfig(num_frames=4)
    first = evaluate(videos, cases, config, cache_dir=root / "cache", controls=False, progress=False)
    second = evaluate(videos, cases, config, cache_dir=root / "cache", controls=False, progress=False)
    assert first.cached == 0 and second.cached == 3
    assert {k: v.to_json() for k, v in first.scores.items()} == {
        k: v.to_json() for k, v in second.scores.items()
    }
    ball, ball_mask = striped_ball(30)
    make_video(videos / "right.mp4", moving_video(green_background(), ball, ball_mask, step=(2, 0)))
    third = evaluate(videos, cases, config, cache_dir=root / "cache", controls=False, progress=False)
    assert third.cached == 2
    other_config = evaluate(
        videos, cases, EvalConfig(num_frames=5), cache_dir=root / "cache", controls=False, progress=False
    )
    assert other_config.cached == 0


def test_chance_control_scores_each_case_on_another_cases_video(eval_folder):
    root, videos, cases = eval_folder
    result = evaluate(videos, cases, EvalConfig(num_frames=4), controls=True, progress=False)
    assert set(result.chance) == set(result.scores)
    for case_id, score in result.chance.items():
        assert score.case_id == case_id and not score.video.endswith(f"{case_id}.mp4")
    # The square's reference on a ball video (and vice versa) is worse than its own video.
    assert result.chance["square"].consistency < result.scores["square"].consistency
    order = derangement(5, seed=3)
    assert sorted(order) == list(range(5)) and all(i != j for i, j in enumerate(order))


def test_compare_puts_two_runs_side_by_side(eval_folder, capsys):
    root, videos, cases = eval_folder
    config = EvalConfig(num_frames=4)
    run_eval(videos, cases, root / "a", config, controls=False, report=False, progress=False)
    ball, ball_mask = striped_ball(30)
    make_video(videos / "right.mp4", moving_video(green_background(), ball, ball_mask, step=(0, 0)))
    run_eval(videos, cases, root / "b", config, controls=False, report=False, progress=False)
    assert main(["eval", "--compare", str(root / "a"), str(root / "b"), "--out", str(root / "cmp")]) == 0
    comparison = json.loads((root / "cmp" / "compare.json").read_text())
    assert comparison["cases_in_both"] == 3 and comparison["warnings"] == []
    assert comparison["summary"]["motion_accuracy"]["delta"] == pytest.approx(-1 / 3)
    assert comparison["per_case_delta"]["right"]["motion_amplitude"] < 0
    assert comparison["per_case_delta"]["left"]["consistency"] == 0
    assert (root / "cmp" / "compare.html").read_text().count("<tr>") == len(comparison["summary"]) + 1
    assert (root / "cmp" / "report_assets" / "compare.png").stat().st_size > 500
    assert "motion_accuracy" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--videos",
                str(tmp_path / "nope"),
                "--cases",
                str(tmp_path / "c.jsonl"),
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--out", str(tmp_path)]) == 2
    assert "--videos" in capsys.readouterr().err


def test_chance_control_can_use_ground_truth_clips(eval_folder):
    root, videos, cases = eval_folder
    truth = root / "truth"
    ball, ball_mask = striped_ball(30)
    for case_id in ("right", "left", "square"):
        make_video(
            truth / f"{case_id}.mp4",
            moving_video(green_background(), ball, ball_mask, step=(0, -2), start=(50, 60)),
        )
    result = evaluate(
        videos, cases, EvalConfig(num_frames=4), controls=True, progress=False, chance_videos=truth
    )
    assert all(score.video.startswith(str(truth)) for score in result.chance.values())
    assert all(not score.video.endswith(f"/{case_id}.mp4") for case_id, score in result.chance.items())
    assert result.chance["right"].subjects[0].observed_direction == "up"


def test_a_case_with_several_warnings_has_one_warning_with_every_reason():
    from kaleido_s2v.evaluation.runner import one_warning_per_case

    warnings = [
        {"id": "a", "line": 1, "reason": "video a.mp4 is 64x64, not the run's 128x96"},
        {"id": "b", "line": 2, "reason": "reference 'cat': subject not found in the reference"},
        {"id": "a", "line": 1, "reason": "reference 'dog': subject not found in the reference"},
    ]
    assert one_warning_per_case(warnings) == [
        {
            "id": "a",
            "line": 1,
            "reason": "video a.mp4 is 64x64, not the run's 128x96; "
            "reference 'dog': subject not found in the reference",
        },
        warnings[1],
    ]
    assert warnings[0]["reason"].endswith("128x96")  # the input is left as it was
