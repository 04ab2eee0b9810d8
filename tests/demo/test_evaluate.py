"""Held-out evaluation of a demo run: the model, its controls and the ground-truth calibration."""

from __future__ import annotations

import json

import pytest

from kaleido_s2v.demo.bundled import bundled_model_path
from kaleido_s2v.demo.evaluate import FIGURES, evaluate_run, format_table, generate_cases, shuffled_cases
from kaleido_s2v.pipelines.generate import load_model


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


def test_generate_cases_names_the_cases_it_could_not_generate(tmp_path, capsys):
    cases = tmp_path / "cases.jsonl"
    case = {
        "id": "lost",
        "prompt": "a red star",
        "references": [{"path": "missing.png", "label": "red star"}],
    }
    cases.write_text(json.dumps(case) + "\n")
    with pytest.raises(RuntimeError, match=r"failed for case\(s\) \['lost'\]"):
        generate_cases(load_model(bundled_model_path(), device="cpu"), cases, tmp_path / "videos")
    captured = capsys.readouterr()
    assert "missing.png" in captured.err  # the case's own reason, logged as it failed
    assert f"{tmp_path / 'videos'}: 0 generated, 0 already done, 1 failed" in captured.out


def test_evaluate_run_raises_the_reason_the_model_does_not_load(tmp_path, reduced_config):
    (tmp_path / "heldout").mkdir()
    cases = [
        {
            "id": f"case{i}",
            "prompt": "a red star",
            "references": [{"path": f"ref{i}.png", "label": "red star"}],
        }
        for i in range(2)
    ]
    (tmp_path / "heldout" / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    (tmp_path / "pipeline").mkdir()
    index = {"_class_name": "KaleidoPipeline", "transformer": ["kaleido_s2v", "KaleidoTransformer3DModel"]}
    (tmp_path / "pipeline" / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="transformer"):
        evaluate_run(tmp_path, reduced_config, progress=False)


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
