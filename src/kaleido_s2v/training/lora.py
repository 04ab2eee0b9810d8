"""LoRA fine-tuning with peft: add adapters to the transformer, save them as diffusers LoRA weights.

The saved file is `pytorch_lora_weights.safetensors` with keys `transformer.<module>.lora_A.weight`
(diffusers' Wan LoRA format), so `pipeline.load_lora_weights(folder)` loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.training.config import LoraSettings

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def apply_lora(model: nn.Module, settings: LoraSettings) -> None:
    """Freeze every base weight and add trainable adapters to `settings.target_modules`."""
    try:
        from peft import LoraConfig
    except ImportError as error:
        raise ImportError('LoRA training needs peft: pip install "kaleido-s2v[train]"') from error

    model.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        init_lora_weights=True,
    )
    model.add_adapter(config)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"lora.target_modules {list(settings.target_modules)} matched no module of the model"
        )


def lora_state_dict(model: nn.Module, full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adapter weights from a full state dict, named as diffusers' Wan LoRA loader expects."""
    from peft.utils import get_peft_model_state_dict

    adapters = get_peft_model_state_dict(model, state_dict=full_state)
    return {f"transformer.{name}": tensor.detach().cpu().contiguous() for name, tensor in adapters.items()}


def save_lora(model: nn.Module, full_state: dict[str, torch.Tensor], folder: str | os.PathLike) -> Path:
    """Write `folder/pytorch_lora_weights.safetensors` (atomically) and return its path."""
    from safetensors.torch import save_file

    tensors = lora_state_dict(model, full_state)
    if not tensors:
        raise ValueError("the model holds no LoRA weights to save")
    path = Path(folder) / LORA_WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata={"format": "pt"})
    return path


def load_lora_into_pipeline(pipeline, folder: str | os.PathLike, adapter_name: str = "default") -> None:
    """Load `folder/pytorch_lora_weights.safetensors` (or that file itself) with the pipeline's
    `load_lora_weights` (diffusers' Wan LoRA loader)."""
    path = Path(folder)
    path = path / LORA_WEIGHTS if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"LoRA weights {path} do not exist")
    pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=adapter_name)
