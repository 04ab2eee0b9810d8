"""`kaleido-s2v generate`: one video from references and a prompt, or a whole case file with `--batch`."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import fields

from kaleido_s2v.demo.bundled import bundled_model_path
from kaleido_s2v.pipelines.generation_config import FLAG, HELP, GenerationConfig, GenerationSettings

MODEL_ENV = "KALEIDO_S2V_MODEL"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a video of reference subjects (or a batch of them)",
        description=(
            "Generate a video of the subjects in the reference images doing what the prompt says. "
            "Unset options take the model's generation_config.json values. With --batch FILE, every case "
            "of FILE (.jsonl cases or 'prompt@@img1@@img2' lines) becomes <out-dir>/<id>.mp4 + <id>.json; "
            "finished cases are skipped, so an interrupted run resumes."
        ),
    )
    parser.add_argument(
        "--ref", action="append", default=[], metavar="IMAGE", help="reference image (repeat, in order)"
    )
    parser.add_argument("--prompt", help="what the subjects do")
    parser.add_argument(
        "--out", help="output: .mp4, .gif, or a folder for PNG frames (a .json side-car is written beside)"
    )
    parser.add_argument("--batch", metavar="FILE", help="case file: one video per case")
    parser.add_argument("--out-dir", metavar="DIR", help="output folder for --batch")
    parser.add_argument(
        "--model",
        default=os.environ.get(MODEL_ENV),
        help=(
            f"diffusers-format pipeline folder or Kaleido release folder (default: ${MODEL_ENV}, else the "
            "bundled 64x64 demo model)"
        ),
    )
    defaults = {setting.name: setting.default for setting in fields(GenerationConfig)}
    for setting in fields(GenerationSettings):  # one flag per overridable setting, stored under its name
        flag = setting.metadata[FLAG]
        parser.add_argument(
            flag,
            dest=setting.name,
            type=type(defaults[setting.name]),
            metavar=flag.removeprefix("--").replace("-", "_").upper(),
            help=f"{setting.metadata[HELP]} (default: the model's)",
        )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (a case's own seed wins; default 0)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default bf16 on GPU, fp32 on CPU")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument(
        "--offload",
        action="store_true",
        help="model CPU offload for small GPUs: each model moves to the GPU only while it runs (needs a GPU)",
    )
    parser.add_argument(
        "--vae-tiling",
        action="store_true",
        help="VAE encode and decode in 256-px tiles (less memory; smaller frames are not tiled)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace an existing output that generate did not write (a file, or a folder of PNG frames); "
            "without it only generate's own earlier outputs are replaced"
        ),
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kaleido_s2v.pipelines.generate import (
        generate_to_file,
        load_model,
        resolve_parameters,
        run_batch,
        truncation_warning,
    )
    from kaleido_s2v.pipelines.outputs import check_output

    _check_arguments(args)
    if args.out:
        check_output(args.out, overwrite=args.overwrite)  # before minutes of loading and sampling
    if not args.model:
        args.model = str(bundled_model_path())
        print(f"no --model given: using the bundled demo model ({args.model})", file=sys.stderr)
    settings = GenerationSettings(
        **{setting.name: getattr(args, setting.name) for setting in fields(GenerationSettings)}
    )
    model = load_model(
        args.model, dtype=args.dtype, device=args.device, offload=args.offload, vae_tiling=args.vae_tiling
    )
    if args.batch:
        summary = run_batch(
            model, args.batch, args.out_dir, settings, default_seed=args.seed, overwrite=args.overwrite
        )
        print(f"{args.out_dir}: {summary.line()}")
        return 1 if summary.failed else 0
    from pathlib import Path

    parameters = resolve_parameters(model, args.prompt, [Path(r) for r in args.ref], settings, args.seed)
    warning = truncation_warning(parameters)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    out = generate_to_file(model, parameters, args.out, overwrite=args.overwrite)
    print(out)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse, before the model loads, flags that cannot work; what depends on the model (sizes, frame
    counts, steps) is checked by the pipeline before it samples."""
    from kaleido_s2v.common.cases import check_text
    from kaleido_s2v.pipelines.generate import BATCH_SUFFIX
    from kaleido_s2v.pipelines.outputs import check_fps

    for flag, text in (("--prompt", args.prompt), ("--negative-prompt", args.negative_prompt)):
        if text is not None:
            check_text(text, flag)
    if args.fps is not None:
        check_fps(args.fps, args.out or BATCH_SUFFIX)
    if args.guidance_scale is not None and not math.isfinite(args.guidance_scale):
        raise ValueError(
            f"--guidance {args.guidance_scale} is not a finite number; use a value >= 0 (1 = no guidance)"
        )
    if args.batch:
        if not args.out_dir:
            raise ValueError("--batch needs --out-dir DIR (one <id>.mp4 per case)")
        conflicting = [
            flag
            for flag, value in (("--ref", args.ref), ("--prompt", args.prompt), ("--out", args.out))
            if value
        ]
        if conflicting:
            raise ValueError(f"--batch takes prompts and references from the case file; drop {conflicting}")
        return
    if args.out_dir:
        raise ValueError("--out-dir is for --batch; for one video use --out PATH")
    if not args.prompt or not args.prompt.strip():
        raise ValueError("--prompt is empty; describe the video to generate")
    if not args.out:
        raise ValueError("--out PATH is required (.mp4, .gif, or a folder for PNG frames)")
    if not args.ref:
        print("note: no --ref given; generating text-to-video without references", file=sys.stderr)
