"""`kaleido-s2v convert SRC DST`: convert a transformer checkpoint between layouts."""

from __future__ import annotations

import argparse

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Wan / Kaleido transformer checkpoint (diffusers, Wan original, Kaleido SAT)",
        description=(
            "Read a transformer checkpoint in any layout (detected from its key names) and write it "
            "as a diffusers folder (default; sharded safetensors + config.json), Wan original "
            "safetensors, or a Kaleido SAT checkpoint folder."
        ),
    )
    parser.add_argument("src", help="diffusers folder, Wan original safetensors file/folder, or SAT folder")
    parser.add_argument("dst", help="output folder (must not exist yet)")
    parser.add_argument("--to", choices=["diffusers", "wan", "sat"], default="diffusers")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast weights (default: keep)")
    parser.add_argument("--max-shard-size", default="5GB", help="diffusers output shard size")
    parser.add_argument("--rope-policy", choices=["kaleido", "video", "none"], default=None)
    parser.add_argument(
        "--attention-head-dim",
        type=int,
        default=None,
        help="head dim when the source has no config (default 128)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from kaleido_s2v.models.convert import convert_checkpoint

    dtype = getattr(torch, DTYPES[args.dtype]) if args.dtype else None
    out = convert_checkpoint(
        Path(args.src),
        Path(args.dst),
        target=args.to,
        torch_dtype=dtype,
        max_shard_size=args.max_shard_size,
        rope_policy=args.rope_policy,
        attention_head_dim=args.attention_head_dim,
    )
    print(f"wrote {args.to} checkpoint to {out}")
    return 0
