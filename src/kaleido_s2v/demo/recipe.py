"""The demo model, end to end: data -> VAE -> latent caches -> stage 1 -> stage 2 -> pipeline folder.

Every step is resumable (finished outputs are kept, the VAE and both training stages continue
from their last checkpoint) and seeded from the config, so `kaleido-s2v demo train` run twice, or
interrupted and run again, ends with the same pipeline folder. Layout of the run folder:

    scenes/{train,heldout}/    procedural scenes (<name>.mp4 + <name>.json)
    data/{train,heldout}/      data-pipeline runs; export/ holds the S2V pairs (docs/contracts.md#2-training-samples)
    data/sft/                  the cleanest training pairs (cut-out references only), stage 2's data
    heldout/cases.jsonl        held-out cases (docs/contracts.md#1-case-files) for `kaleido-s2v generate --batch` / `eval`
    vae_train/                 VAE checkpoint, metrics and the trained vae/
    encoders/                  vae/, text_encoder/, tokenizer/ (what the latent caches were built with)
    cache/stage{1,2}/          latent caches
    stage1/, stage2/           trainer output folders (checkpoints/, metrics.jsonl, final/)
    pipeline/                  the assembled KaleidoPipeline folder
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.common.config_files import load_dataclass, merge_settings
from kaleido_s2v.demo.data import (
    DemoDataConfig,
    build_pairs,
    render_scenes,
    select_clean_pairs,
    write_heldout_cases,
)
from kaleido_s2v.demo.text_encoder import load_minilm
from kaleido_s2v.demo.vae import DemoVaeConfig, train_vae
from kaleido_s2v.models.checkpoints import load_transformer
from kaleido_s2v.models.encoders import LatentEncoder
from kaleido_s2v.pipelines.generation_config import GenerationConfig, make_scheduler
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from kaleido_s2v.training.checkpointing import find_latest_checkpoint
from kaleido_s2v.training.config import TrainConfig, config_from_dict, config_to_dict, load_config
from kaleido_s2v.training.datasets import VideoSampleDataset, cache_fingerprint, write_latent_cache
from kaleido_s2v.training.trainer import Trainer


@dataclass(frozen=True)
class DemoGenerationConfig:
    """The assembled model's `generation_config.json` values (size and frames follow the data)."""

    num_inference_steps: int = 20
    guidance_scale: float = 2.0
    shift: float = 2.0
    negative_prompt: str = ""
    max_references: int = 3


@dataclass(frozen=True)
class DemoConfig:
    """The whole demo recipe. stage1/stage2: trainer YAML files (paths in them are relative to the run
    folder); train_overrides: nested values applied to both stages (the reduced CI config uses it),
    stage2_overrides: applied to stage 2 after them."""

    stage1: str
    stage2: str
    pairing: str = "cross_shot"  # "cross_shot" (the demo) | "naive" (the ablation's baseline)
    data: DemoDataConfig = field(default_factory=DemoDataConfig)
    vae: DemoVaeConfig = field(default_factory=DemoVaeConfig)
    generation: DemoGenerationConfig = field(default_factory=DemoGenerationConfig)
    train_overrides: dict[str, Any] = field(default_factory=dict)
    stage2_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pairing not in ("cross_shot", "naive"):
            raise ValueError(f"pairing must be 'cross_shot' or 'naive', got {self.pairing!r}")


def load_demo_config(path: str | os.PathLike) -> DemoConfig:
    """Read a demo YAML (see configs/demo/; the rules of `kaleido_s2v.common.config_files`); stage YAML paths
    are relative to the demo YAML's folder."""
    from dataclasses import replace

    path = Path(path)
    try:
        config = load_dataclass(DemoConfig, path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}; run from the repository root or pass --config") from error
    return replace(
        config,
        stage1=str((path.parent / config.stage1).resolve()),
        stage2=str((path.parent / config.stage2).resolve()),
    )


