"""Image and text embeddings: CLIP / SigLIP (image-text similarity) and DINOv2 (image-image)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from kaleido_s2v.data.backends._common import (
    check_images,
    check_model_type,
    inputs_to,
    l2_normalise,
    pooled_features,
    read_model_config,
    resolve_model_source,
    to_pil,
)

CLIP_FAMILY = ("clip", "siglip", "siglip2")
# model_type -> the transformers class that loads it
DINOV2_CLASSES = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}


class ClipScorer:
    """Cosine similarity between images and texts in a CLIP or SigLIP embedding space.

    Similarities are plain cosines in [-1, 1], without the model's logit scale or bias.
    """

    def __init__(self, model, image_processor, tokenizer, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be ≥ 1")
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # SigLIP's text tower was trained on max-length padded text; CLIP pools the EOS token.
        self.text_padding = "max_length" if model.config.model_type.startswith("siglip") else True

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> ClipScorer:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        source, local_dir = resolve_model_source(path_or_id)
        config = read_model_config(source, local_dir)
        check_model_type(config, CLIP_FAMILY, "CLIP / SigLIP model", source)
        model = AutoModel.from_pretrained(source, dtype=dtype).to(device)
        return cls(
            model,
            AutoImageProcessor.from_pretrained(source),
            AutoTokenizer.from_pretrained(source),
            batch_size=batch_size,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, D) float32, unit rows."""
        dtype = next(self.model.parameters()).dtype

        def embed(batch) -> torch.Tensor:
            # SigLIP2 also needs its processor's patch mask and spatial shapes: pass every output.
            return pooled_features(self.model.get_image_features(**inputs_to(batch, self.device, dtype)))

        return _unit_image_features(images, self.image_processor, self.batch_size, embed)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32, unit rows."""
        if isinstance(texts, str):
            raise TypeError(f"texts must be a list of strings, got the string {texts!r}")
        if len(texts) == 0:
            raise ValueError("texts is empty; pass at least one string")
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=self.text_padding,
                truncation=True,
                return_tensors="pt",
            )
            inputs = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            if self.text_padding == "max_length":
                inputs.pop("attention_mask", None)  # SigLIP attends to its padding, as trained
            chunks.append(pooled_features(self.model.get_text_features(**inputs)))
        return l2_normalise(torch.cat(chunks))

    def image_text_similarity(
        self, images: Sequence[np.ndarray] | np.ndarray, texts: Sequence[str]
    ) -> np.ndarray:
        """(N_img, N_txt) cosine similarities."""
        return self.image_features(images) @ self.text_features(texts).T


class DinoV2Embedder:
    """DINOv2 image embeddings (the CLS token), for subject-to-reference similarity."""

    def __init__(self, model, image_processor, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be ≥ 1")
        self.model = model.eval()
        self.image_processor = image_processor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 16,
    ) -> DinoV2Embedder:
        """Load a DINOv2 folder, with or without register tokens (the class by `DINOV2_CLASSES`)."""
        import transformers

        source, local_dir = resolve_model_source(path_or_id)
        config = read_model_config(source, local_dir)
        model_type = check_model_type(config, list(DINOV2_CLASSES), "DINOv2 model", source)
        model = getattr(transformers, DINOV2_CLASSES[model_type]).from_pretrained(source, dtype=dtype)
        image_processor = transformers.AutoImageProcessor.from_pretrained(source)
        return cls(model.to(device), image_processor, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_features(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, D) float32, unit rows (D = the model's hidden size)."""
        dtype = next(self.model.parameters()).dtype

        def embed(batch) -> torch.Tensor:  # (B, D): the layer-normed CLS token
            return self.model(pixel_values=batch["pixel_values"].to(self.device, dtype)).pooler_output

        return _unit_image_features(images, self.image_processor, self.batch_size, embed)


def _unit_image_features(images, image_processor, batch_size: int, embed) -> np.ndarray:
    """(N, D) float32 unit rows: `images` through `image_processor` in batches of `batch_size`,
    each batch embedded by `embed` (processor output -> (B, D) tensor)."""
    images = check_images(images)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = image_processor(
            images=[to_pil(i) for i in images[start : start + batch_size]], return_tensors="pt"
        )
        chunks.append(embed(batch))
    return l2_normalise(torch.cat(chunks))
