"""Periodic sample videos during training: fixed prompts and references, fixed seeds.

Written to `<output_dir>/samples/step-<N>/<case id>.mp4` with the training resolution and frame
count, through the inference pipeline, so what you watch is what `generate` would produce.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from kaleido_s2v.common.cases import read_cases, split_cases
from kaleido_s2v.pipelines.generation_config import make_scheduler
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from kaleido_s2v.pipelines.outputs import save_frames
from kaleido_s2v.training.config import TrainConfig


def read_sample_cases(path: str | os.PathLike) -> list:
    """The cases of `sampling.cases` (docs/contracts.md#1-case-files); any bad line is an error naming it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"sampling.cases {path} does not exist")
    cases, errors = split_cases(read_cases(path))
    if errors:
        raise ValueError(f"sampling.cases {path}: " + "; ".join(f"line {e.line}: {e.reason}" for e in errors))
    if not cases:
        raise ValueError(f"sampling.cases {path} holds no case")
    return cases


def write_sample_videos(
    model: nn.Module, encoder, config: TrainConfig, step: int, write: bool = True
) -> list[Path]:
    """Generate one video per case with the model as it is now (every rank runs; `write` saves).

    The global RNG state is restored afterwards, so sampling never changes the training run.
    """
    sampling = config.sampling
    cases = read_sample_cases(sampling.cases)
    pipeline = KaleidoPipeline(
        tokenizer=encoder.tokenizer,
        text_encoder=encoder.text_encoder,
        vae=encoder.vae,
        scheduler=make_scheduler("kaleido_euler"),
        transformer=model,
    )
    pipeline.set_progress_bar_config(disable=True)
    height, width = config.data.resolutions[0]
    folder = Path(config.output_dir) / "samples" / f"step-{step:08d}"
    written = []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for case in cases:
                seed = sampling.seed if case.seed is None else case.seed
                frames = pipeline(
                    case.prompt,
                    reference_images=[reference.path for reference in case.references],
                    negative_prompt=case.negative_prompt,
                    height=height,
                    width=width,
                    num_frames=config.data.num_frames,
                    num_inference_steps=sampling.num_inference_steps,
                    guidance_scale=sampling.guidance_scale,
                    generator=torch.Generator().manual_seed(seed),
                    max_sequence_length=config.encoders.max_text_length,
                ).frames[0]
                if write:
                    written.append(save_frames(frames, folder / f"{case.id}.mp4", fps=config.data.fps))
    finally:
        model.train(was_training)
    return written