def with_train_seed(config: DemoConfig, seed: int) -> DemoConfig:
    """The same recipe with training seed `seed` for stage 1 and `seed + 1` for stage 2 (data unchanged)."""
    from dataclasses import replace

    return replace(
        config,
        train_overrides=merge_overrides(config.train_overrides, {"seed": seed}),
        stage2_overrides=merge_overrides(config.stage2_overrides, {"seed": seed + 1}),
    )


def stage_config(yaml_path: str, run_dir: Path, overrides: dict[str, Any]):
    """A stage's TrainConfig with its run-relative paths (output, data, cache, encoders, init_from) under `run_dir`."""
    raw = config_to_dict(load_config(yaml_path, overrides))
    raw["output_dir"] = str(run_dir / raw["output_dir"])
    raw["data"]["paths"] = [str(run_dir / p) for p in raw["data"]["paths"]]
    raw["data"]["cache_dir"] = str(run_dir / raw["data"]["cache_dir"])
    raw["encoders"]["path"] = str(run_dir / raw["encoders"]["path"])
    if raw["model"]["init_from"] is not None:
        raw["model"]["init_from"] = str(run_dir / raw["model"]["init_from"])
    return config_from_dict(TrainConfig, raw)


def merge_overrides(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Training-config overrides `extra` applied over `base` by the one override rule of every config
    (`merge_settings`: sections merge key by key, `model.config` is replaced whole)."""
    return merge_settings(TrainConfig, base, extra)


def write_encoders(run_dir: Path, vae_folder: Path) -> Path:
    """`encoders/` = the trained VAE + MiniLM text encoder and tokenizer (what the caches use)."""
    folder = run_dir / "encoders"
    if (folder / "tokenizer").is_dir():
        return folder
    text_encoder, tokenizer = load_minilm()
    with atomic_path(folder, directory=True, replace_folder=True) as temporary:
        shutil.copytree(vae_folder, temporary / "vae")
        text_encoder.save_pretrained(temporary / "text_encoder")
        tokenizer.save_pretrained(temporary / "tokenizer")
    return folder


def load_encoder(encoders: Path, max_text_length: int):
    """The trainer's `LatentEncoder` over `encoders/` (the demo VAE and MiniLM)."""
    return LatentEncoder.from_folder(encoders, max_text_length)


def cache_latents(train_config, encoder, progress: bool) -> Path:
    """Write the stage's latent cache with the trainer's own cache writer (resumable)."""
    data = train_config.data
    fingerprint = cache_fingerprint(data, train_config.encoders.path, train_config.encoders.max_text_length)
    return write_latent_cache(
        VideoSampleDataset(data), encoder, data.cache_dir, fingerprint, progress=progress
    )


def train_stage(train_config, progress: bool = True) -> Path:
    """Run (or resume, or skip when finished) one stage with the project's Trainer; returns final/transformer."""
    final = Path(train_config.output_dir) / "final" / "transformer"
    if (final / "config.json").is_file():
        return final
    trainer = Trainer(train_config)
    resume = find_latest_checkpoint(train_config.output_dir) is not None
    # The stage folder is the recipe's own: with no checkpoint to resume, what an attempt left is redone.
    result = trainer.train(resume=resume, overwrite=not resume, progress=progress)
    return result.export_dir


def text_length(config: DemoConfig, run_dir: Path) -> int:
    """The prompt length in tokens that caching, both stages and the assembled pipeline share.

    The trainer zero-pads text states to `encoders.max_text_length` and the pipeline pads prompts to
    its generation_config's `max_sequence_length`; a model sees different inputs when they differ."""
    stage1 = stage_config(config.stage1, run_dir, config.train_overrides)
    stage2 = stage_config(
        config.stage2, run_dir, merge_overrides(config.train_overrides, config.stage2_overrides)
    )
    if stage1.encoders.max_text_length != stage2.encoders.max_text_length:
        raise ValueError(
            f"encoders.max_text_length differs between stage 1 ({stage1.encoders.max_text_length}, "
            f"{config.stage1}) and stage 2 ({stage2.encoders.max_text_length}, {config.stage2}); "
            "the demo model is trained and sampled with one text length"
        )
    return stage1.encoders.max_text_length


def assemble_pipeline(
    run_dir: Path, transformer_folder: Path, config: DemoConfig, name: str = "pipeline"
) -> Path:
    """Save `run_dir/<name>`: the trained transformer and VAE, MiniLM, the Euler scheduler, defaults
    (prompts padded to the text length the stages were trained with)."""
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, BertModel

    encoders = run_dir / "encoders"
    generation = config.generation
    pipeline = KaleidoPipeline(
        tokenizer=AutoTokenizer.from_pretrained(encoders / "tokenizer"),
        text_encoder=BertModel.from_pretrained(encoders / "text_encoder").eval(),
        vae=AutoencoderKLWan.from_pretrained(encoders / "vae").eval(),
        scheduler=make_scheduler("kaleido_euler", shift=generation.shift),
        transformer=load_transformer(transformer_folder, torch_dtype=torch.float32).eval(),
    )
    pipeline.generation_config = GenerationConfig(
        height=config.data.size,
        width=config.data.size,
        num_frames=config.data.num_frames,
        fps=int(config.data.fps),
        num_inference_steps=generation.num_inference_steps,
        guidance_scale=generation.guidance_scale,
        shift=generation.shift,
        negative_prompt=generation.negative_prompt,
        max_references=generation.max_references,
        max_sequence_length=text_length(config, run_dir),
    )
    folder = run_dir / name
    with atomic_path(folder, directory=True, replace_folder=True) as temporary:
        pipeline.save_pretrained(temporary)
    return folder


def run_demo(config: DemoConfig, run_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Every step of the recipe in order (each skipped when already done); returns the pipeline folder."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.data.seed)

    # 1. Data: scenes -> cross-paired (or naive) S2V pairs; held-out cases; stage 2's clean subset.
    render_scenes(run_dir / "scenes" / "train", config.data, heldout=False, progress=progress)
    render_scenes(run_dir / "scenes" / "heldout", config.data, heldout=True, progress=progress)
    export = build_pairs(
        run_dir / "scenes" / "train", run_dir / "data" / "train", config.data, config.pairing, progress
    )
    heldout = build_pairs(
        run_dir / "scenes" / "heldout", run_dir / "data" / "heldout", config.data, "cross_shot", progress
    )
    write_heldout_cases(heldout, run_dir / "heldout" / "cases.jsonl")
    if not (run_dir / "data" / "sft").is_dir():
        select_clean_pairs(
            export, run_dir / "data" / "sft", variant="naive" if config.pairing == "naive" else "cutout"
        )

    # 2. The VAE, then the encoders folder the caches are built with.
    vae_folder = train_vae(export, run_dir / "vae_train", config.vae, config.data.size, progress=progress)
    encoders = write_encoders(run_dir, vae_folder)

    # 3. Stage 1 pre-training on every pair, stage 2 SFT on the clean ones (fresh optimizer).
    stage1 = stage_config(config.stage1, run_dir, config.train_overrides)
    encoder = load_encoder(encoders, text_length(config, run_dir))
    cache_latents(stage1, encoder, progress)
    train_stage(stage1, progress)
    stage2 = stage_config(
        config.stage2, run_dir, merge_overrides(config.train_overrides, config.stage2_overrides)
    )
    if stage2.model.init_from is not None and not Path(stage2.model.init_from).is_dir():
        raise FileNotFoundError(
            f"stage 2 starts from {stage2.model.init_from}, which stage 1 did not write; "
            f"point model.init_from in {config.stage2} at stage 1's final/transformer"
        )
    cache_latents(stage2, encoder, progress)
    stage2_final = train_stage(stage2, progress)

    # 4. The pipeline folder `KaleidoPipeline.from_pretrained` loads.
    return assemble_pipeline(run_dir, stage2_final, config)
