"""`kaleido-s2v eval` on inputs it cannot score: each bad case fails alone, with its reason."""

import csv
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from evaluation.eval_scenes import green_background, make_video, moving_video, striped_ball, write_cases
from kaleido_s2v.cli import main
from kaleido_s2v.common.cases import Case, CaseReference
from kaleido_s2v.evaluation import scoring
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.runner import evaluate
from kaleido_s2v.evaluation.scoring import score_video

BAD_CASES = ("one_frame", "tiny", "zero_byte", "text", "bomb")


def _ball_frames() -> list[np.ndarray]:
    ball, mask = striped_ball(30)
    return moving_video(green_background(), ball, mask)  # 17 frames of 128x96


def _decompression_bomb(path):
    """A 20000x20000 constant PNG (~48 KB): more pixels than PIL opens without DecompressionBombError."""
    Image.new("P", (20000, 20000)).save(path)
    return path


@pytest.fixture
def bad_folder(tmp_path, ball_reference):
    """Two good 128x96 cases, one scorable 64x48 case, and one case per kind of unscorable input."""
    frames = _ball_frames()
    videos = tmp_path / "videos"
    make_video(videos / "right.mp4", frames)
    make_video(videos / "left.mp4", frames[::-1])
    make_video(videos / "small.mp4", [cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in frames])
    make_video(videos / "one_frame.mp4", frames[:1])
    make_video(videos / "tiny.mp4", [np.full((2, 2, 3), 200, np.uint8)] * 17)
    (videos / "zero_byte.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("this is a text file, not a video\n")
    make_video(videos / "bomb.mp4", frames)
    bomb = _decompression_bomb(tmp_path / "refs" / "huge.png")
    ball = [{"path": "refs/ball.png", "label": "ball"}]
    cases = write_cases(
        tmp_path / "cases.jsonl",
        [
            {"id": "right", "prompt": "a ball moves right", "references": ball},
            {"id": "left", "prompt": "a ball moves left", "references": ball},
            {"id": "small", "prompt": "a ball moves right", "references": ball},
            *({"id": case_id, "prompt": "a ball", "references": ball} for case_id in BAD_CASES[:-1]),
            {"id": "bomb", "prompt": "a ball", "references": [{"path": str(bomb), "label": "ball"}]},
        ],
    )
    return tmp_path, videos, cases


def test_cli_scores_the_good_cases_records_each_bad_one_and_exits_nonzero(bad_folder, capsys):
    root, videos, cases = bad_folder
    out = root / "report"
    code = main(["eval", "--videos", str(videos), "--cases", str(cases), "--out", str(out), "--frames", "4"])
    printed = capsys.readouterr()
    assert code == 1

    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["cases"]) == ["left", "right", "small"]
    assert (metrics["num_cases"], metrics["num_scored"], metrics["num_failed"]) == (8, 3, 5)
    reasons = {failure["id"]: failure["reason"] for failure in metrics["failed_cases"]}
    assert sorted(reasons) == sorted(BAD_CASES)
    assert "1 frame" in reasons["one_frame"] and "at least 2" in reasons["one_frame"]
    assert "2x2" in reasons["tiny"] and f"{scoring.MIN_SIDE} px" in reasons["tiny"]
    assert "zero_byte.mp4" in reasons["zero_byte"] and "0 bytes" in reasons["zero_byte"]
    assert "text.mp4" in reasons["text"]
    assert "huge.png" in reasons["bomb"] or "DecompressionBombError" in reasons["bomb"]
    assert [w["id"] for w in metrics["warnings"]] == ["small"] and metrics["num_warnings"] == 1
    assert "64x48" in metrics["warnings"][0]["reason"] and "128x96" in metrics["warnings"][0]["reason"]

    rows = {row["case_id"]: row for row in csv.DictReader((out / "cases.csv").open())}
    assert all(rows[case_id]["error"] == reasons[case_id] for case_id in BAD_CASES)
    assert rows["small"]["error"] == "" and "64x48" in rows["small"]["warning"]
    assert (out / "report.html").is_file()

    assert "Traceback" not in printed.out + printed.err
    warnings = printed.err.splitlines()
    for case_id in (*BAD_CASES, "small"):
        assert len([line for line in warnings if line.startswith(f"warning: case {case_id} ")]) == 1
    assert "3 of 8 cases scored (1 with a warning), 5 failed" in printed.out


