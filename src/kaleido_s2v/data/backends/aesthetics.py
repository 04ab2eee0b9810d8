"""The LAION aesthetic predictor: a linear or MLP head on CLIP ViT-L/14 image embeddings.

The head's weights are a user-supplied file (`.safetensors`, or `.pt`/`.pth` read with
`torch.load(weights_only=True)`). Both published layouts load: the linear v1 head
(`weight`, `bias`) and the v2 MLP (`layers.0 … layers.7`, linear layers with dropout between
and no activations). Inputs are the L2-normalised CLIP image embeddings, as in training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kaleido_s2v.data.backends._common import (
    check_images,
    check_model_type,
    pooled_features,
    read_model_config,
    resolve_model_source,
    to_pil,
)


def read_head_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The head's tensors from a safetensors or torch file (no arbitrary unpickling)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"aesthetic head weights {path} do not exist; pass the .safetensors or .pth file"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{path} could not be read as a torch state dict with weights_only=True: {error}"
            ) from error
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


def build_head(state: dict[str, torch.Tensor], source: str = "head") -> nn.Sequential:
    """Linear layers in key order (`layers.0`, `layers.2`, …, or a bare `weight`/`bias`)."""
    weights = sorted(
        (key for key, value in state.items() if key.endswith("weight") and value.ndim == 2),
        key=lambda key: [int(n) for n in re.findall(r"\d+", key)],
    )
    if not weights:
        raise ValueError(
            f"{source} has no 2-D '*weight' tensors (keys: {sorted(state)[:8]}); it is not a linear/MLP head"
        )
    layers: list[nn.Module] = []
    for key in weights:
        weight = state[key].float()
        bias = state.get(key[: -len("weight")] + "bias")
        if layers and weight.shape[1] != layers[-1].out_features:
            raise ValueError(
                f"{source}: layer {key} takes {weight.shape[1]} inputs but the previous layer gives {layers[-1].out_features}"
            )
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias.float())
        layers.append(linear)
    if layers[-1].out_features != 1:
        raise ValueError(
            f"{source}: the last layer gives {layers[-1].out_features} outputs; an aesthetic head gives 1"
        )
    return nn.Sequential(*layers).eval()


class LaionAestheticPredictor:
    """Aesthetic scores (about 1–10 for the real head) from CLIP image embeddings."""

    def __init__(self, clip_model, image_processor, head: nn.Sequential, batch_size: int = 16) -> None:
        self.clip_model = clip_model.eval()
        self.image_processor = image_processor
        self.head = head.eval()
        self.batch_size = batch_size
        embedding = int(getattr(clip_model.config, "projection_dim", 0))
        if embedding and head[0].in_features != embedding:
            raise ValueError(
                f"the aesthetic head takes {head[0].in_features}-d features but the CLIP model gives {embedding}-d "
                "(the LAION heads are for ViT-L/14, 768-d); pair the head with its CLIP model"
            )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        head_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> LaionAestheticPredictor:
        """`path_or_id`: the CLIP model (openai/clip-vit-large-patch14); `head_path`: the head file."""
        from transformers import AutoImageProcessor, CLIPModel

        source, local_dir = resolve_model_source(path_or_id)
        config = read_model_config(source, local_dir)
        check_model_type(config, ["clip"], "CLIP model (ViT-L/14 for the LAION head)", source)
        head = build_head(read_head_state(head_path), source=str(head_path))
        model = CLIPModel.from_pretrained(source, dtype=dtype).to(device)
        return cls(model, AutoImageProcessor.from_pretrained(source), head.to(device), batch_size=batch_size)

    @torch.no_grad()
    def score(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N,) float32 scores."""
        images = check_images(images)
        device = next(self.clip_model.parameters()).device
        dtype = next(self.clip_model.parameters()).dtype
        scores = []
        for start in range(0, len(images), self.batch_size):
            batch = self.image_processor(
                images=[to_pil(i) for i in images[start : start + self.batch_size]], return_tensors="pt"
            )
            features = pooled_features(
                self.clip_model.get_image_features(pixel_values=batch["pixel_values"].to(device, dtype))
            )
            features = nn.functional.normalize(features.float(), dim=-1)  # (B, 768)
            scores.append(self.head(features)[:, 0])
        return torch.cat(scores).cpu().numpy().astype(np.float32)
