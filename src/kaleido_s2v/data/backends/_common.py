"""Shared helpers for the model-backed wrappers: resolving a model folder, checking what it
holds before loading it, validating images, and moving inputs to the model's device and dtype."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

MODELS_EXTRA = 'pip install "kaleido-s2v[data]"'


def resolve_model_source(path_or_id: str | os.PathLike) -> tuple[str, Path | None]:
    """Return `(source, local_dir)`: the string to hand to `from_pretrained` and, for a local
    folder, its path. A Hub id (`owner/name`) is passed through with `local_dir=None`.

    A value that looks like a filesystem path (absolute, `./`, `~`, or more than one `/`) but does
    not exist raises FileNotFoundError instead of being sent to the Hub as a repository name.
    """
    text = os.fspath(path_or_id)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), path
    if path.exists():
        raise NotADirectoryError(f"{text} is a file; pass the model folder that holds config.json")
    looks_like_path = (
        text.startswith(("/", ".", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text
    )
    if looks_like_path or not text:
        raise FileNotFoundError(
            f"model folder {text!r} does not exist; pass a local folder or a Hub id (owner/name)"
        )
    return text, None


def read_model_config(source: str, local_dir: Path | None, filename: str = "config.json") -> dict:
    """Read `filename` (config.json or model_index.json) from a local folder or the Hub cache."""
    if local_dir is not None:
        config_path = local_dir / filename
        if not config_path.is_file():
            present = sorted(p.name for p in local_dir.iterdir())[:12]
            kind = ""
            if filename == "config.json" and "model_index.json" in present:
                kind = ", a diffusers pipeline folder"
            elif filename == "model_index.json" and "config.json" in present:
                kind = ", a single-model folder, not a diffusers pipeline"
            raise FileNotFoundError(
                f"{local_dir} has no {filename}, so it is not a saved model folder of that kind (it holds {present}{kind}); "
                "pass the folder written by save_pretrained"
            )
    else:
        from huggingface_hub import hf_hub_download

        config_path = Path(hf_hub_download(source, filename))
    try:
        return json.loads(Path(config_path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from error


def check_model_type(config: dict, allowed: Sequence[str], what: str, source: str) -> str:
    """Raise a clear error when a folder's config names another architecture."""
    model_type = str(config.get("model_type", ""))
    if model_type not in allowed:
        architectures = config.get("architectures") or []
        raise ValueError(
            f"{source} holds a {model_type or 'config without model_type'!r} model {architectures}, "
            f"not a {what} (expected model_type in {list(allowed)}); pass a {what} folder"
        )
    return model_type


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return `image` as a contiguous (H, W, 3) uint8 array or raise a ValueError saying why not."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) RGB, got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 (0..255), got {image.dtype}; convert with (x * 255).round().astype(np.uint8)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(
            f"{name} is {image.shape[1]}x{image.shape[0]} pixels; it is empty (a crop with x1 <= x0?)"
        )
    return np.ascontiguousarray(image)


def check_images(images: Sequence[np.ndarray] | np.ndarray, name: str = "images") -> list[np.ndarray]:
    """Accept a list of (H, W, 3) uint8 arrays or one (N, H, W, 3) array; N must be ≥ 1."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if isinstance(images, np.ndarray):
        images = [images]
    if len(images) == 0:
        raise ValueError(f"{name} is empty; pass at least one (H, W, 3) uint8 image")
    return [check_image(image, f"{name}[{index}]") for index, image in enumerate(images)]


def check_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Return `mask` as an (H, W) bool array matching the image size."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} has shape {mask.shape}; it must be (H, W) = {tuple(shape)}, the image size")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.number):
            raise ValueError(f"{name} must be a bool (or 0/1) array, got {mask.dtype}")
        mask = mask > 0
    return mask


def to_pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image)


def inputs_to(batch, device: torch.device | str, dtype: torch.dtype) -> dict:
    """Move a processor's output to `device`; floating tensors also to `dtype` (ids stay integers)."""
    moved = {}
    for key, value in dict(batch).items():
        if isinstance(value, torch.Tensor):
            value = value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
        moved[key] = value
    return moved


def l2_normalise(features: torch.Tensor) -> np.ndarray:
    """(N, D) float tensor → (N, D) float32 numpy with unit rows."""
    features = features.float()
    return torch.nn.functional.normalize(features, dim=-1).cpu().numpy().astype(np.float32)


def pooled_features(output) -> torch.Tensor:
    """`get_image_features`/`get_text_features` return a tensor in some transformers versions and a
    model output (with `pooler_output`) in others; give back the (N, D) tensor either way."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find pooled features in {type(output).__name__}")
    return pooled