def test_score_video_refuses_frames_too_few_or_too_small_and_scores_the_smallest_fit(ball_reference):
    case = Case(id="c", prompt="a ball", references=[CaseReference(ball_reference, "ball")])
    config = EvalConfig(num_frames=4)
    for shape, reason in (((1, 96, 128), "1 frame"), ((17, 2, 2), "2x2"), ((5, 15, 128), "128x15")):
        with pytest.raises(ValueError, match=f"{reason}.*scoring needs at least"):
            score_video(np.full((*shape, 3), 90, np.uint8), case, config)
    smallest = np.full((5, scoring.MIN_SIDE, scoring.MIN_SIDE, 3), 90, np.uint8)
    assert score_video(smallest, case, config).width == scoring.MIN_SIDE


def test_a_cached_score_of_an_unfit_video_is_checked_again(tmp_path, ball_reference, monkeypatch):
    """A cache written before the checks existed must not bring a 2x2 video's score back."""
    make_video(tmp_path / "videos" / "tiny.mp4", [np.full((2, 2, 3), 200, np.uint8)] * 5)
    cases = [Case(id="tiny", prompt="a ball", references=[CaseReference(ball_reference, "ball")])]
    with monkeypatch.context() as patched:
        patched.setattr(scoring, "check_video_fit", lambda *args: None)
        first = evaluate(tmp_path / "videos", cases, cache_dir=tmp_path / "cache", progress=False)
    assert list(first.scores) == ["tiny"]
    again = evaluate(tmp_path / "videos", cases, cache_dir=tmp_path / "cache", progress=False)
    assert again.scores == {} and "2x2" in again.errors[0]["error"]


def test_an_unexpected_error_in_one_case_is_recorded_on_one_line(tmp_path, ball_reference, monkeypatch):
    frames = _ball_frames()
    for case_id in ("a", "b"):
        make_video(tmp_path / "videos" / f"{case_id}.mp4", frames)
    cases = [Case(id=i, prompt="a ball", references=[CaseReference(ball_reference, "ball")]) for i in "ab"]
    real = scoring.score_video

    def flaky(video, case, *args):
        if case.id == "b":
            raise IndexError("index 7 is out of bounds\nfor axis 0")
        return real(video, case, *args)

    monkeypatch.setattr("kaleido_s2v.evaluation.runner.score_video", flaky)
    result = evaluate(tmp_path / "videos", cases, EvalConfig(num_frames=4), controls=False, progress=False)
    assert list(result.scores) == ["a"]
    assert result.errors[0]["error"] == "IndexError: index 7 is out of bounds for axis 0"


def test_a_failed_chance_control_is_a_warning_line_not_a_failed_case(tmp_path, ball_reference, capsys):
    frames = _ball_frames()
    cases = [{"id": i, "prompt": "a ball", "references": [{"path": "refs/ball.png"}]} for i in ("a", "b")]
    for case_id in ("a", "b"):
        make_video(tmp_path / "videos" / f"{case_id}.mp4", frames)
    make_video(tmp_path / "truth" / "a.mp4", frames)  # no truth/b.mp4: a's control (on b's clip) fails
    code = main(
        [
            "eval",
            *("--videos", str(tmp_path / "videos"), "--cases", str(write_cases(tmp_path / "c.jsonl", cases))),
            *("--chance-videos", str(tmp_path / "truth"), "--out", str(tmp_path / "out"), "--frames", "4"),
        ]
    )
    printed = capsys.readouterr()
    assert code == 0 and "2 of 2 cases scored (0 with a warning), 0 failed" in printed.out
    [line] = [line for line in printed.err.splitlines() if line.startswith("warning: ")]
    assert line.startswith("warning: case a (line 1) chance control failed: ") and "truth/b.mp4" in line
