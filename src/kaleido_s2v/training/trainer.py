"""The training loop: flow-matching fine-tuning of a Kaleido transformer, on one or many ranks.

One step, read top to bottom in `Trainer.train`:

    global batch (one bucket)  ->  this rank's slice  ->  accumulation micro-batches
    per sample: sigma, caption dropout and noise from a generator seeded by (seed, step, index)
    loss = MSE(model(x_sigma, sigma * 1000, text, clean references), eps - x0) / accumulation
    clip gradients -> AdamW -> LR schedule -> EMA -> log -> checkpoint

Randomness that changes a sample's loss depends only on (seed, step, the sample's place in the
global batch), so 1 process and N processes see the same samples with the same noise, and a
resumed run continues exactly. Checkpoints (`checkpointing`), the final weights (`export`) and the
metrics file (`metrics`) each live in their own module; the trainer calls them.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.models.checkpoints import load_transformer
from kaleido_s2v.models.encoders import LatentEncoder, pad_text_states
from kaleido_s2v.models.transformer import KaleidoTransformer3DModel
from kaleido_s2v.training import distributed
from kaleido_s2v.training.buckets import BucketBatchSampler, rank_slice
from kaleido_s2v.training.checkpointing import (
    ResumableState,
    resume_checkpoint,
    save_checkpoint,
    start_fresh,
)

# Re-exported for demo/recipe.py, which still imports it from here; its home is `checkpointing`.
from kaleido_s2v.training.config import TrainConfig, config_to_dict
from kaleido_s2v.training.datasets import (
    LatentCacheDataset,
    LatentExample,
    VideoExample,
    VideoSampleDataset,
    cache_fingerprint,
)
from kaleido_s2v.training.export import export_final_weights
from kaleido_s2v.training.flow_matching import (
    flow_matching_loss,
    noisy_latents,
    resolution_shift,
    sample_sigma,
    timesteps_from_sigma,
    tokens_per_frame,
)
from kaleido_s2v.training.lora import apply_lora
from kaleido_s2v.training.metrics import MetricsLog, ThroughputWindow
from kaleido_s2v.training.sampling import read_sample_cases, write_sample_videos


@dataclass
class LatentBatch:
    latents: torch.Tensor  # (B, C, F, H, W)
    reference_latents: list[torch.Tensor]  # S x (B, C, 1, h, w)
    text_states: torch.Tensor  # (B, L, text_dim)
    keys: list[str]


@dataclass
class TrainResult:
    """What a finished `train()` call did (losses are global means, one per step it ran)."""

    losses: list[float] = field(default_factory=list)
    start_step: int = 0
    final_step: int = 0
    export_dir: Path | None = None


def sample_seed(*values: int) -> int:
    """A 63-bit seed from integers (SeedSequence mixes them; no collisions between nearby tuples)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


def build_transformer(config: TrainConfig) -> nn.Module:
    """The transformer to train: from a checkpoint, from constructor arguments, or stage 1's export,
    always under `model.rope_policy`."""
    model_config = config.model
    torch.manual_seed(config.seed)  # every rank initialises identically
    checkpoint = model_config.init_from or model_config.pretrained
    if checkpoint is not None:
        if not Path(checkpoint).exists():
            raise FileNotFoundError(f"model checkpoint {checkpoint} does not exist")
        model = load_transformer(checkpoint, torch_dtype=torch.float32, rope_policy=model_config.rope_policy)
    else:
        arguments = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.config.items()}
        model = KaleidoTransformer3DModel(**arguments, rope_policy=model_config.rope_policy)
    return model.float()


