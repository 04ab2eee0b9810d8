"""Held-out metrics of a demo run against the controls a broken model cannot beat (docs/contracts.md#14-metrics-controls-and-ablations).

For the held-out cases (`heldout/cases.jsonl`) it generates and scores, with the evaluation module's
offline backend:
- `model`: the trained pipeline;
- `shuffled_references`: the same model given another case's references (scored against the
  case's own references and prompt);
- `untrained`: the same architecture at its initial weights (the stage-1 seed), same VAE and text;
- `ground_truth`: the held-out clips themselves (calibration, not a control);
- `vae_reconstruction`: the held-out clips encoded and decoded by the model's VAE (the ceiling any
  transformer on these latents can reach; a VAE that loses the subjects caps every figure);
and reports `chance`: each case scored on another case's ground-truth clip, plus 1/5 for motion.

The held-out references are cut-outs on white, which leaves nothing to leak. Background leakage is
measured on a second case file (`heldout/cases_background.jsonl`, see `write_background_cases`):
the same cases with references cropped together with a background other than the prompt's. Its
`model`, `ground_truth` and `chance` rows go under `background_references` in the summary.

Writes `<run>/eval/<name>/metrics.json` per run, `<run>/eval/summary.json`, `<run>/eval/strip.png`
(the first held-out cases: references, generated frames, and the ground truth underneath) and
`<run>/eval/strip_background.png` (the same for the background references).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from diffusers import AutoencoderKLWan

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.common.video_io import read_video
from kaleido_s2v.demo.data import write_background_cases
from kaleido_s2v.demo.recipe import assemble_pipeline, stage_config
from kaleido_s2v.demo.strip import write_strip
from kaleido_s2v.demo.vae import reconstruct, to_vae_pixels
from kaleido_s2v.evaluation.runner import derangement, run_eval
from kaleido_s2v.pipelines.generate import LoadedModel, load_model, run_batch
from kaleido_s2v.pipelines.generation_config import GenerationSettings
from kaleido_s2v.pipelines.outputs import save_frames
from kaleido_s2v.training.trainer import build_transformer

FIGURES = ("identity_accuracy", "attribute_swap_rate", "motion_accuracy", "decoupling", "copy_paste")


def shuffled_cases(cases_file: Path, out: Path) -> Path:
    """The case file with every case given another case's references (a fixed derangement)."""
    cases = [json.loads(line) for line in cases_file.read_text().splitlines() if line.strip()]
    if len(cases) < 2:
        raise ValueError(f"{cases_file} has {len(cases)} case(s); the shuffled control needs at least 2")
    order = derangement(len(cases))
    lines = []
    for case, other in zip(cases, order, strict=True):
        references = [
            {**r, "path": os.path.relpath(cases_file.parent / r["path"], out.parent)}
            for r in cases[other]["references"]
        ]
        lines.append(json.dumps({**case, "references": references}))
    with atomic_path(out) as temporary:
        temporary.write_text("".join(line + "\n" for line in lines))
    return out


def untrained_pipeline(run_dir: Path, config) -> Path:
    """`<run>/eval/untrained_pipeline`: stage 1's initial transformer with the trained VAE and MiniLM."""
    folder = run_dir / "eval" / "untrained_pipeline"
    if (folder / "model_index.json").is_file():
        return folder
    stage1 = stage_config(config.stage1, run_dir, config.train_overrides)
    transformer_dir = run_dir / "eval" / "untrained_transformer"
    with atomic_path(transformer_dir, directory=True) as temporary:
        build_transformer(stage1).save_pretrained(temporary)
    assembled = assemble_pipeline(run_dir, transformer_dir, config, name="eval/untrained_pipeline")
    shutil.rmtree(transformer_dir)
    return assembled


def vae_reconstructions(pipeline: Path, truth: Path, out_dir: Path) -> Path:
    """`out_dir/<name>.mp4`: each held-out clip in `truth` through the pipeline's VAE (posterior mean)."""
    vae = AutoencoderKLWan.from_pretrained(pipeline / "vae").eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for clip in sorted(truth.glob("*.mp4")):
        target = out_dir / clip.name
        if target.is_file():
            continue
        frames, fps = read_video(clip)  # (F, H, W, 3) uint8
        decoded = reconstruct(vae, to_vae_pixels(frames[None]))  # (1, 3, F, H, W) in [-1, 1]
        decoded = (decoded[0].permute(1, 2, 3, 0).numpy() + 1.0) * 127.5
        save_frames(np.round(decoded).astype(np.uint8), target, fps=fps)  # written atomically
    return out_dir


