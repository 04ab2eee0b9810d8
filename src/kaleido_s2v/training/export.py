"""The weights a finished run leaves in `<output_dir>/final/`, with EMA averages in place of the trained
weights when the run keeps them:

- full fine-tuning: `final/transformer/` (config.json + diffusion_pytorch_model.safetensors, what
  `load_transformer` and stage 2's `model.init_from` read) and `final/training_state.json` (step and shift);
- LoRA: `final/lora/pytorch_lora_weights.safetensors` (diffusers' Wan LoRA format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.models.checkpoints import SAFETENSORS_NAME
from kaleido_s2v.training import distributed
from kaleido_s2v.training.lora import save_lora


def final_weights(model: nn.Module, ema: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The model's full CPU state dict with the EMA averages (when kept) in place of the trained
    weights; a collective under FSDP: every rank must call it."""
    state = distributed.full_state_dict(model)
    for name, tensor in (ema or {}).items():
        state[name] = distributed.full_tensor(tensor).detach().cpu()
    return state


def export_final_weights(
    model: nn.Module,
    ema: dict[str, torch.Tensor] | None,
    output_dir: Path,
    *,
    class_name: str,
    lora: bool,
    training_state: dict[str, Any],
    is_main: bool,
) -> Path:
    """Write `<output_dir>/final/` as the module docstring says (every rank calls it; the main rank
    writes); returns `final/transformer` or `final/lora`.

    `class_name` is the transformer's own class (FSDP wraps it in another); `training_state` is
    written beside a full transformer as `final/training_state.json`.
    """
    state = final_weights(model, ema)
    final = output_dir / "final"
    folder = final / ("lora" if lora else "transformer")
    if is_main and lora:
        save_lora(model, state, folder)
    elif is_main:
        folder.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
        config["_class_name"] = class_name
        write_json_atomic(folder / "config.json", config)
        with atomic_path(folder / SAFETENSORS_NAME) as temporary:
            tensors = {k: v.contiguous() for k, v in state.items()}
            save_file(tensors, str(temporary), metadata={"format": "pt"})
        write_json_atomic(final / "training_state.json", training_state)
    distributed.barrier()
    return folder