def lr_lambda(step: int, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Linear warm-up over `warmup_steps`, then constant or cosine down to `min_lr_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Flow-matching trainer for `KaleidoTransformer3DModel` (full fine-tuning or LoRA, FSDP2).

    Args:
        config: the run's settings.
        dataset: examples with `bucket_keys`; `LatentExample`s need no encoder, `VideoExample`s
            are encoded every step by `encoder`. Defaults to the config's cache or sample folders.
        encoder: a `LatentEncoder` for `VideoExample`s and for sample videos.
    """

    def __init__(self, config: TrainConfig, dataset: Any = None, encoder: Any = None) -> None:
        self.config = config
        self.context = distributed.init_distributed()
        self.device = self.context.device
        self.encoder = encoder
        self.dataset = dataset if dataset is not None else self._default_dataset()
        self.global_batch_size = (
            config.micro_batch_size * self.context.data_world_size * config.gradient_accumulation_steps
        )
        self.sampler = BucketBatchSampler(self.dataset.bucket_keys, self.global_batch_size, config.seed)

        model = build_transformer(config)
        self.model_class_name = type(model).__name__
        self.patch_size = tuple(model.config.patch_size)
        if config.lora is not None:
            apply_lora(model, config.lora)
        else:
            model.requires_grad_(True)
        if config.model.gradient_checkpointing:
            distributed.apply_activation_checkpointing(model)
        model.to(self.device).train()
        bf16 = config.mixed_precision == "bf16"
        if self.context.world_size > 1:
            distributed.apply_fsdp(model, self.context.mesh, torch.bfloat16 if bf16 else None)
        self.autocast_dtype = torch.bfloat16 if bf16 and self.context.world_size == 1 else None
        self.model = model

        self.trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if not self.trainable:
            raise ValueError("the model has no trainable parameters")
        optim = config.optimizer
        self.optimizer = torch.optim.AdamW(
            list(self.trainable.values()),
            lr=optim.lr,
            betas=optim.betas,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_lambda(
                step, optim.warmup_steps, config.max_steps, optim.schedule, optim.min_lr_ratio
            ),
        )
        self.ema = (
            {name: p.detach().clone() for name, p in self.trainable.items()} if config.ema_decay else None
        )
        if config.sampling.every:
            if config.sampling.cases is None:
                raise ValueError("sampling.every is set but sampling.cases (a case file) is not")
            read_sample_cases(config.sampling.cases)  # fail now, not after hours of training
        self.step = 0
        self.output_dir = Path(config.output_dir)
        self.metrics = MetricsLog(self.output_dir, config.tensorboard)
        self.empty_text_states = getattr(self.dataset, "empty_text_states", None)

    # ------------------------------------------------------------------------------------------ data

    def _default_dataset(self):
        """The config's latent cache (`data.cache_dir`), else its sample folders, encoded every step."""
        config = self.config
        if config.data.cache_dir is not None:
            fingerprint = cache_fingerprint(
                config.data, config.encoders.path, config.encoders.max_text_length
            )
            return LatentCacheDataset(config.data.cache_dir, fingerprint)
        self._load_encoder("training from videos without a latent cache in data.cache_dir")
        return VideoSampleDataset(config.data)

    def _load_encoder(self, needed_for: str) -> None:
        """Load the encoder from `encoders.path` unless the constructor was given one."""
        if self.encoder is not None:
            return
        encoders = self.config.encoders
        if encoders.path is None:
            raise ValueError(
                f"{needed_for} needs encoders.path (a folder with vae/, text_encoder/, tokenizer/)"
            )
        self.encoder = LatentEncoder.from_folder(
            encoders.path, encoders.max_text_length, self.device, encoders.dtype
        )

    def _rank_micro_batches(self, start_sampler: BucketBatchSampler):
        """Index lists of this rank's micro-batches, in order, for the DataLoader."""
        config = self.config
        for _ in range(self.step, config.max_steps):
            mine = rank_slice(
                start_sampler.next_batch(), self.context.data_rank, self.context.data_world_size
            )
            for a in range(config.gradient_accumulation_steps):
                yield mine[a * config.micro_batch_size : (a + 1) * config.micro_batch_size]

    def _loader(self):
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=list(self._rank_micro_batches(copy.deepcopy(self.sampler))),
            collate_fn=list,
            num_workers=self.config.data.num_workers,
            persistent_workers=False,
        )
        return iter(loader)

    def _prepare(
        self, examples: list, step: int, first_position: int, drop_slot: int | None
    ) -> tuple[LatentBatch, torch.Tensor, torch.Tensor]:
        """Latents for a micro-batch, plus per-sample noise (B, C, F, H, W) and sigma (B,)."""
        config = self.config
        generators = [
            torch.Generator().manual_seed(sample_seed(config.seed, step, 0, first_position + i))
            for i in range(len(examples))
        ]
        drop_caption = [
            bool(torch.rand(1, generator=g).item() < config.data.caption_dropout) for g in generators
        ]
        if isinstance(examples[0], VideoExample):
            captions = ["" if drop else e.caption for e, drop in zip(examples, drop_caption, strict=True)]
            pixels = torch.stack([e.pixels for e in examples])
            latents = self.encoder.encode_video(pixels)
            references = torch.stack([e.references for e in examples], dim=1)  # (S, B, 3, H, W)
            reference_latents = [self.encoder.encode_images(r) for r in references]
            text = self.encoder.encode_text(captions)
        elif isinstance(examples[0], LatentExample):
            latents = torch.stack([e.latents for e in examples])
            count = len(examples[0].reference_latents)
            reference_latents = [
                torch.stack([e.reference_latents[s] for e in examples]) for s in range(count)
            ]
            if any(drop_caption) and self.empty_text_states is None:
                raise ValueError("caption dropout needs the dataset's empty_text_states")
            text = [
                self.empty_text_states if drop else e.text_states
                for e, drop in zip(examples, drop_caption, strict=True)
            ]
        else:
            raise TypeError(f"unsupported example type {type(examples[0]).__name__}")
        if drop_slot is not None and reference_latents:
            reference_latents.pop(drop_slot % len(reference_latents))
        text_states = pad_text_states(text, config.encoders.max_text_length)
        batch = LatentBatch(latents, reference_latents, text_states, [e.key for e in examples])
        shift = self._shift(latents)
        sigma = torch.cat([sample_sigma(1, shift, g) for g in generators])
        noise = torch.stack(
            [torch.randn(latents.shape[1:], generator=g, dtype=latents.dtype) for g in generators]
        )
        return batch, noise, sigma

    def _shift(self, latents: torch.Tensor) -> float:
        if self.config.shift == "auto":
            height, width = latents.shape[-2:]
            return resolution_shift(tokens_per_frame(height, width, self.patch_size[1:]))
        return float(self.config.shift)

    def shift_record(self) -> dict[str, Any]:
        """The shift used, per bucket resolution (docs/contracts.md#7-generation-defaults-live-with-the-model: a checkpoint records the value)."""
        values = {}
        for key in sorted(set(self.dataset.bucket_keys)):
            latents = torch.empty(0, 0, 0, key.height // 8, key.width // 8)  # the Wan VAE is 8x spatially
            values[f"{key.height}x{key.width}"] = self._shift(latents)
        return {"setting": self.config.shift, "values": values}

    def _tokens(self, batch: LatentBatch) -> int:
        p_t, p_h, p_w = self.patch_size
        _, _, frames, height, width = batch.latents.shape
        video = (frames // p_t) * (height // p_h) * (width // p_w)
        references = sum((r.shape[3] // p_h) * (r.shape[4] // p_w) for r in batch.reference_latents)
        return (video + references) * batch.latents.shape[0]

    # ------------------------------------------------------------------------------------------ step

    def _loss(self, batch: LatentBatch, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        device = self.device
        latents = batch.latents.to(device)
        x_sigma, target = noisy_latents(latents, noise.to(device), sigma.to(device))
        timestep = timesteps_from_sigma(sigma).to(device)
        references = [r.to(device) for r in batch.reference_latents]
        with torch.autocast(
            device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None
        ):
            prediction = self.model(
                hidden_states=x_sigma,
                timestep=timestep,
                encoder_hidden_states=batch.text_states.to(device),
                reference_latents=references or None,
                return_dict=False,
            )[0]
        return flow_matching_loss(prediction, target)

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up as diffusers' EMAModel: early averages do not stay stuck at the initial weights
        # (with 0.998 and no warm-up, 300 steps left 55% of the initialisation in the average).
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for name, parameter in self.trainable.items():
            self.ema[name].lerp_(parameter.detach(), 1 - decay)

    def train(
        self,
        resume: bool = False,
        stop_at_step: int | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> TrainResult:
        """Run until `max_steps`; with `resume`, continue from the newest complete checkpoint.

        An output folder holding an earlier run (`checkpointing.earlier_run_files`) is refused unless
        `resume` continues it or `overwrite` first deletes that run's `checkpoints/` and `metrics.jsonl`
        (and nothing else). `stop_at_step` ends the run early with a checkpoint (a job's time limit); a later
        `train(resume=True)` continues exactly where it stopped. Only a full run exports weights.
        """
        config, context = self.config, self.context
        if resume and overwrite:
            raise ValueError(
                "--resume continues the earlier run and --overwrite deletes it: pass one of them"
            )
        if resume:
            self.step = resume_checkpoint(self.output_dir, self._resumable_state(), context)
        else:
            start_fresh(self.output_dir, overwrite, context)
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "config.json", config_to_dict(config))
            self.metrics.trim(self.step)
        result = TrainResult(start_step=self.step)
        loader = self._loader()
        per_rank = config.micro_batch_size * config.gradient_accumulation_steps
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            desc="train",
            disable=not (progress and context.is_main),
        )
        window = ThroughputWindow()
        last_step = config.max_steps if stop_at_step is None else min(stop_at_step, config.max_steps)
        while self.step < last_step:
            step = self.step
            step_start = time.perf_counter()
            self.sampler.next_batch()  # the loader reads ahead; this copy tracks the resume position
            batch_rng = torch.Generator().manual_seed(sample_seed(config.seed, step, 1))
            drop_slot = None
            if torch.rand(1, generator=batch_rng).item() < config.data.reference_dropout:
                drop_slot = int(torch.randint(0, 1 << 16, (1,), generator=batch_rng).item())
            loss_sum, data_time = 0.0, 0.0
            for micro in range(config.gradient_accumulation_steps):
                data_start = time.perf_counter()
                examples = next(loader)
                first = context.data_rank * per_rank + micro * config.micro_batch_size
                batch, noise, sigma = self._prepare(examples, step, first, drop_slot)
                data_time += time.perf_counter() - data_start
                loss = self._loss(batch, noise, sigma) / config.gradient_accumulation_steps
                loss.backward()
                loss_sum += loss.item()
                window.tokens += self._tokens(batch)
            grad_norm = self._clip_gradients()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self._update_ema()
            self.step += 1
            loss_value = distributed.all_reduce_mean(loss_sum, self.device)
            result.losses.append(loss_value)
            window.data_seconds += data_time
            window.total_seconds += time.perf_counter() - step_start
            window.samples += self.global_batch_size
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if context.is_main and (self.step % config.log_every == 0 or self.step == config.max_steps):
                self._log(loss_value, grad_norm, window)
                window = ThroughputWindow()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.save_checkpoint()
            if config.sampling.every and self.step % config.sampling.every == 0:
                self._write_samples()
        bar.close()
        result.final_step = self.step
        if self.step < config.max_steps:
            if not (config.checkpoint_every and self.step % config.checkpoint_every == 0):
                self.save_checkpoint()
            return result
        result.export_dir = self.export()
        return result

    def _write_samples(self) -> None:
        self._load_encoder("sampling.every (the VAE and text encoder to sample with)")
        write_sample_videos(self.model, self.encoder, self.config, self.step, write=self.context.is_main)

    def _clip_gradients(self) -> float:
        parameters = list(self.trainable.values())
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.optimizer.max_grad_norm)
        return float(distributed.full_tensor(norm).item())

    def _log(self, loss: float, grad_norm: float, window: ThroughputWindow) -> None:
        record = {
            "step": self.step,
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            **window.rates(self.context.world_size),
            "epoch": self.sampler.epoch,
        }
        self.metrics.write(record)

    # ------------------------------------------------------------------------------------------ outputs

    def _resumable_state(self) -> ResumableState:
        return ResumableState(
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            sampler=self.sampler,
            extra_tensors={"ema": self.ema} if self.ema is not None else {},
        )

    def save_checkpoint(self) -> Path:
        """Write a complete checkpoint of the current step (see `checkpointing.save_checkpoint`)."""
        return save_checkpoint(
            self.output_dir,
            self.step,
            self._resumable_state(),
            self.shift_record(),
            self.config.keep_checkpoints,
            self.context,
        )

    def export(self) -> Path:
        """Write the trained weights (EMA when enabled) as a diffusers folder, or LoRA weights.

        `<output_dir>/final/transformer/` (config.json + safetensors; stage 2's `init_from`), or
        `<output_dir>/final/lora/pytorch_lora_weights.safetensors` for LoRA runs.
        """
        return export_final_weights(
            self.model,
            self.ema,
            self.output_dir,
            class_name=self.model_class_name,
            lora=self.config.lora is not None,
            training_state={"step": self.step, "shift": self.shift_record()},
            is_main=self.context.is_main,
        )
