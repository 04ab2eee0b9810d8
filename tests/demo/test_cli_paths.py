"""`kaleido-s2v demo train --reduced`, `demo eval --reduced` and `demo bundle --to` end to end through the CLI.

One reduced run serves the three commands. `--reduced` names `configs/demo/reduced.yaml` relative to the
current directory, so the commands run from the repository root; every output goes to a temporary
folder, and the bundle goes to `--to` (the package's own bundled model is checked untouched).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kaleido_s2v.cli import main
from kaleido_s2v.common.video_io import probe_video

REPO = Path(__file__).resolve().parents[2]
REDUCED = "configs/demo/reduced.yaml"
TRANSFORMER_WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
CONTROLS = ("model", "shuffled_references", "untrained")

pytestmark = pytest.mark.slow


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _demo(*argv: str) -> tuple[int, str]:
    """`kaleido-s2v demo ...` run from the repository root: (exit status, stdout)."""
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.chdir(REPO)
        status = main(["demo", *argv])
    return status, out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, exit status, stdout) of `demo train --reduced`."""
    run_dir = tmp_path_factory.mktemp("demo_cli") / "run"
    return (run_dir, *_demo("train", "--reduced", "--out", str(run_dir), "--no-progress"))


@pytest.fixture(scope="module")
def evaluated(trained):
    """(run folder, exit status, stdout) of `demo eval --reduced` on the trained run."""
    run_dir = trained[0]
    return (run_dir, *_demo("eval", "--reduced", "--out", str(run_dir), "--no-progress"))


def test_demo_train_reduced_builds_the_reduced_pipeline(trained):
    run_dir, status, out = trained
    assert status == 0
    pipeline = run_dir / "pipeline"
    assert f"demo pipeline: {pipeline}" in out
    index = json.loads((pipeline / "model_index.json").read_text())
    assert {"transformer", "vae", "scheduler", "text_encoder", "tokenizer"} <= set(index)
    # the reduced recipe, not configs/demo/demo.yaml: 3 + 2 scenes, a 1-layer model, 2 steps per stage
    assert len(list((run_dir / "scenes" / "train").glob("*.mp4"))) == 3
    assert len(list((run_dir / "scenes" / "heldout").glob("*.mp4"))) == 2
    assert len((run_dir / "heldout" / "cases.jsonl").read_text().splitlines()) == 2
    config = json.loads((pipeline / "transformer" / "config.json").read_text())
    assert (config["num_layers"], config["num_attention_heads"], config["attention_head_dim"]) == (1, 2, 12)
    for stage in ("stage1", "stage2"):
        steps = sorted(p.name for p in (run_dir / stage / "checkpoints").iterdir())
        assert steps == ["step-00000001", "step-00000002"], stage
    # the pipeline carries stage 2's final weights
    final = load_file(str(run_dir / "stage2" / "final" / TRANSFORMER_WEIGHTS))
    shipped = load_file(str(pipeline / TRANSFORMER_WEIGHTS))
    assert final.keys() == shipped.keys() and all(torch.equal(final[k], shipped[k]) for k in final)
    defaults = json.loads((pipeline / "generation_config.json").read_text())
    assert (defaults["height"], defaults["width"], defaults["num_frames"]) == (64, 64, 9)


def test_demo_eval_scores_the_run_and_its_controls(evaluated):
    run_dir, status, out = evaluated
    assert status == 0
    eval_dir = run_dir / "eval"
    summary = json.loads((eval_dir / "summary.json").read_text())
    expected = {*CONTROLS, "chance", "ground_truth", "vae_reconstruction", "background_references"}
    assert expected <= set(summary)
    # the scoring is calibrated on the ground-truth clips, and every control is scored on the same subjects
    truth = summary["ground_truth"]
    assert truth["identity_accuracy"] == truth["motion_accuracy"] == 1.0 and truth["n_subjects"] > 0
    for name in (*CONTROLS, "vae_reconstruction"):
        assert summary[name]["n_subjects"] == truth["n_subjects"], name
    # the printed table is the summary's
    assert "| model |" in out and "| ground_truth | 1.00 |" in out
    assert f"motion uniform chance: {summary['motion_uniform_chance']:.2f}" in out
    cases = [json.loads(line) for line in (run_dir / "heldout" / "cases.jsonl").read_text().splitlines()]
    for name in CONTROLS:
        videos = sorted((eval_dir / "videos" / name).glob("*.mp4"))
        assert [v.stem for v in videos] == sorted(c["id"] for c in cases), name
        for video in videos:
            info = probe_video(video)
            assert (info.num_frames, info.height, info.width) == (9, 64, 64), video
    assert (eval_dir / "strip.png").is_file() and (eval_dir / "strip_background.png").is_file()


def test_demo_bundle_to_a_folder_copies_the_pipeline_and_leaves_the_package_alone(
    evaluated, tmp_path, monkeypatch
):
    from kaleido_s2v.demo import cli as demo_cli
    from kaleido_s2v.demo.bundled import BUNDLED_MODEL_DIR, MINILM_POINTER
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

    run_dir, _, _ = evaluated
    # belt and braces: were `--to` ever ignored, the default destination is a throwaway folder
    decoy = tmp_path / "decoy_default"
    monkeypatch.setattr(demo_cli, "BUNDLED_MODEL_DIR", decoy)
    package_before = _digest(BUNDLED_MODEL_DIR)
    target = tmp_path / "bundle"
    status, out = _demo("bundle", "--out", str(run_dir), "--config", REDUCED, "--to", str(target))
    assert status == 0
    assert f"bundled {run_dir / 'pipeline'} -> {target}" in out
    assert not decoy.exists()
    assert _digest(BUNDLED_MODEL_DIR) == package_before

    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["bundle.json", "generation_config.json", "model_index.json", "scheduler"]
        + ["text_encoder", "tokenizer", "transformer", "vae"]
    )
    pipeline = _digest(run_dir / "pipeline")
    bundled = _digest(target)
    copied = {n for n in bundled if n != "bundle.json" and not n.startswith(("text_encoder/", "tokenizer/"))}
    assert TRANSFORMER_WEIGHTS.as_posix() in copied
    assert {n: bundled[n] for n in copied} == {n: pipeline[n] for n in copied}  # byte for byte the run's
    for component in ("text_encoder", "tokenizer"):
        assert [p.name for p in (target / component).iterdir()] == ["package.json"]
        assert json.loads((target / component / "package.json").read_text()) == MINILM_POINTER
    provenance = json.loads((target / "bundle.json").read_text())
    assert provenance["run"] == run_dir.name and provenance["recipe"] == REDUCED
    assert provenance["heldout_summary"] == json.loads((run_dir / "eval" / "summary.json").read_text())

    loaded = KaleidoPipeline.from_pretrained(target)  # the text encoder comes through the pointer
    assert type(loaded.text_encoder).__name__ == "BertModel"
    trained = load_file(str(run_dir / "pipeline" / TRANSFORMER_WEIGHTS))
    state = loaded.transformer.state_dict()
    assert all(torch.equal(state[key], value) for key, value in trained.items())