def generate_cases(model: LoadedModel, cases: Path, out_dir: Path) -> None:
    """`out_dir/<id>.mp4` for every case of `cases` at the model's own generation defaults (what
    `kaleido-s2v generate --batch` writes; finished cases are kept). RuntimeError naming the failed
    cases when any fails (each one's reason is logged as it fails): a control missing a case would
    be scored on fewer subjects than the model."""
    summary = run_batch(model, cases, out_dir, GenerationSettings())
    print(f"{out_dir}: {summary.line()}")
    if summary.failed:
        raise RuntimeError(
            f"generating {cases} with {model.path} failed for case(s) {summary.failed}; "
            "their reasons are logged above"
        )


def _figures(summary: dict) -> dict:
    return {name: summary[name]["mean"] for name in FIGURES} | {
        "n_subjects": summary["identity_accuracy"]["n"],
        "n_decoupling": summary["decoupling"]["n"],
    }


def background_reference_cases(run_dir: Path) -> Path:
    """`<run>/heldout/cases_background.jsonl`, written from the held-out cases when missing."""
    out = run_dir / "heldout" / "cases_background.jsonl"
    if out.is_file():
        return out
    return write_background_cases(
        run_dir / "heldout" / "cases.jsonl",
        run_dir / "data" / "heldout" / "export",
        run_dir / "scenes" / "heldout",
        out,
    )


def score_runs(cases: Path, runs: dict[str, Path], eval_dir: Path, truth: Path, progress: bool) -> dict:
    """Score each folder of videos in `runs` against `cases` into `eval_dir/<name>/`; one figures row
    per name, plus `chance` (each case scored on another case's clip in `truth`) beside `model`."""
    rows = {}
    for name, videos in runs.items():
        metrics = run_eval(
            videos,
            cases,
            eval_dir / name,
            controls=name == "model",
            chance_videos=truth if name == "model" else None,
            progress=progress,
            report=name == "model",
        )
        rows[name] = _figures(metrics["summary"])
        if name == "model" and metrics["controls"]["chance"] is not None:
            rows["chance"] = _figures(metrics["controls"]["chance"])
    return rows


def evaluate_background_references(run_dir: Path, model: LoadedModel, truth: Path, progress: bool) -> dict:
    """Generate and score the background-reference cases: rows `model`, `ground_truth`, `chance`."""
    cases = background_reference_cases(run_dir)
    eval_dir = run_dir / "eval" / "background_references"
    videos = eval_dir / "videos" / "model"
    generate_cases(model, cases, videos)
    rows = score_runs(cases, {"model": videos, "ground_truth": truth}, eval_dir, truth, progress)
    write_strip(cases, videos, run_dir / "eval" / "strip_background.png", truth=truth)
    return rows


def evaluate_run(run_dir: str | os.PathLike, config, progress: bool = True) -> dict:
    """Generate and score the held-out cases for the model and its controls; returns the summary table."""
    run_dir = Path(run_dir).resolve()
    cases = run_dir / "heldout" / "cases.jsonl"
    truth = run_dir / "data" / "heldout" / "export" / "videos"
    pipeline = run_dir / "pipeline"
    if not (pipeline / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{pipeline} is not an assembled pipeline; run `kaleido-s2v demo train` first"
        )
    eval_dir = run_dir / "eval"
    shuffled = shuffled_cases(cases, eval_dir / "cases_shuffled_references.jsonl")

    trained = load_model(pipeline)
    generate_cases(trained, cases, eval_dir / "videos" / "model")
    generate_cases(trained, shuffled, eval_dir / "videos" / "shuffled_references")
    generate_cases(load_model(untrained_pipeline(run_dir, config)), cases, eval_dir / "videos" / "untrained")
    vae_reconstructions(pipeline, truth, eval_dir / "videos" / "vae_reconstruction")

    runs = {
        "model": eval_dir / "videos" / "model",
        "shuffled_references": eval_dir / "videos" / "shuffled_references",
        "untrained": eval_dir / "videos" / "untrained",
        "ground_truth": truth,
        "vae_reconstruction": eval_dir / "videos" / "vae_reconstruction",
    }
    table = score_runs(cases, runs, eval_dir, truth, progress)
    table["motion_uniform_chance"] = 0.2
    table["background_references"] = evaluate_background_references(run_dir, trained, truth, progress)
    write_json_atomic(eval_dir / "summary.json", table)
    write_strip(cases, runs["model"], eval_dir / "strip.png", truth=truth)
    return table


def format_table(table: dict) -> str:
    """The summary as a Markdown table (rows: runs and controls; columns: FIGURES)."""
    header = "| run | " + " | ".join(FIGURES) + " | subjects |"
    lines = [header, "|" + "---|" * (len(FIGURES) + 2)]
    for name, row in table.items():
        if not isinstance(row, dict) or name == "background_references":
            continue
        cells = ["–" if row[f] is None else f"{row[f]:.2f}" for f in FIGURES]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['n_subjects']} |")
    return "\n".join(lines)
