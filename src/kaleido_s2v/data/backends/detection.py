"""Open-vocabulary detection with Grounding DINO (transformers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kaleido_s2v.data.backends._common import (
    check_image,
    check_model_type,
    inputs_to,
    read_model_config,
    resolve_model_source,
    to_pil,
)


@dataclass(frozen=True)
class Detection:
    """One detected subject: its label (one of the requested labels), its box and its score."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the input image
    score: float


def labels_to_prompt(labels: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's text prompt `"cat. red car."` and each label's character span in it."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for label in labels:
        phrase = " ".join(label.lower().split()).rstrip(".")
        if not phrase:
            raise ValueError(f"label {label!r} is empty; pass subject words such as 'cat' or 'red car'")
        spans.append((position, position + len(phrase)))
        parts.append(phrase + ".")
        position += len(phrase) + 2  # the phrase, its '.', and the joining space
    return " ".join(parts), spans


def non_maximum_suppression(detections: list[Detection], iou_threshold: float) -> list[Detection]:
    """Keep the best-scoring box of each group of same-label boxes overlapping by more than `iou_threshold`."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.score):
        if all(
            other.label != detection.label or box_iou(other.box, detection.box) <= iou_threshold
            for other in kept
        ):
            kept.append(detection)
    return kept


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class GroundingDinoDetector:
    """Boxes for the given subject labels in one image.

    Each query's score is its highest token probability over the whole prompt (as in Grounding
    DINO's own post-processing) and must exceed `box_threshold`; its label is the requested label
    whose tokens score highest, and that label's best token must exceed `text_threshold`.
    Grounding DINO often returns several queries for one object; `nms_iou` (off by default, as in
    transformers' post-processing) keeps the best of same-label boxes overlapping more than it.
    """

    def __init__(
        self,
        model,
        processor,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float | None = None,
    ) -> None:
        for name, value in (
            ("box_threshold", box_threshold),
            ("text_threshold", text_threshold),
            ("nms_iou", nms_iou),
        ):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value} is outside [0, 1]")
        self.nms_iou = nms_iou
        self.model = model.eval()
        self.processor = processor
        self.box_threshold = float(box_threshold)
        self.text_threshold = float(text_threshold)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float | None = None,
    ) -> GroundingDinoDetector:
        """Load a Grounding DINO folder (config.json, weights, processor and bert tokenizer files)."""
        try:
            from transformers import AutoProcessor, GroundingDinoForObjectDetection
        except ImportError as error:  # pragma: no cover - transformers is a core dependency
            raise ImportError("Grounding DINO needs transformers>=4.40") from error
        source, local_dir = resolve_model_source(path_or_id)
        config = read_model_config(source, local_dir)
        check_model_type(config, ["grounding-dino", "mm-grounding-dino"], "Grounding DINO detector", source)
        model = GroundingDinoForObjectDetection.from_pretrained(source, dtype=dtype).to(device)
        processor = AutoProcessor.from_pretrained(source)
        return cls(
            model, processor, box_threshold=box_threshold, text_threshold=text_threshold, nms_iou=nms_iou
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[Detection]:
        """Detections sorted by descending score; boxes clipped to the image."""
        image = check_image(image)
        if isinstance(labels, str):
            raise TypeError(f"labels must be a list of strings, got the string {labels!r}")
        if len(labels) == 0:
            return []
        height, width = image.shape[:2]
        prompt, spans = labels_to_prompt(labels)
        batch = self.processor(images=to_pil(image), text=prompt, return_tensors="pt")
        n_tokens, limit = batch["input_ids"].shape[1], int(self.model.config.max_text_len)
        if n_tokens > limit:
            raise ValueError(
                f"the prompt {prompt!r} is {n_tokens} tokens but the model reads at most {limit}; "
                "pass fewer or shorter labels (or detect them in several calls)"
            )
        dtype = next(self.model.parameters()).dtype
        outputs = self.model(**inputs_to(batch, self.device, dtype))

        token_positions = self._label_token_positions(prompt, spans, labels, batch["input_ids"].shape[1])
        probs = outputs.logits[0].float().sigmoid()  # (Q, T) per query, per text token
        scores = probs[:, : batch["input_ids"].shape[1]].max(dim=-1).values  # (Q,)
        # (L, Q): each label's best token probability for each query.
        per_label = torch.stack([probs[:, positions].max(dim=-1).values for positions in token_positions])
        label_scores, label_index = per_label.max(dim=0)  # (Q,), (Q,)

        boxes = outputs.pred_boxes[0].float()  # (Q, 4) cx, cy, w, h relative to the image
        cx, cy, bw, bh = boxes.unbind(-1)
        corners = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
        corners = corners * torch.tensor([width, height, width, height], dtype=corners.dtype)
        corners[:, 0::2] = corners[:, 0::2].clamp(0, width)
        corners[:, 1::2] = corners[:, 1::2].clamp(0, height)

        keep = (scores > self.box_threshold) & (label_scores > self.text_threshold)
        # A box wholly outside the image clips to zero area; it cannot prompt a segmenter.
        keep &= (corners[:, 2] > corners[:, 0]) & (corners[:, 3] > corners[:, 1])
        detections = [
            Detection(
                label=str(labels[int(label_index[q])]),
                box=tuple(float(v) for v in corners[q].tolist()),
                score=float(scores[q]),
            )
            for q in torch.nonzero(keep).flatten().tolist()
        ]
        if self.nms_iou is not None:
            detections = non_maximum_suppression(detections, self.nms_iou)
        return sorted(detections, key=lambda d: -d.score)

    def _label_token_positions(
        self, prompt: str, spans: list[tuple[int, int]], labels: Sequence[str], sequence_length: int
    ) -> list[list[int]]:
        tokenizer = self.processor.tokenizer
        encoded = tokenizer(prompt, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"][:sequence_length]
        positions: list[list[int]] = []
        for (start, end), label in zip(spans, labels, strict=True):
            inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
            if not inside:
                raise ValueError(
                    f"label {label!r} falls outside the text the model reads ({sequence_length} tokens); "
                    "pass fewer or shorter labels"
                )
            positions.append(inside)
        return positions
