"""Training configuration: frozen dataclasses read from YAML by the rules of `kaleido_s2v.common.config_files`.

A config file mirrors `TrainConfig`: top-level scalars plus the sections `model`, `data`,
`optimizer`, `lora` and `sampling`. Any key that is not a field is an error naming the key and
the keys that are allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from kaleido_s2v.common.config_files import SettingError, build_dataclass, load_dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Which transformer to train and how it runs."""

    # A checkpoint `kaleido_s2v.models.checkpoints.load_transformer` reads (diffusers, Wan
    # original or Kaleido SAT layout). Exactly one of `pretrained` and `config` is set.
    pretrained: str | None = None
    # Constructor arguments of a freshly initialised transformer (tiny test and demo models), all but
    # `rope_policy`, which is set by the field below only.
    config: dict[str, Any] | None = None
    # Stage 2: start from another run's exported weights (a diffusers folder); fresh optimizer.
    init_from: str | None = None
    # The R-RoPE policy of the transformer, whether built from `config` or loaded from a checkpoint.
    rope_policy: Literal["kaleido", "video", "none"] = "kaleido"
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class EncodersConfig:
    """The VAE, text encoder and tokenizer used to encode clips (cache or on the fly).

    `path` is a pipeline folder holding `vae/`, `text_encoder/` and `tokenizer/` sub-folders.
    """

    path: str | None = None
    max_text_length: int = 512
    # Run the encoders in this dtype ("float32" on CPU; "bfloat16" on GPUs).
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass(frozen=True)
class DataConfig:
    # One or more sample folders or WebDataset shard files/folders (docs/contracts.md#2-training-samples).
    paths: tuple[str, ...] = ()
    # Candidate (height, width) buckets; each clip goes to the one closest in aspect ratio.
    resolutions: tuple[tuple[int, int], ...] = ((480, 832),)
    num_frames: int = 81
    fps: float = 16.0
    max_references: int = 3
    # Pad clips shorter than `num_frames` with their last frame instead of rejecting them.
    pad_short_clips: bool = False
    # Folder written by `kaleido-s2v train cache`; when set, training reads latents from it.
    cache_dir: str | None = None
    num_workers: int = 0
    caption_dropout: float = 0.1
    # Probability that a batch loses one reference slot (the same slot for every sample).
    reference_dropout: float = 0.0


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW and its learning-rate schedule (defaults: the released SFT recipe, docs/model.md#4-flow-matching-training)."""

    lr: float = 5e-6
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    max_grad_norm: float = 0.1
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"
    # Cosine decays from lr to lr * min_lr_ratio at max_steps.
    min_lr_ratio: float = 0.0


@dataclass(frozen=True)
class LoraSettings:
    """Train low-rank adapters (peft) instead of every weight."""

    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class SamplingConfig:
    """Periodic sample videos with fixed prompts and references (needs `encoders.path`)."""

    every: int = 0
    # A case file (docs/contracts.md#1-case-files) with the fixed prompts and references.
    cases: str | None = None
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 1000
    # Global batch = micro_batch_size * world size * gradient_accumulation_steps.
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "bf16"] = "bf16"
    # "auto" applies docs/model.md#4-flow-matching-training's resolution-dependent rule; a number fixes the shift.
    shift: Union[float, Literal["auto"]] = "auto"
    # EMA of the trainable weights; the decay warms up as min(ema_decay, (1 + step) / (10 + step)).
    ema_decay: float | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    tensorboard: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    encoders: EncodersConfig = field(default_factory=EncodersConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lora: LoraSettings | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        _check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        _check(self.micro_batch_size >= 1, f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        _check(
            self.gradient_accumulation_steps >= 1,
            f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}",
        )
        _check(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        _check(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            f"ema_decay must be in (0, 1) or null, got {self.ema_decay}",
        )
        model = self.model
        _check(
            (model.pretrained is None) != (model.config is None) or model.init_from is not None,
            "set exactly one of model.pretrained (a checkpoint path) and model.config (constructor "
            f"arguments), or model.init_from; got pretrained={model.pretrained!r}, config={model.config!r}",
        )
        if "rope_policy" in (model.config or {}):
            raise SettingError(
                "model.config.rope_policy",
                f"model.config.rope_policy ({model.config['rope_policy']!r}) and model.rope_policy "
                f"({model.rope_policy!r}) set the same thing; the R-RoPE policy is set by model.rope_policy "
                "only: move the value there and delete model.config.rope_policy",
            )
        for name in ("caption_dropout", "reference_dropout"):
            value = getattr(self.data, name)
            _check(0.0 <= value <= 1.0, f"data.{name} must be in [0, 1], got {value}")
        _check(self.data.num_frames % 4 == 1, f"data.num_frames must be 4k+1, got {self.data.num_frames}")
        for height, width in self.data.resolutions:
            _check(
                height % 16 == 0 and width % 16 == 0,
                f"data.resolutions entry {height}x{width} is not a multiple of 16; use "
                f"{height // 16 * 16}x{width // 16 * 16}",
            )
        _check(
            isinstance(self.shift, str) or self.shift > 0, f"shift must be 'auto' or > 0, got {self.shift}"
        )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML file into a validated `TrainConfig` (the rules of `kaleido_s2v.common.config_files`).

    Relative paths inside the file stay relative to the current directory, as on the command line.
    `overrides` (nested dicts) replace values from the file, e.g. in tests: sections merge key by
    key, `model.config` (one set of constructor arguments) is replaced whole.
    """
    return load_dataclass(TrainConfig, path, overrides)


def config_from_dict(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a mapping by the config-file rules (unknown keys, types).

    `prefix` is the dotted path of the section with a trailing dot (`"optimizer."`), "" at the top.
    """
    return build_dataclass(cls, raw, prefix.rstrip("."))


def config_to_dict(config: Any) -> dict[str, Any]:
    """The inverse of `config_from_dict`, with tuples as lists (YAML/JSON friendly)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(config)
