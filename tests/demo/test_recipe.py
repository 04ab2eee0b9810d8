"""The demo recipe end to end on the reduced config: data, VAE, both stages, the assembled pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from demo.demo_helpers import example_generate_argv
from kaleido_s2v.cli import main
from kaleido_s2v.common.video_io import probe_video, read_video
from kaleido_s2v.demo.recipe import load_demo_config, run_demo, stage_config
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

REPO = Path(__file__).resolve().parents[2]


def test_reduced_run_assembles_a_pipeline_that_generates_an_mp4_with_two_references(reduced_run, tmp_path):
    run_dir, pipeline_dir = reduced_run
    pipeline = KaleidoPipeline.from_pretrained(pipeline_dir)
    assert type(pipeline.text_encoder).__name__ == "BertModel"
    assert pipeline.transformer.config.text_dim == 384 and pipeline.transformer.config.in_channels == 16
    assert pipeline.vae.config.z_dim == 16 and pipeline.vae_scale_factor_spatial == 4
    defaults = json.loads((pipeline_dir / "generation_config.json").read_text())
    assert (defaults["height"], defaults["width"], defaults["num_frames"]) == (64, 64, 9)
    # prompts are padded to the text length the caches and both stages used, not the default 512
    stage1 = json.loads((run_dir / "stage1" / "config.json").read_text())
    assert defaults["max_sequence_length"] == stage1["encoders"]["max_text_length"] < 512

    out = tmp_path / "demo.mp4"
    status = main(
        example_generate_argv(
            out,
            "a striped red star moves left and a dotted blue circle moves up, on a grey grid background",
            model=pipeline_dir,
        )
    )
    assert status == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["max_sequence_length"] == defaults["max_sequence_length"]
    info = probe_video(out)
    assert (info.num_frames, info.height, info.width) == (defaults["num_frames"], 64, 64)
    frames, _ = read_video(out)
    assert frames.shape == (9, 64, 64, 3) and frames.std() > 0


def test_stage_two_starts_from_stage_one_and_changes_its_weights(reduced_run):
    run_dir, _ = reduced_run
    stage1 = load_file(
        str(run_dir / "stage1" / "final" / "transformer" / "diffusion_pytorch_model.safetensors")
    )
    stage2 = load_file(
        str(run_dir / "stage2" / "final" / "transformer" / "diffusion_pytorch_model.safetensors")
    )
    assert stage1.keys() == stage2.keys()
    assert any(not torch.equal(stage1[k], stage2[k]) for k in stage1)
    config = json.loads((run_dir / "stage2" / "config.json").read_text())
    assert config["model"]["init_from"] == str(run_dir / "stage1" / "final" / "transformer")
    assert config["data"]["paths"] == [str(run_dir / "data" / "sft")]


def test_an_interrupted_stage_resumes_to_the_same_weights(reduced_run, reduced_config):
    run_dir, _ = reduced_run
    weights = run_dir / "stage2" / "final" / "transformer" / "diffusion_pytorch_model.safetensors"
    before = load_file(str(weights))
    # cut stage 2 short after its first step: no final export, no step-2 checkpoint, no pipeline;
    # rerunning the recipe in the same folder resumes from step 1 and rebuilds what was removed
    shutil.rmtree(run_dir / "stage2" / "final")
    shutil.rmtree(run_dir / "stage2" / "checkpoints" / "step-00000002")
    shutil.rmtree(run_dir / "pipeline")
    run_demo(reduced_config, run_dir, progress=False)
    after = load_file(str(weights))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert (run_dir / "pipeline" / "model_index.json").is_file()


def test_stage_paths_resolve_under_the_run_folder(reduced_config, tmp_path):
    stage2 = stage_config(reduced_config.stage2, tmp_path, reduced_config.train_overrides)
    assert stage2.output_dir == str(tmp_path / "stage2")
    assert stage2.model.init_from == str(tmp_path / "stage1" / "final" / "transformer")
    assert stage2.data.cache_dir == str(tmp_path / "cache" / "stage2")
    assert stage2.max_steps == 2  # the reduced overrides apply


def test_full_demo_config_loads_with_the_recipe_values():
    config = load_demo_config(REPO / "configs" / "demo" / "demo.yaml")
    stage1 = stage_config(config.stage1, REPO, config.train_overrides)
    assert stage1.model.config["text_dim"] == 384 and stage1.model.config["in_channels"] == config.vae.z_dim
    assert stage1.shift == config.generation.shift
    assert config.vae.scale_factor_spatial == 4 and config.vae.scale_factor_temporal == 2


def test_cli_refuses_config_and_reduced_together(capsys):
    assert main(["demo", "train", "--reduced", "--config", "x.yaml"]) == 2
    assert "either --config or --reduced" in capsys.readouterr().err


def test_unknown_demo_config_key_is_named(tmp_path):
    path = tmp_path / "demo.yaml"
    path.write_text("stage1: a.yaml\nstage2: b.yaml\ndata: {num_train_scenez: 3}\n")
    with pytest.raises(ValueError, match="num_train_scenez"):
        load_demo_config(path)


def test_ablation_cells_differ_from_the_baseline_only_in_the_ablated_setting():
    from dataclasses import replace

    cells = {
        n: load_demo_config(REPO / "configs" / "demo" / f"ablation_{n}.yaml")
        for n in ("kaleido", "rope_none", "naive")
    }
    baseline = cells["kaleido"]
    assert replace(cells["naive"], pairing="cross_shot") == baseline and cells["naive"].pairing == "naive"
    policies = {
        name: stage_config(cell.stage1, REPO, cell.train_overrides).model.rope_policy
        for name, cell in cells.items()
    }
    assert policies == {"kaleido": "kaleido", "rope_none": "none", "naive": "kaleido"}
    stage2 = stage_config(cells["rope_none"].stage2, REPO, cells["rope_none"].train_overrides)
    assert stage2.model.rope_policy == "none"  # stage 2 loads stage 1's weights under the same policy


def test_train_seed_changes_only_the_training_seeds(reduced_config):
    from kaleido_s2v.demo.recipe import merge_overrides, with_train_seed

    seeded = with_train_seed(reduced_config, 7)
    assert seeded.data == reduced_config.data and seeded.vae == reduced_config.vae
    stage1 = stage_config(seeded.stage1, REPO, seeded.train_overrides)
    stage2 = stage_config(
        seeded.stage2, REPO, merge_overrides(seeded.train_overrides, seeded.stage2_overrides)
    )
    assert (stage1.seed, stage2.seed) == (7, 8)
    assert (
        stage1.max_steps
        == stage_config(reduced_config.stage1, REPO, reduced_config.train_overrides).max_steps
    )


def test_stages_with_different_text_lengths_are_refused(reduced_config, tmp_path):
    from dataclasses import replace

    from kaleido_s2v.demo.recipe import text_length

    assert text_length(reduced_config, tmp_path) <= 64  # short captions, short padding
    mismatched = replace(reduced_config, stage2_overrides={"encoders": {"max_text_length": 512}})
    with pytest.raises(ValueError, match="max_text_length differs"):
        text_length(mismatched, tmp_path)
