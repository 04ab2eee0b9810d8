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
        "background_references",
    }
    # the ground-truth clips are found and move as captioned: the scoring is calibrated
    assert (
        table["ground_truth"]["identity_accuracy"] == 1.0 and table["ground_truth"]["motion_accuracy"] == 1.0
    )
    for name in ("model", "shuffled_references", "untrained", "vae_reconstruction"):
        assert table[name]["n_subjects"] == table["ground_truth"]["n_subjects"] > 0
        assert (run_dir / "eval" / "videos" / name).is_dir()
    assert json.loads((run_dir / "eval" / "summary.json").read_text()) == table
    # the leakage rows: every reference now has a background, so decoupling is measured for each one
    leakage = table["background_references"]
    assert set(leakage) == {"model", "chance", "ground_truth"}
    for row in leakage.values():
        assert row["n_decoupling"] == row["n_subjects"] == table["ground_truth"]["n_subjects"]
        assert row["decoupling"] is not None
    assert leakage["ground_truth"]["identity_accuracy"] == 1.0
    assert (run_dir / "eval" / "strip_background.png").is_file()
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

    def run(name, identity, motion, leakage_decoupling, background_references=True):
        folder = tmp_path / name
        (folder / "eval").mkdir(parents=True)
        row = dict.fromkeys(FIGURES, 0.0) | {"identity_accuracy": identity, "motion_accuracy": motion}
        summary = {"model": row | {"decoupling": 0.99}}
        if background_references:
            summary["background_references"] = {"model": row | {"decoupling": leakage_decoupling}}
        (folder / "eval" / "summary.json").write_text(json.dumps(summary))
        return folder

    table = ablation_table(
        {"kaleido": [run("a", 0.5, 0.2, 0.8), run("b", 0.7, 0.4, 0.6)], "none": [run("c", 0.1, 0.3, None)]}
    )
    assert table["kaleido"]["runs"] == 2
    assert table["kaleido"]["identity_accuracy"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7})
    assert table["none"]["motion_accuracy"] == {"mean": 0.3, "min": 0.3, "max": 0.3}
    # decoupling comes from the background-reference cases, not the cut-out ones
    assert table["kaleido"]["decoupling"] == pytest.approx({"mean": 0.7, "min": 0.6, "max": 0.8})
    assert table["none"]["decoupling"] is None
    text = format_ablation_table(table)
    assert "| kaleido | 2 | 0.60 (0.50–0.70)" in text and "decoupling (background refs)" in text
    with pytest.raises(FileNotFoundError, match="demo eval"):
        ablation_table({"missing": [tmp_path / "nowhere"]})
    with pytest.raises(ValueError, match="rerun `kaleido-s2v demo eval`"):
        ablation_table({"old": [run("d", 0.1, 0.1, 0.5, background_references=False)]})


def test_background_cases_crop_each_subject_from_another_background(reduced_run, tmp_path):
    from kaleido_s2v.demo.data import write_background_cases
    from kaleido_s2v.evaluation.offline import offline_subject_mask
    from kaleido_s2v.evaluation.references import has_no_background, load_reference

    run_dir, _ = reduced_run
    cases_file = run_dir / "heldout" / "cases.jsonl"
    out = write_background_cases(
        cases_file,
        run_dir / "data" / "heldout" / "export",
        run_dir / "scenes" / "heldout",
        tmp_path / "bg.jsonl",
    )
    original = {c["id"]: c for c in map(json.loads, cases_file.read_text().splitlines())}
    cases = [json.loads(line) for line in out.read_text().splitlines()]
    record = json.loads((tmp_path / "bg.json").read_text())
    left_out, sources = record["left_out"], record["sources"]
    assert len(cases) + len(left_out) == len(original) and cases
    for case in cases:
        before = original[case["id"]]
        assert case["prompt"] == before["prompt"] and case["seed"] == before["seed"]
        assert [r["label"] for r in case["references"]] == [r["label"] for r in before["references"]]
        meta = json.loads(
            (run_dir / "data" / "heldout" / "export" / "meta" / f"{case['id']}.json").read_text()
        )
        scene = json.loads(
            (run_dir / "scenes" / "heldout" / f"{meta['source']['video'].rsplit('-', 1)[0]}.json").read_text()
        )
        target_background = scene["shots"][meta["source"]["shot"]]["background"]
        assert target_background in case["prompt"]
        for reference, source in zip(case["references"], sources[case["id"]], strict=True):
            assert source["background"] != target_background
            assert source["shot"] != meta["source"]["shot"]
            image = load_reference(out.parent / reference["path"], reference["label"])
            subject = offline_subject_mask(image, white_tolerance=10)
            # a real background around the subject, and not the one the prompt asks for
            assert not has_no_background(image, subject, 10, 0.95)
            assert 0 < subject.mean() < 1


def test_ablation_table_cli_stacks_each_cells_strips(tmp_path, capsys):
    from PIL import Image

    from kaleido_s2v.cli import main
    from kaleido_s2v.demo.strip import GAP, LABEL_HEIGHT

    cells = []
    for name, (width, height) in {"kaleido": (40, 20), "naive": (60, 24)}.items():
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        row = dict.fromkeys(FIGURES, 0.5)
        summary = {"model": row, "background_references": {"model": row}}
        (run / "eval" / "summary.json").write_text(json.dumps(summary))
        for strip in ("strip.png", "strip_background.png"):
            Image.new("RGB", (width, height), "red").save(run / "eval" / strip)
        cells += ["--cell", f"{name}={run}"]
    out, background = tmp_path / "strips.png", tmp_path / "leakage.png"
    assert (
        main(["demo", "ablation-table", *cells, "--strips", str(out), "--background-strips", str(background)])
        == 0
    )
    for picture in (out, background):
        with Image.open(picture) as image:
            # each strip shrunk by 2 under its label bar, a gap between cells, as wide as the widest
            assert image.size == (30, 2 * LABEL_HEIGHT + 10 + 12 + 2 * GAP)
            assert image.getpixel((0, LABEL_HEIGHT + 1)) == (255, 0, 0)
    assert "| kaleido | 1 |" in capsys.readouterr().out
