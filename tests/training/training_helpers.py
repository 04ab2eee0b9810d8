"""Shared builders for the training tests: synthetic latent clips and tiny configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kaleido_s2v.common.config_files import merge_settings
from kaleido_s2v.common.video_io import write_video
from kaleido_s2v.data.samples import write_folder_sample
from kaleido_s2v.training.buckets import BucketKey
from kaleido_s2v.training.config import TrainConfig, config_from_dict
from kaleido_s2v.training.datasets import InMemoryLatentDataset, LatentExample
from tiny_components import TINY_TRANSFORMER_CONFIG

# Wide enough for its 4-channel latents (patch 16 values into width 48) to learn in a few hundred steps.
LEARNING_MODEL_CONFIG = dict(
    TINY_TRANSFORMER_CONFIG, in_channels=4, out_channels=4, attention_head_dim=24, ffn_dim=96
)
TEXT_LENGTH = 8


def latent_examples(
    num_clips: int = 2,
    channels: int = 4,
    frames: int = 2,
    size: int = 8,
    num_references: int = 1,
    seed: int = 0,
    key_prefix: str = "clip",
) -> list[LatentExample]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(num_clips):
        latents = torch.randn(channels, frames, size, size, generator=generator)
        references = tuple(
            torch.randn(channels, 1, size, size, generator=generator) for _ in range(num_references)
        )
        text = torch.randn(5, 32, generator=generator)
        bucket = BucketKey(size * 8, size * 8, (frames - 1) * 4 + 1, num_references)
        examples.append(LatentExample(f"{key_prefix}{index}", latents, references, text, bucket))
    return examples


def latent_dataset(**kwargs: Any) -> InMemoryLatentDataset:
    return InMemoryLatentDataset(latent_examples(**kwargs), empty_text_states=torch.zeros(1, 32))


def config_dict(output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A plain-dict tiny config (what a YAML file would hold), `overrides` applied by the config
    files' one override rule (`merge_settings`: sections merge key by key, `model.config` is replaced)."""
    raw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=4,
        micro_batch_size=2,
        mixed_precision="no",
        checkpoint_every=0,
        log_every=1,
        model=dict(config=dict(LEARNING_MODEL_CONFIG)),
        encoders=dict(max_text_length=TEXT_LENGTH),
        data=dict(caption_dropout=0.0),
        optimizer=dict(lr=3e-3, max_grad_norm=1.0, weight_decay=0.0),
    )
    return merge_settings(TrainConfig, raw, overrides)


def tiny_config(output_dir: Path, **overrides: Any) -> TrainConfig:
    return config_from_dict(TrainConfig, config_dict(output_dir, **overrides))


def clip(num_frames: int, height: int = 48, width: int = 80, seed: int = 0) -> np.ndarray:
    """A moving gradient with a frame counter in the red channel, so frames are identifiable."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(1, height, width, 3), dtype=np.uint8).repeat(num_frames, 0)
    base[..., 0] = (np.arange(num_frames) * 8 % 256).reshape(-1, 1, 1)
    return base


def reference(color, size=(30, 20)) -> Image.Image:
    return Image.new("RGB", size, color)


def write_sample(root, sample_id, frames, fps, refs=2, meta=True, caption="a cat walks"):
    video = root / f"{sample_id}.mp4"
    write_video(video, frames, fps)
    info = dict(fps=fps, num_frames=len(frames), width=frames.shape[2], height=frames.shape[1])
    colors = [(255, 0, 0), (0, 0, 255), (0, 255, 0)][:refs]
    write_folder_sample(
        root / "set", sample_id, video, caption, [reference(c) for c in colors], info if meta else None
    )
