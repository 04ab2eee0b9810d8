"""`kaleido-s2v train CONFIG [--resume | --overwrite]` and `kaleido-s2v train cache CONFIG`.

Several processes: `torchrun --nproc_per_node N -m kaleido_s2v.cli train CONFIG`.
`cache` in the first position is always the sub-command; a config file named `cache` is `./cache`.
"""

from __future__ import annotations

import argparse

from kaleido_s2v.training.config import load_config


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a Kaleido transformer with flow matching (or precompute its latent cache)",
        description=(
            "`train CONFIG` trains as the YAML config says (one process, or every rank under torchrun); "
            "`--resume` continues from the newest complete checkpoint in output_dir; an output_dir holding an "
            "earlier run is refused unless --resume or --overwrite is given. "
            "`train cache CONFIG` VAE- and text-encodes the config's samples once into data.cache_dir."
        ),
    )
    parser.add_argument(
        "words", nargs="+", metavar="CONFIG", help="the training config (YAML), or: cache CONFIG"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again at step 0 in an output_dir that holds an earlier run: deletes only its "
        "checkpoints/ and metrics.jsonl (without it, such a folder is refused)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    words = list(args.words)
    if words[0] == "cache":
        if len(words) != 2:
            raise ValueError("usage: kaleido-s2v train cache CONFIG")
        if args.resume or args.overwrite:
            raise ValueError(
                "train cache always resumes (finished samples are skipped); drop --resume/--overwrite"
            )
        return _cache(words[1])
    if len(words) != 1:
        raise ValueError(f"usage: kaleido-s2v train CONFIG [--resume]; got {' '.join(words)}")
    return _train(words[0], args.resume, args.overwrite)


def _train(config_path: str, resume: bool, overwrite: bool) -> int:
    # Heavy (torch, diffusers): imported when the command runs, so `kaleido-s2v --help` stays instant.
    from kaleido_s2v.training.distributed import destroy_distributed
    from kaleido_s2v.training.trainer import Trainer

    config = load_config(config_path)
    try:
        trainer = Trainer(config)
        result = trainer.train(resume=resume, overwrite=overwrite)
        if trainer.context.is_main:
            last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
            print(
                f"trained steps {result.start_step}..{result.final_step}, last loss {last}; wrote {result.export_dir}"
            )
    finally:
        destroy_distributed()
    return 0


def _cache(config_path: str) -> int:
    # Heavy (torch, diffusers): imported when the command runs, so `kaleido-s2v --help` stays instant.
    from kaleido_s2v.models.encoders import LatentEncoder
    from kaleido_s2v.training.datasets import VideoSampleDataset, cache_fingerprint, write_latent_cache
    from kaleido_s2v.training.distributed import barrier, destroy_distributed, init_distributed

    config = load_config(config_path)
    if config.data.cache_dir is None:
        raise ValueError(f"{config_path}: set data.cache_dir to the folder the latent cache goes to")
    if config.encoders.path is None:
        raise ValueError(f"{config_path}: set encoders.path (a folder with vae/, text_encoder/, tokenizer/)")
    # Under torchrun every rank encodes its share of the samples; the index is written last.
    context = init_distributed()
    try:
        encoder = LatentEncoder.from_folder(
            config.encoders.path, config.encoders.max_text_length, context.device, config.encoders.dtype
        )
        dataset = VideoSampleDataset(config.data)
        fingerprint = cache_fingerprint(config.data, config.encoders.path, config.encoders.max_text_length)
        folder = write_latent_cache(
            dataset,
            encoder,
            config.data.cache_dir,
            fingerprint,
            context.is_main,
            context.rank,
            context.world_size,
        )
        barrier()
        if context.is_main:
            write_latent_cache(dataset, encoder, folder, fingerprint, progress=False)  # all done: the index
            print(f"cached {len(dataset)} samples in {folder}")
    finally:
        destroy_distributed()
    return 0
