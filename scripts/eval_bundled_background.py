"""Score the bundled demo model on the held-out background-reference cases, as `demo eval` does.

The run folder the bundled model came from is not in the repository, but its held-out set is
procedural and seeded, so this rebuilds only that part of a run folder with the recipe's own
functions (no training data, no VAE or transformer training):

    scenes/heldout/ -> data/heldout/ (cross-shot pairs) -> heldout/cases.jsonl
    -> heldout/cases_background.jsonl (`demo eval`'s background-reference cases)

then generates and scores them with the bundled model through the same function `demo eval`
(`kaleido_s2v.demo.evaluate.evaluate_run`) uses for its `background_references` block: the model's
own generation defaults (20 Euler steps, guidance 2), the offline evaluation backend, rows `model`,
`ground_truth` and `chance` (each case on another case's ground-truth clip).

Unless `--no-cutout` is given, it also scores the bundled model, the ground truth and chance on the
cut-out held-out cases and records where they differ from `heldout_summary` in the bundle's
`bundle.json` (a check that the rebuilt held-out set and the sampling are the ones the bundled
figures used: the ground-truth and chance rows need no generation and must match exactly).

    python scripts/eval_bundled_background.py --threads 1 --out /tmp/bundled-eval \
        --json configs/demo/bundled_background_eval.json

Run from the repository root (it needs the `demo` extra). About 4 minutes on one CPU thread:
5 s of data, then 48 generated cases at 3-5 s each, and the scoring.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import time
from pathlib import Path

import torch

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.demo.bundled import BUNDLED_MODEL_DIR, bundled_model_path
from kaleido_s2v.demo.data import build_pairs, render_scenes, write_heldout_cases
from kaleido_s2v.demo.evaluate import (
    evaluate_background_references,  # what `evaluate_run` calls for `background_references`
    generate_cases,
    score_runs,
)
from kaleido_s2v.demo.recipe import load_demo_config
from kaleido_s2v.pipelines.generate import load_model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo/demo.yaml", help="the bundled model's recipe")
    parser.add_argument("--out", default="runs/bundled-eval", help="scratch run folder (held-out data only)")
    parser.add_argument("--json", help="write the summary with its provenance here")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--no-cutout",
        dest="cutout",
        action="store_false",
        help="skip the cut-out cross-check against bundle.json's heldout_summary",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    start = time.time()
    torch.set_num_threads(args.threads)
    config = load_demo_config(args.config)
    run_dir = Path(args.out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    torch.manual_seed(config.data.seed)  # as `run_demo` does before rendering

    # The held-out half of `run_demo`'s data step, unchanged.
    render_scenes(run_dir / "scenes" / "heldout", config.data, heldout=True, progress=progress)
    heldout = build_pairs(
        run_dir / "scenes" / "heldout", run_dir / "data" / "heldout", config.data, "cross_shot", progress
    )
    cases = write_heldout_cases(heldout, run_dir / "heldout" / "cases.jsonl")
    truth = run_dir / "data" / "heldout" / "export" / "videos"
    data_seconds = time.time() - start

    model = load_model(bundled_model_path())
    background = evaluate_background_references(run_dir, model, truth, progress)
    result = {"background_references": background}
    if args.cutout:
        videos = run_dir / "eval" / "videos" / "model"
        generate_cases(model, cases, videos)
        result["cutout_check"] = score_runs(
            cases, {"model": videos, "ground_truth": truth}, run_dir / "eval", truth, progress
        )
    seconds = time.time() - start

    print(json.dumps(result, indent=2))
    print(f"data {data_seconds:.0f} s, total {seconds:.0f} s")
    if args.json:
        bundle = json.loads((BUNDLED_MODEL_DIR / "bundle.json").read_text())
        background_meta = json.loads((run_dir / "heldout" / "cases_background.json").read_text())
        document = {
            "what": "the bundled demo model on demo eval's background-reference held-out cases "
            "(heldout/cases_background.jsonl): rows model, ground_truth, chance as in eval/summary.json's "
            "background_references block",
            "command": "python scripts/eval_bundled_background.py "
            + f"--config {args.config} --out {args.out} --threads {args.threads} --json {args.json}"
            + ("" if args.cutout else " --no-cutout"),
            "date": datetime.date.today().isoformat(),
            "machine": f"2-core CPU ({platform.machine()}), torch {torch.__version__}, {args.threads} thread(s)",
            "wall_seconds": round(seconds),
            "model": {
                "folder": "src/kaleido_s2v/demo/model",
                "bundle_run": bundle.get("run"),
                "transformer_sha256": _sha256(
                    BUNDLED_MODEL_DIR / "transformer" / "diffusion_pytorch_model.safetensors"
                ),
                "vae_sha256": _sha256(BUNDLED_MODEL_DIR / "vae" / "diffusion_pytorch_model.safetensors"),
            },
            "recipe": args.config,
            "sampling": "the model's generation_config.json (20 Euler steps, guidance 2, shift 2), case seeds",
            "evaluation_backend": "offline",
            "cases": background_meta["cases"],
            "left_out_cases": background_meta["left_out"],
            **result,
        }
        if args.cutout:
            recorded = bundle.get("heldout_summary") or {}
            document["cutout_check_note"] = (
                "the cut-out held-out cases scored the same way; cutout_check_differences lists every "
                "figure that differs from heldout_summary in src/kaleido_s2v/demo/model/bundle.json "
                "as [measured here, recorded there]"
            )
            document["cutout_check_differences"] = {
                row: {
                    name: [value, recorded[row][name]]
                    for name, value in figures.items()
                    if name in recorded.get(row, {}) and abs(value - recorded[row][name]) > 1e-9
                }
                for row, figures in result["cutout_check"].items()
            }
        write_json_atomic(args.json, document)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
