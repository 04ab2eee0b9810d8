"""`kaleido-s2v data run CONFIG`, `data report [RUN_DIR]` and `data synth OUT`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="build S2V training pairs from raw videos")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    run = commands.add_parser("run", help="run (or resume) the data pipeline described by a YAML config")
    run.add_argument("config", help="YAML file (see configs/data/)")
    run.add_argument("--executor", choices=("local", "ray"), help="override the config's executor")
    run.add_argument("--workers", type=int, help="override the config's worker count")
    run.add_argument("--run-dir", help="override the config's run_dir")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    run.set_defaults(func=_run)

    rep = commands.add_parser(
        "report", help="print a run's funnel and write a contact sheet of sampled pairs"
    )
    rep.add_argument(
        "run_dir", nargs="?", help="run folder (default: the most recent one under the current directory)"
    )
    rep.add_argument("--samples", type=int, default=8, help="pairs on the contact sheet")
    rep.add_argument("--out", help="contact sheet path (default: RUN_DIR/report/contact_sheet.png)")
    rep.set_defaults(func=_report)

    synth = commands.add_parser(
        "synth", help="write procedural scenes (<name>.mp4 + <name>.json) with exact ground truth"
    )
    synth.add_argument("out", help="output folder")
    synth.add_argument("--count", type=int, default=4)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("HEIGHT", "WIDTH"))
    synth.add_argument("--shots", type=int, default=3)
    synth.add_argument("--frames-per-shot", type=int, default=24)
    synth.add_argument("--fps", type=float, default=8.0)
    synth.set_defaults(func=_synth)


def _run(args: argparse.Namespace) -> int:
    # the pipeline (numpy, PIL, every stage) loads when a command runs, not for `kaleido-s2v --help`
    from kaleido_s2v.data.config import load_config
    from kaleido_s2v.data.report import format_funnel
    from kaleido_s2v.data.runner import run_pipeline

    overrides = {
        k: v
        for k, v in (("executor", args.executor), ("workers", args.workers), ("run_dir", args.run_dir))
        if v is not None
    }
    config = load_config(args.config, overrides)
    summary = run_pipeline(config, progress=not args.no_progress)
    print(format_funnel(summary.funnel))
    _print_hint(summary.funnel)
    print(
        f"{len(summary.exported)} samples in {summary.run_dir / config.export.folder}; "
        f"{len(summary.shards)} shard(s); {summary.executed} stage calls run, the rest reused from the manifest"
    )
    return 0


def _print_hint(funnel: dict) -> None:
    """The funnel's hint on what to change (`split`'s, when every shot was too short), if it has one."""
    hint = funnel.get("split", {}).get("hint")
    if hint:
        print(f"hint: {hint}")


def _report(args: argparse.Namespace) -> int:
    from kaleido_s2v.data.report import latest_run, report  # as in `_run`: loaded on use

    run_dir = args.run_dir or latest_run(".")
    text, sheet = report(run_dir, samples=args.samples, out=args.out)
    print(f"run {run_dir}")
    print(text)
    _print_hint(json.loads((Path(run_dir) / "funnel.json").read_text(encoding="utf-8")))
    print(f"contact sheet: {sheet}" if sheet else "no exported pairs: no contact sheet")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from kaleido_s2v.data.synthetic import SceneConfig, write_scenes  # as in `_run`: loaded on use

    config = SceneConfig(
        height=args.size[0],
        width=args.size[1],
        num_shots=args.shots,
        frames_per_shot=args.frames_per_shot,
        fps=args.fps,
        seed=args.seed,
    )
    paths = write_scenes(args.out, args.count, config)
    print(f"wrote {len(paths)} scenes to {args.out}")
    return 0
