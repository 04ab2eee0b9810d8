"""Whole-checkpoint conversion behind `kaleido-s2v convert` (folders in, folders out, atomically)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.models.checkpoints import (
    infer_config,
    load_transformer,
    read_state_dict,
    save_sat_checkpoint,
    save_wan_checkpoint,
    wan_original_config,
)
from kaleido_s2v.models.key_mapping import convert_state_dict


def convert_checkpoint(
    src: Path,
    dst: Path,
    target: str = "diffusers",
    torch_dtype: torch.dtype | None = None,
    max_shard_size: str = "5GB",
    rope_policy: str | None = None,
    attention_head_dim: int | None = None,
) -> Path:
    """Convert `src` (any layout) into a new folder `dst` in the `target` layout."""
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; choose a new output folder")
    with atomic_path(dst, directory=True) as staging:
        if target == "diffusers":
            config = None
            if attention_head_dim is not None:
                state_dict, layout = read_state_dict(src)
                diffusers_keys = convert_state_dict(state_dict, layout, "diffusers")
                config = infer_config(diffusers_keys, attention_head_dim=attention_head_dim)
            model = load_transformer(src, torch_dtype=torch_dtype, config=config, rope_policy=rope_policy)
            # Every tensor in one dtype, as the other targets: from_pretrained keeps the model's
            # `_keep_in_fp32_modules` in fp32 whatever dtype it was asked for.
            model.to(torch_dtype or next(iter(read_state_dict(src)[0].values())).dtype)
            model.save_pretrained(staging, max_shard_size=max_shard_size, safe_serialization=True)
        else:
            state_dict, layout = read_state_dict(src)
            if torch_dtype is not None:
                state_dict = {key: value.to(torch_dtype) for key, value in state_dict.items()}
            converted = convert_state_dict(state_dict, layout, target)
            if target == "wan":
                save_wan_checkpoint(converted, staging)
                _write_wan_config(
                    staging, convert_state_dict(state_dict, layout, "diffusers"), src, attention_head_dim
                )
            else:
                save_sat_checkpoint(converted, staging)
    return dst


def _write_wan_config(folder: Path, diffusers_state_dict: dict, src: Path, head_dim: int | None) -> None:
    """Wan's own `config.json` (dim, num_heads, ...) so the head count survives the round trip."""
    head = (
        {"attention_head_dim": head_dim} if head_dim else (wan_original_config(src) if src.is_dir() else None)
    )
    source_config = src / "config.json"
    if head is None and source_config.is_file():
        diffusers_config = json.loads(source_config.read_text())
        if "attention_head_dim" in diffusers_config:
            head = {"attention_head_dim": diffusers_config["attention_head_dim"]}
    config = infer_config(diffusers_state_dict, **(head or {}))
    wan_config = {
        "_class_name": "WanModel",
        "model_type": "t2v",
        "dim": config["num_attention_heads"] * config["attention_head_dim"],
        "ffn_dim": config["ffn_dim"],
        "freq_dim": config["freq_dim"],
        "in_dim": config["in_channels"],
        "out_dim": config["out_channels"],
        "num_heads": config["num_attention_heads"],
        "num_layers": config["num_layers"],
        "text_dim": config["text_dim"],
        "eps": 1e-6,
        "text_len": 512,
    }
    (folder / "config.json").write_text(json.dumps(wan_config, indent=2) + "\n")
