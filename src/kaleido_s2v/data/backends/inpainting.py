"""Mask inpainting with diffusers' FluxFillPipeline, with the original pixels pasted back
outside the mask (the pipeline regenerates the whole image through the VAE)."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch

from kaleido_s2v.data.backends._common import (
    check_image,
    check_mask,
    read_model_config,
    resolve_model_source,
)

FLUX_FILL_CLASSES = ("FluxFillPipeline",)


def pad_to_multiple(array: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad (H, W, ...) at the bottom/right to multiples of `multiple`: images by edge replication,
    bool masks with False. Returns the padded array and the original (H, W)."""
    height, width = array.shape[:2]
    pad_h = math.ceil(height / multiple) * multiple - height
    pad_w = math.ceil(width / multiple) * multiple - width
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    if array.dtype == bool:
        return np.pad(array, widths, constant_values=False), (height, width)
    return np.pad(array, widths, mode="edge"), (height, width)


def resize_for_pipeline(image: np.ndarray, mask: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink so the longer side is at most `max_side` (never enlarge). The mask is resized by area
    and kept wherever any of it lands, so the repainted region covers the requested one."""
    from PIL import Image

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image, mask
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
    small_mask = np.asarray(Image.fromarray(mask.astype(np.float32)).resize(size, Image.Resampling.BOX)) > 0
    return small, small_mask


class FluxFillInpainter:
    """Repaint the masked region of an image from a prompt; pixels outside the mask are the input's."""

    def __init__(
        self,
        pipeline,
        num_inference_steps: int = 50,
        guidance_scale: float = 30.0,
        max_side: int = 1024,
        max_sequence_length: int = 512,
    ) -> None:
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps {num_inference_steps} must be ≥ 1")
        if max_side < 16:
            raise ValueError(f"max_side {max_side} is too small; use at least 16 (FLUX works best near 1024)")
        self.pipeline = pipeline
        self.pipeline.set_progress_bar_config(disable=True)
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.max_side = max_side
        self.max_sequence_length = max_sequence_length
        # Height and width must be multiples of the VAE factor times the 2x2 latent packing.
        self.multiple = int(pipeline.vae_scale_factor) * 2
        self._prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        num_inference_steps: int = 50,
        guidance_scale: float = 30.0,
        max_side: int = 1024,
        max_sequence_length: int = 512,
    ) -> FluxFillInpainter:
        """Load a FluxFillPipeline folder (model_index.json with transformer, VAE, both text encoders)."""
        from diffusers import FluxFillPipeline

        source, local_dir = resolve_model_source(path_or_id)
        index = read_model_config(source, local_dir, "model_index.json")
        name = index.get("_class_name")
        if name not in FLUX_FILL_CLASSES:
            raise ValueError(
                f"{source} holds a {name!r} pipeline, not a FluxFillPipeline; pass a FLUX.1 Fill folder "
                "(e.g. black-forest-labs/FLUX.1-Fill-dev)"
            )
        with warnings.catch_warnings():
            # diffusers ≥ 0.41 renames torch_dtype to dtype; older releases know only torch_dtype.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipeline = FluxFillPipeline.from_pretrained(source, torch_dtype=dtype).to(device)
        missing = [
            name for name in ("text_encoder", "text_encoder_2") if getattr(pipeline, name, None) is None
        ]
        if missing:
            raise ValueError(
                f"{source} has no {' or '.join(missing)}; the inpainter encodes its prompts, so pass a complete "
                "FLUX.1 Fill folder (CLIP and T5 text encoders included)"
            )
        return cls(
            pipeline,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            max_side=max_side,
            max_sequence_length=max_sequence_length,
        )

    def _prompt_embeddings(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if prompt not in self._prompt_cache:
            with torch.no_grad():
                prompt_embeds, pooled, _ = self.pipeline.encode_prompt(
                    prompt=prompt,
                    prompt_2=None,
                    device=self.pipeline._execution_device,
                    num_images_per_prompt=1,
                    max_sequence_length=self.max_sequence_length,
                )
            self._prompt_cache[prompt] = (prompt_embeds, pooled)
        return self._prompt_cache[prompt]

    def repaint(self, image: np.ndarray, mask: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        """The pipeline's raw output (H, W, 3) uint8 at the input size, before pasting back."""
        from PIL import Image

        image = check_image(image)
        mask = check_mask(mask, image.shape[:2])
        height, width = image.shape[:2]
        small, small_mask = resize_for_pipeline(image, mask, self.max_side)
        padded, (work_h, work_w) = pad_to_multiple(small, self.multiple)
        padded_mask, _ = pad_to_multiple(small_mask, self.multiple)
        prompt_embeds, pooled = self._prompt_embeddings(prompt)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.no_grad():
            result = self.pipeline(
                prompt_embeds=prompt_embeds,
                pooled_prompt_embeds=pooled,
                image=Image.fromarray(padded),
                mask_image=Image.fromarray(padded_mask.astype(np.uint8) * 255),  # white = repaint
                height=padded.shape[0],
                width=padded.shape[1],
                num_inference_steps=self.num_inference_steps,
                guidance_scale=self.guidance_scale,
                generator=generator,
                output_type="np",
            ).images[0]  # (H_pad, W_pad, 3) float in [0, 1]
        filled = (np.clip(result[:work_h, :work_w], 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if (work_h, work_w) != (height, width):
            filled = np.asarray(Image.fromarray(filled).resize((width, height), Image.Resampling.BICUBIC))
        return filled

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        """(H, W, 3) uint8: the repainted region inside `mask` (H, W bool), the input elsewhere."""
        image = check_image(image)
        mask = check_mask(mask, image.shape[:2])
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if not mask.any():
            return image.copy()
        filled = self.repaint(image, mask, prompt, seed)
        return np.where(mask[..., None], filled, image)
