"""Video captions and subject nouns from a Qwen2-VL / Qwen2.5-VL model (transformers).

The model's video processor needs torchvision, so sampled frames are passed as images through
`Qwen2VLImageProcessorPil`, and the chat prompt is assembled here in Qwen's chat format with each
image placeholder expanded to the number of merged patches the image produces.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from kaleido_s2v.data.backends._common import (
    check_images,
    check_model_type,
    read_model_config,
    resolve_model_source,
    to_pil,
)

QWEN_VL_TYPES = ("qwen2_vl", "qwen2_5_vl")

CAPTION_PROMPT = (
    "These images are frames sampled in order from one video shot. Describe the video in one "
    "paragraph: the main subjects and their appearance, what they do, the setting and the camera. "
    "Then list the main visible subjects as short nouns (e.g. 'woman', 'red car', 'dog'), at most "
    "{max_subjects}, no body parts, no background or abstract words. Answer with JSON only: "
    '{{"caption": "...", "subjects": ["...", "..."]}}'
)

_ARTICLES = re.compile(r"^(a|an|the|one|two|some)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Caption:
    """A clip's caption and the subject nouns the model listed (lower case, de-duplicated)."""

    text: str
    subjects: list[str] = field(default_factory=list)


def clean_subject(word: str) -> str:
    """'The Red Car.' → 'red car'; empty when nothing is left."""
    word = re.sub(r"[\"'`*_\[\]{}()]", " ", str(word)).strip().strip(".,;:!?-").strip()
    word = " ".join(word.lower().split())
    return _ARTICLES.sub("", word).strip()


def _unique(words: Sequence[str], limit: int) -> list[str]:
    seen: list[str] = []
    for word in words:
        cleaned = clean_subject(word)
        if cleaned and cleaned not in seen and len(cleaned) <= 40:
            seen.append(cleaned)
    return seen[:limit]


def _split_words(value) -> list[str]:
    if isinstance(value, str):
        return re.split(r"[,;\n]|\band\b", value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return []


def parse_caption(text: str, max_subjects: int = 5) -> Caption:
    """Read a model answer: JSON (also inside ``` fences or with chatter around it), or
    `Caption: ...` / `Subjects: a, b` lines; otherwise the whole answer is the caption with no subjects."""
    text = text.strip()
    for candidate in re.findall(r"\{.*\}", text, flags=re.DOTALL):
        try:
            payload = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(payload, dict):
            keys = {str(k).lower(): v for k, v in payload.items()}
            caption = keys.get("caption") or keys.get("description") or ""
            subjects = keys.get("subjects") or keys.get("subject") or keys.get("objects") or []
            if isinstance(caption, str) and caption.strip():
                return Caption(" ".join(caption.split()), _unique(_split_words(subjects), max_subjects))
    caption_match = re.search(
        r"caption\s*[:：]\s*(.+?)(?=\n\s*\**subjects?\**\s*[:：]|$)", text, re.IGNORECASE | re.DOTALL
    )
    subjects_match = re.search(r"subjects?\**\s*[:：]\s*(.+)", text, re.IGNORECASE)
    if caption_match:
        caption = " ".join(caption_match.group(1).strip().strip("*").split())
        subjects = _split_words(subjects_match.group(1).strip()) if subjects_match else []
        return Caption(caption, _unique(subjects, max_subjects))
    fence_free = re.sub(r"```\w*", "", text)
    return Caption(" ".join(fence_free.split()), [])


def sample_frames(frames: Sequence[np.ndarray], max_frames: int) -> list[np.ndarray]:
    """At most `max_frames` frames, evenly spread, first and last included."""
    if len(frames) <= max_frames:
        return list(frames)
    indices = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
    return [frames[i] for i in indices]


class VlmCaptioner:
    """Caption a clip from its frames with a Qwen2-VL / Qwen2.5-VL model; greedy decoding."""

    def __init__(
        self,
        model,
        image_processor,
        tokenizer,
        max_frames: int = 8,
        max_new_tokens: int = 256,
        max_subjects: int = 5,
        prompt: str = CAPTION_PROMPT,
    ) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames {max_frames} must be ≥ 1")
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.max_frames = max_frames
        self.max_new_tokens = max_new_tokens
        self.max_subjects = max_subjects
        self.prompt = prompt
        self.image_token = "<|image_pad|>"
        if tokenizer.convert_tokens_to_ids(self.image_token) != model.config.image_token_id:
            raise ValueError(
                f"the tokenizer maps {self.image_token} to {tokenizer.convert_tokens_to_ids(self.image_token)} but the "
                f"model expects image_token_id {model.config.image_token_id}; tokenizer and model come from different folders"
            )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_frames: int = 8,
        max_new_tokens: int = 256,
        max_subjects: int = 5,
        max_pixels: int | None = 448 * 448,
    ) -> VlmCaptioner:
        """`max_pixels` caps each frame's area before patching (448*448 ≈ 256 visual tokens per
        frame); None keeps the folder's own setting (Qwen's default allows ~16k tokens per frame)."""
        from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessorPil

        source, local_dir = resolve_model_source(path_or_id)
        config = read_model_config(source, local_dir)
        check_model_type(config, QWEN_VL_TYPES, "Qwen2-VL / Qwen2.5-VL model", source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype).to(device)
        return cls(
            model,
            Qwen2VLImageProcessorPil.from_pretrained(
                source, **({} if max_pixels is None else {"max_pixels": max_pixels})
            ),
            AutoTokenizer.from_pretrained(source),
            max_frames=max_frames,
            max_new_tokens=max_new_tokens,
            max_subjects=max_subjects,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def build_inputs(self, frames: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Token ids with one expanded image placeholder per frame, plus the patches."""
        images = [to_pil(frame) for frame in frames]
        vision = self.image_processor(images=images, return_tensors="pt")
        merge = int(self.image_processor.merge_size) ** 2
        placeholders = "".join(
            "<|vision_start|>" + self.image_token * (int(grid.prod()) // merge) + "<|vision_end|>"
            for grid in vision["image_grid_thw"]
        )
        question = self.prompt.format(max_subjects=self.max_subjects)
        text = (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n{placeholders}{question}<|im_end|>\n<|im_start|>assistant\n"
        )
        encoded = self.tokenizer(text, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        return {
            "input_ids": encoded["input_ids"].to(self.device),
            "attention_mask": encoded["attention_mask"].to(self.device),
            "pixel_values": vision["pixel_values"].to(self.device, dtype),  # (patches, C*T*P*P)
            "image_grid_thw": vision["image_grid_thw"].to(self.device),  # (frames, 3)
        }

    @torch.no_grad()
    def generate_text(self, frames: Sequence[np.ndarray]) -> str:
        frames = sample_frames(check_images(frames, "frames"), self.max_frames)
        inputs = self.build_inputs(frames)
        end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        output = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            eos_token_id=end_id,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else end_id,
        )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new_tokens, skip_special_tokens=True)

    def caption(self, frames: Sequence[np.ndarray]) -> Caption:
        """Caption and subject nouns for a clip given as (H, W, 3) uint8 frames in time order."""
        return parse_caption(self.generate_text(frames), max_subjects=self.max_subjects)
