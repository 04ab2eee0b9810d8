"""Reference images: loading from any common form and letterboxing to the video size (docs/model.md#3-reference-preprocessing).

A file is opened by `kaleido_s2v.common.images.open_image` (EXIF orientation applied, 16-bit mapped to 8-bit,
transparency kept) and an in-memory image is brought to 8 bits by its `to_8bit`; each reference is then
composited on white (`images.on_white`), letterboxed to (height, width) by `common.letterbox.letterbox`
(resized with LANCZOS to fit keeping its aspect ratio, padded centred with white), and scaled to [-1, 1].
The VAE then encodes every reference as its own frame.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from kaleido_s2v.common.images import on_white, open_image, to_8bit, unit_float_to_uint8
from kaleido_s2v.common.letterbox import letterbox

ReferenceInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def load_reference(source: ReferenceInput, index: int = 0) -> Image.Image:
    """One reference as an RGB PIL image; transparency is composited on white.

    Accepts a path (read by `images.open_image`), a PIL image, a numpy array (H, W), (H, W, 3) or
    (H, W, 4), uint8 or float in [0, 1], or a tensor (3|4, H, W) / (H, W, 3|4) float in [0, 1] or uint8.
    `index` only names the reference in error messages.
    """
    if isinstance(source, (str, os.PathLike)):
        return on_white(open_image(Path(source), label=f"reference {index}"))
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, torch.Tensor):
        image = _array_to_image(_tensor_to_hwc(source, index), index)
    elif isinstance(source, np.ndarray):
        image = _array_to_image(source, index)
    else:
        raise TypeError(
            f"reference {index}: expected a path, PIL image, numpy array or tensor, got {type(source).__name__}"
        )
    return on_white(to_8bit(image, f"reference {index}"))


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] as (x - 127.5) / 127.5."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy((array - 127.5) / 127.5).permute(2, 0, 1).contiguous()


def prepare_references(sources: list[ReferenceInput], height: int, width: int) -> torch.Tensor:
    """Load and letterbox every reference. Returns (S, 3, height, width) float32 in [-1, 1]."""
    if not sources:
        return torch.empty(0, 3, height, width)
    tensors = [image_to_tensor(letterbox(load_reference(s, i), height, width)) for i, s in enumerate(sources)]
    return torch.stack(tensors)


def reference_fingerprint(source: ReferenceInput) -> str:
    """sha256 of a reference: of the file's bytes for a path, of the decoded RGB pixels otherwise."""
    if isinstance(source, (str, os.PathLike)):
        digest = hashlib.sha256()
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    image = load_reference(source)
    return hashlib.sha256(f"{image.width}x{image.height}".encode() + image.tobytes()).hexdigest()


def _tensor_to_hwc(tensor: torch.Tensor, index: int) -> np.ndarray:
    array = tensor.detach().cpu()
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.permute(1, 2, 0)
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] in (1, 3, 4):
        raise ValueError(
            f"reference {index}: tensor shape {tuple(tensor.shape)} is ambiguous between (C, H, W) and "
            "(H, W, C); pass a PIL image or a numpy (H, W, C) array"
        )
    if array.dtype == torch.bfloat16 or array.dtype == torch.float16:
        array = array.float()
    return array.numpy()


def _array_to_image(array: np.ndarray, index: int) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"reference {index}: array shape {array.shape} is not an image; expected (H, W), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"reference {index}: array shape {array.shape} has an empty side")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"reference {index}: array dtype {array.dtype} must be uint8 or float in [0, 1]")
        array = unit_float_to_uint8(array, f"reference {index} (float array)")
    return Image.fromarray(np.ascontiguousarray(array))
