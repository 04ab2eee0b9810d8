"""`kaleido-s2v eval`: score generated videos, compare two runs, or run OpenS2V-Eval's case list.

Exit status: 0 when every case was scored; 1 when any case failed (after metrics.json, cases.csv and
the report are written for the others), each failure printed as one `warning:` line on stderr;
2 when the run could not start (the command line, the videos folder, the case file, the backend).
"""

from __future__ import annotations

import argparse
import sys

from kaleido_s2v.common.cases import write_cases_jsonl
from kaleido_s2v.evaluation.config import BACKENDS, LEADERBOARD_NOTE, EvalConfig, ModelPaths
from kaleido_s2v.evaluation.opens2v import convert_opens2v


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score generated videos against their cases and write a report",
        description=(
            "Score <videos>/<id>.mp4 against a case file (or OpenS2V-Eval's case list) and write "
            "metrics.json, cases.csv and report.html to --out; or put two reports side by side with --compare. "
            "Exits 1 when any case failed (the others are still scored and reported)."
        ),
    )
    parser.add_argument("--videos", help="folder of <case id>.mp4 videos")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--cases", help="case file: .jsonl, or prompt@@img1@@img2 lines (docs/contracts.md#1-case-files)"
    )
    source.add_argument(
        "--opens2v", metavar="EVAL_JSON", help="OpenS2V-Eval case list (e.g. Open-Domain_Eval.json)"
    )
    parser.add_argument(
        "--image-root", help="with --opens2v: folder its img_paths are relative to (default: the JSON's)"
    )
    parser.add_argument(
        "--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="two report folders to put side by side"
    )
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument(
        "--chance-videos",
        help="folder of <id>.mp4 ground-truth clips for the chance control (default: --videos)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="offline")
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per video (default 16)")
    parser.add_argument(
        "--no-controls", action="store_true", help="skip the chance control (halves the time)"
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="rescore every video instead of reusing <out>/cache"
    )
    parser.add_argument("--no-report", action="store_true", help="write metrics.json and cases.csv only")
    models = parser.add_argument_group("model backend (local folders or Hub ids)")
    models.add_argument("--grounding-dino", help="Grounding DINO folder (finds subjects by label)")
    models.add_argument("--sam", help="SAM or SAM2 folder (segments them; without it the box is the mask)")
    models.add_argument("--dinov2", help="DINOv2 folder (subject similarity; else CLIP's image features)")
    models.add_argument("--clip", help="CLIP folder (text alignment; ViT-L/14 for --aesthetic)")
    models.add_argument("--aesthetic", help="LAION aesthetic head file (needs --clip)")
    models.add_argument("--device", default="cpu")
    models.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    # the scoring stack (numpy, PIL) loads when the command runs, not for `kaleido-s2v --help`
    from kaleido_s2v.evaluation.report import write_compare
    from kaleido_s2v.evaluation.runner import run_eval

    if args.compare:
        comparison = write_compare(args.compare[0], args.compare[1], args.out)
        for name, value in comparison["summary"].items():
            a, b, delta = (
                f"{v:.4f}" if v is not None else "–" for v in (value["a"], value["b"], value["delta"])
            )
            print(f"{name:22s} A {a:>8s}  B {b:>8s}  B−A {delta:>8s}")
        for warning in comparison["warnings"]:
            print(f"warning: {warning}")
        print(f"wrote {Path(args.out) / 'compare.html'}")
        return 0
    if not args.videos or not (args.cases or args.opens2v):
        raise ValueError(
            "eval needs --videos DIR and --cases FILE (or --opens2v EVAL_JSON), or --compare A B"
        )
    config = EvalConfig(
        backend=args.backend,
        num_frames=args.frames,
        models=ModelPaths(
            dinov2=args.dinov2,
            clip=args.clip,
            grounding_dino=args.grounding_dino,
            sam=args.sam,
            aesthetic=args.aesthetic,
        ),
        device=args.device,
        dtype=args.dtype,
    )
    cases, case_errors, note = args.cases, None, None
    if args.opens2v:
        cases, case_errors = convert_opens2v(args.opens2v, args.image_root)
        write_cases_jsonl(Path(args.out) / "opens2v_cases.jsonl", cases)
        note = LEADERBOARD_NOTE
    payload = run_eval(
        args.videos,
        cases,
        args.out,
        config,
        controls=not args.no_controls,
        use_cache=not args.no_cache,
        report=not args.no_report,
        note=note,
        case_errors=case_errors,
        chance_videos=args.chance_videos,
    )
    print(payload["comparability"])
    chance = payload["controls"]["chance"]
    for name, figure in payload["summary"].items():
        value = "–" if figure["mean"] is None else f"{figure['mean']:.4f}"
        control = (
            "" if not chance or chance[name]["mean"] is None else f"   chance {chance[name]['mean']:.4f}"
        )
        print(f"{name:22s} {value:>8s}  (n={figure['n']}){control}")
    for line in warning_lines(payload):
        print(line, file=sys.stderr)
    print(
        f"{payload['num_scored']} of {payload['num_cases']} cases scored ({payload['num_warnings']} with a "
        f"warning), {payload['num_failed']} failed; wrote {Path(args.out) / 'metrics.json'}"
    )
    return 1 if payload["num_failed"] else 0


def warning_lines(payload: dict) -> list[str]:
    """One line per failed case, per failed chance control and per case scored with a warning."""
    from kaleido_s2v.evaluation.runner import CHANCE_STAGE  # as in `run`: the scoring stack loads on use

    lines = []
    for error in payload["errors"]:
        outcome = "chance control failed" if error["stage"] == CHANCE_STAGE else f"failed ({error['stage']})"
        lines.append(f"warning: {_case_name(error['case'], error['line'])} {outcome}: {error['error']}")
    for warning in payload["warnings"]:
        lines.append(
            f"warning: {_case_name(warning['id'], warning['line'])} scored anyway: {warning['reason']}"
        )
    return lines


def _case_name(case_id: str | None, line: int) -> str:
    return f"line {line}" if case_id is None else f"case {case_id} (line {line})"
