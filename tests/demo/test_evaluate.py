"""Held-out evaluation of a demo run: the model, its controls and the ground-truth calibration."""

from __future__ import annotations

import json

import pytest

from kaleido_s2v.demo.evaluate import FIGURES, evaluate_run, format_table, shuffled_cases


def test_shuffled_cases_give_every_case_another_cases_references(reduced_run, tmp_path):
    run_dir, _ = reduced_run
    cases_file = run_dir / "heldout" / "cases.jsonl"
    out = shuffled_cases(cases_file, tmp_path / "sub" / "shuffled.jsonl")
    original = [json.loads(line) for line in cases_file.read_text().splitlines()]
    shuffled = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["id"] for c in shuffled] == [c["id"] for c in original]
    assert [c["prompt"] for c in shuffled] == [c["prompt"] for c in original]
    for case, before in zip(shuffled, original, strict=True):
        assert case["references"] != before["references"]
        for reference in case["references"]:
            assert (out.parent / reference["path"]).is_file()


def test_heldout_cases_take_one_clip_per_scene(reduced_run):
    run_dir, _ = reduced_run
    cases = [json.loads(line) for line in (run_dir / "heldout" / "cases.jsonl").read_text().splitlines()]
    scenes = [case["id"].split("_")[0] for case in cases]
    assert len(cases) == 2 and len(set(scenes)) == len(scenes)


@pytest.mark.slow
def test_evaluate_run_scores_model_controls_and_calibration(reduced_run, reduced_config):
    run_dir, _ = reduced_run
    table = evaluate_run(run_dir, reduced_config, progress=False)
    assert set(table) == {
        "model",
        "chance",
        "shuffled_references",
        "untrained",
        "ground_truth",
        "vae_reconstruction",
        "motion_uniform_chance",
    }
    # the ground-truth clips are found and move as captioned: the scoring is calibrated
    assert (
        table["ground_truth"]["identity_accuracy"] == 1.0 and table["ground_truth"]["motion_accuracy"] == 1.0
    )
    for name in ("model", "shuffled_references", "untrained", "vae_reconstruction"):
        assert table[name]["n_subjects"] == table["ground_truth"]["n_subjects"] > 0
        assert (run_dir / "eval" / "videos" / name).is_dir()
    assert json.loads((run_dir / "eval" / "summary.json").read_text()) == table
    text = format_table(table)
    assert all(figure in text for figure in FIGURES) and "| untrained |" in text
    # the strip: per case a row of (references, generated frames) and one of (references, truth)
    from PIL import Image

    cases = [json.loads(line) for line in (run_dir / "heldout" / "cases.jsonl").read_text().splitlines()]
    with Image.open(run_dir / "eval" / "strip.png") as strip:
        width, height = strip.size
    slots = max(len(c["references"]) for c in cases)
    assert width == 2 * ((slots + 9) * 64 + 4)  # 64x64 cells, a 4-pixel gap, drawn at 2x
    assert height == 2 * (len(cases[:4]) * 2 * 64 + (len(cases[:4]) - 1) * 4)


def test_ablation_table_gives_mean_and_spread_over_seeds(tmp_path):
    from kaleido_s2v.demo.evaluate import ablation_table, format_ablation_table

    def run(name, identity, motion):
        folder = tmp_path / name
        (folder / "eval").mkdir(parents=True)
        row = dict.fromkeys(FIGURES, 0.0) | {"identity_accuracy": identity, "motion_accuracy": motion}
        (folder / "eval" / "summary.json").write_text(json.dumps({"model": row | {"decoupling": None}}))
        return folder

    table = ablation_table(
        {"kaleido": [run("a", 0.5, 0.2), run("b", 0.7, 0.4)], "none": [run("c", 0.1, 0.3)]}
    )
    assert table["kaleido"]["runs"] == 2
    assert table["kaleido"]["identity_accuracy"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7})
    assert table["none"]["motion_accuracy"] == {"mean": 0.3, "min": 0.3, "max": 0.3}
    assert table["kaleido"]["decoupling"] is None
    assert "| kaleido | 2 | 0.60 (0.50–0.70)" in format_ablation_table(table)
    with pytest.raises(FileNotFoundError, match="demo eval"):
        ablation_table({"missing": [tmp_path / "nowhere"]})
