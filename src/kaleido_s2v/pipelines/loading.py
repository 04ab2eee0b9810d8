"""Loading a KaleidoPipeline's components: a diffusers-format folder, or the Kaleido release layout.

Either gives the five components and the model's generation settings (`PipelineParts`), which
`KaleidoPipeline.from_pretrained` / `.from_kaleido_release` assemble. Components are loaded here
rather than by diffusers' generic loader, which cannot resolve a component class from this package
through `model_index.json`. The frozen encoders are read by `models.components`, as the trainer's
encoders read them.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from kaleido_s2v.models.components import load_text_encoder, load_tokenizer, load_vae
from kaleido_s2v.models.release import load_release_components
from kaleido_s2v.models.transformer import KaleidoTransformer3DModel
from kaleido_s2v.pipelines.generation_config import GenerationConfig, make_scheduler, scheduler_shift

PIPELINE_FOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
SUPPORTED_SCHEDULERS = {
    cls.__name__: cls for cls in (FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler)
}


@dataclass
class PipelineParts:
    """The components of a KaleidoPipeline and the generation settings of the model they come from."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: AutoencoderKLWan
    scheduler: FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler
    transformer: KaleidoTransformer3DModel
    generation_config: GenerationConfig


def load_pipeline_folder(
    name_or_path: str | os.PathLike,
    torch_dtype: torch.dtype | None,
    vae_dtype: torch.dtype | None,
    transformer: KaleidoTransformer3DModel | None,
) -> PipelineParts:
    """A diffusers-format folder (model_index.json, one folder per component, generation_config.json).

    vae_dtype None follows torch_dtype; `transformer`, when given, replaces the folder's. A Hub id is
    resolved to a local snapshot first (needs network).
    """
    path = resolve_model_path(name_or_path)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{path} has no model_index.json; a diffusers-format pipeline folder is expected "
            "(for the Kaleido release layout use KaleidoPipeline.from_kaleido_release)"
        )
    for folder in PIPELINE_FOLDERS:
        if not (path / folder).is_dir():
            raise FileNotFoundError(f"{path} has no {folder}/ folder; the pipeline folder is incomplete")
    if transformer is None:
        transformer = KaleidoTransformer3DModel.from_pretrained(path / "transformer", torch_dtype=torch_dtype)
    generation_config = GenerationConfig.from_dir(path)
    scheduler = load_scheduler(path / "scheduler")
    _warn_if_shift_disagrees(scheduler, generation_config, path)
    return PipelineParts(
        tokenizer=load_tokenizer(path),
        text_encoder=load_text_encoder(path, torch_dtype),
        vae=load_vae(path, vae_dtype or torch_dtype),
        scheduler=scheduler,
        transformer=transformer.eval(),
        generation_config=generation_config,
    )


def load_release_folder(
    release_dir: str | os.PathLike,
    torch_dtype: torch.dtype | None,
    vae_dtype: torch.dtype,
    generation_config: GenerationConfig | None,
    vae_config: dict | None,
    transformer_config: dict | None,
) -> PipelineParts:
    """The release layout (`model/` SAT checkpoint, `Wan2.1_VAE.pth`, `umt5-xxl/`), with a scheduler of
    the generation config's preset and shift (default: the folder's generation_config.json, else the
    release values, docs/contracts.md#7-generation-defaults-live-with-the-model). vae_config / transformer_config: see `load_release_components`."""
    path = resolve_model_path(release_dir)
    components = load_release_components(
        path,
        torch_dtype=torch_dtype,
        vae_dtype=vae_dtype,
        vae_config=vae_config,
        transformer_config=transformer_config,
    )
    config = generation_config or GenerationConfig.from_dir(path)
    return PipelineParts(
        tokenizer=components.tokenizer,
        text_encoder=components.text_encoder,
        vae=components.vae,
        scheduler=make_scheduler(config.scheduler, shift=config.shift),
        transformer=components.transformer,
        generation_config=config,
    )


def load_scheduler(folder: Path) -> FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler:
    """A scheduler from its saved config, limited to the two supported flow schedulers."""
    name = json.loads((folder / "scheduler_config.json").read_text())["_class_name"]
    if name not in SUPPORTED_SCHEDULERS:
        raise ValueError(
            f"{folder}: scheduler {name} is not supported; use one of {sorted(SUPPORTED_SCHEDULERS)}"
        )
    return SUPPORTED_SCHEDULERS[name].from_pretrained(folder)


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub id resolved with `snapshot_download` (needs network)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; a model is a folder")
        return path
    text = str(name_or_path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download  # only for a Hub id: needs network

        return Path(snapshot_download(text))
    raise FileNotFoundError(f"model folder {path} does not exist")


def _warn_if_shift_disagrees(scheduler, generation_config: GenerationConfig, path: Path) -> None:
    """The folder's generation_config.json decides the shift; a scheduler saved with another is named."""
    saved = scheduler_shift(scheduler)
    if abs(saved - generation_config.shift) > 1e-9:
        warnings.warn(
            f"{path}: scheduler_config.json's shift {saved} differs from generation_config.json's "
            f"{generation_config.shift}; sampling uses generation_config.json's (a call's shift= overrides it)",
            stacklevel=4,
        )
