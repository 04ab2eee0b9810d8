"""The training loop: flow-matching fine-tuning of a Kaleido transformer, on one or many ranks.

One step, read top to bottom in `Trainer.train`:

    global batch (one bucket)  ->  this rank's slice  ->  accumulation micro-batches
    per sample: sigma, caption dropout and noise from a generator seeded by (seed, step, index)
    loss = MSE(model(x_sigma, sigma * 1000, text, clean references), eps - x0) / accumulation
    clip gradients -> AdamW -> LR schedule -> EMA -> log -> checkpoint

Randomness that changes a sample's loss depends only on (seed, step, the sample's place in the
global batch), so 1 process and N processes see the same samples with the same noise, and a
resumed run continues exactly.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.training import distributed
from kaleido_s2v.training.buckets import BucketBatchSampler, rank_slice
from kaleido_s2v.training.checkpoint_integrity import (
    describe_files,
    digest_problems,
    rank_files,
    size_problems,
    write_complete_marker,
)
from kaleido_s2v.training.config import TrainConfig, config_to_dict
from kaleido_s2v.training.datasets import LatentExample, VideoExample
from kaleido_s2v.training.encoders import pad_text_states
from kaleido_s2v.training.flow_matching import (
    flow_matching_loss,
    noisy_latents,
    resolution_shift,
    sample_sigma,
    timesteps_from_sigma,
    tokens_per_frame,
)

CHECKPOINT_PREFIX = "step-"
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"


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
    """The transformer to train: from a checkpoint, from constructor arguments, or stage 1's export."""
    from kaleido_s2v.models.transformer import KaleidoTransformer3DModel

    model_config = config.model
    torch.manual_seed(config.seed)  # every rank initialises identically
    checkpoint = model_config.init_from or model_config.pretrained
    if checkpoint is not None:
        from kaleido_s2v.models.checkpoints import load_transformer

        if not Path(checkpoint).exists():
            raise FileNotFoundError(f"model checkpoint {checkpoint} does not exist")
        model = load_transformer(checkpoint, torch_dtype=torch.float32, rope_policy=model_config.rope_policy)
    else:
        arguments = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.config.items()}
        arguments.setdefault("rope_policy", model_config.rope_policy)
        model = KaleidoTransformer3DModel(**arguments)
    return model.float()


def lr_lambda(step: int, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Linear warm-up over `warmup_steps`, then constant or cosine down to `min_lr_ratio`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def earlier_run_files(output_dir: str | os.PathLike) -> list[Path]:
    """What an earlier run left in `output_dir` that a new run would mix with: `checkpoints/` (when it
    holds anything) and `metrics.jsonl`."""
    folder = Path(output_dir)
    checkpoints, metrics = folder / "checkpoints", folder / "metrics.jsonl"
    found = [checkpoints] if checkpoints.is_dir() and any(checkpoints.iterdir()) else []
    return found + ([metrics] if metrics.exists() else [])


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Every `checkpoints/step-N` folder, newest first (temporary `.tmp` folders never count)."""
    folder = Path(output_dir) / "checkpoints"
    steps = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.suffix != ".tmp"]
    return sorted(steps, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), reverse=True)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose completeness marker lists files that are all there, at their size."""
    return next((p for p in checkpoint_folders(output_dir) if not size_problems(p)), None)


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
            from kaleido_s2v.training.lora import apply_lora

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
            from kaleido_s2v.training.sampling import read_sample_cases

            if config.sampling.cases is None:
                raise ValueError("sampling.every is set but sampling.cases (a case file) is not")
            read_sample_cases(config.sampling.cases)  # fail now, not after hours of training
        self.step = 0
        self.output_dir = Path(config.output_dir)
        self.empty_text_states = getattr(self.dataset, "empty_text_states", None)

    # ------------------------------------------------------------------------------------------ data

    def _default_dataset(self):
        from kaleido_s2v.training.datasets import (
            LatentCacheDataset,
            VideoSampleDataset,
            cache_fingerprint,
        )

        config = self.config
        if config.data.cache_dir is not None:
            fingerprint = cache_fingerprint(
                config.data, config.encoders.path, config.encoders.max_text_length
            )
            return LatentCacheDataset(config.data.cache_dir, fingerprint)
        if self.encoder is None:
            if config.encoders.path is None:
                raise ValueError(
                    "training from videos needs encoders.path (a folder with vae/, text_encoder/, "
                    "tokenizer/), or a latent cache in data.cache_dir"
                )
            from kaleido_s2v.training.encoders import LatentEncoder

            self.encoder = LatentEncoder.from_folder(
                config.encoders.path,
                config.encoders.max_text_length,
                self.context.device,
                config.encoders.dtype,
            )
        return VideoSampleDataset(config.data)

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
        import copy

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
        """The shift used, per bucket resolution (SPEC §10.1: a checkpoint records the value)."""
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

        An output folder holding an earlier run (`earlier_run_files`) is refused unless `resume`
        continues it or `overwrite` first deletes that run's `checkpoints/` and `metrics.jsonl` (and
        nothing else). `stop_at_step` ends the run early with a checkpoint (a job's time limit); a later
        `train(resume=True)` continues exactly where it stopped. Only a full run exports weights.
        """
        from tqdm.auto import tqdm

        config, context = self.config, self.context
        if resume and overwrite:
            raise ValueError(
                "--resume continues the earlier run and --overwrite deletes it: pass one of them"
            )
        if resume:
            self._resume()
        else:
            self._start_fresh(overwrite)
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "config.json", config_to_dict(config))
            self._trim_metrics(self.step)
        result = TrainResult(start_step=self.step)
        loader = self._loader()
        per_rank = config.micro_batch_size * config.gradient_accumulation_steps
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            desc="train",
            disable=not (progress and context.is_main),
        )
        window = {"data": 0.0, "total": 0.0, "samples": 0, "tokens": 0}
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
                window["tokens"] += self._tokens(batch)
            grad_norm = self._clip_gradients()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self._update_ema()
            self.step += 1
            loss_value = distributed.all_reduce_mean(loss_sum, self.device)
            result.losses.append(loss_value)
            window["data"] += data_time
            window["total"] += time.perf_counter() - step_start
            window["samples"] += self.global_batch_size
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if context.is_main and (self.step % config.log_every == 0 or self.step == config.max_steps):
                self._log(loss_value, grad_norm, window)
                window = {"data": 0.0, "total": 0.0, "samples": 0, "tokens": 0}
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
        from kaleido_s2v.training.sampling import write_sample_videos

        if self.encoder is None:
            if self.config.encoders.path is None:
                raise ValueError(
                    "sampling.every needs encoders.path (the VAE and text encoder to sample with)"
                )
            from kaleido_s2v.training.encoders import LatentEncoder

            encoders = self.config.encoders
            self.encoder = LatentEncoder.from_folder(
                encoders.path, encoders.max_text_length, self.device, encoders.dtype
            )
        write_sample_videos(self.model, self.encoder, self.config, self.step, write=self.context.is_main)

    def _clip_gradients(self) -> float:
        parameters = list(self.trainable.values())
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.optimizer.max_grad_norm)
        return float(distributed.full_tensor(norm).item())

    def _log(self, loss: float, grad_norm: float, window: dict[str, float]) -> None:
        total = max(window["total"], 1e-9)
        record = {
            "step": self.step,
            "loss": loss,
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm,
            "samples_per_s": window["samples"] / total,
            "tokens_per_s": window["tokens"] * self.context.world_size / total,
            "data_time_share": window["data"] / total,
            "epoch": self.sampler.epoch,
        }
        with open(self.output_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.tensorboard:
            self._tensorboard().add_scalars(
                "train", {k: v for k, v in record.items() if k != "step"}, self.step
            )

    def _tensorboard(self):
        if not hasattr(self, "_writer"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "tensorboard: true needs the tensorboard package (pip install tensorboard)"
                ) from error
            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        return self._writer

    def _trim_metrics(self, step: int) -> None:
        """Drop metrics past `step` (written before an interruption that a resume repeats)."""
        path = self.output_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        with atomic_path(path) as temporary:
            temporary.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------------------------------ checkpoints

    def _extra_tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"ema": self.ema} if self.ema is not None else {}

    def save_checkpoint(self) -> Path:
        """Write a complete checkpoint: shards to `step-N.tmp`, then rename to `step-N`."""
        folder = self.output_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{self.step:08d}"
        temporary = folder.with_suffix(".tmp")
        if self.context.is_main and temporary.exists():
            shutil.rmtree(temporary)
        distributed.barrier()
        distributed.save_distributed_checkpoint(temporary, self.model, self.optimizer, self._extra_tensors())
        save_file(
            {"torch": torch.get_rng_state()}, str(temporary / f"rng-rank{self.context.rank}.safetensors")
        )
        distributed.barrier()
        if self.context.is_main:
            state = {
                "step": self.step,
                "sampler": self.sampler.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "world_size": self.context.world_size,
                "shift": self.shift_record(),
            }
            write_json_atomic(temporary / "trainer_state.json", state)
        # Each rank describes the files it wrote; rank 0 lists them all in the marker, written last.
        written = distributed.gather_to_all(describe_files(rank_files(temporary, self.context.rank)))
        if self.context.is_main:
            write_complete_marker(
                temporary, {name: record for part in written for name, record in part.items()}
            )
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(temporary, folder)
            self._prune_checkpoints()
        distributed.barrier()
        return folder

    def _prune_checkpoints(self) -> None:
        """Keep the newest `keep_checkpoints` up to this step. Newer step numbers (left by a run this one
        resumed before, e.g. a damaged checkpoint it skipped) stay until this run replaces them."""
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        reached = [
            p
            for p in checkpoint_folders(self.output_dir)
            if int(p.name[len(CHECKPOINT_PREFIX) :]) <= self.step
        ]
        for stale in reached[keep:]:
            shutil.rmtree(stale)

    def _start_fresh(self, overwrite: bool) -> None:
        """Refuse to start at step 0 over an earlier run, or (`overwrite`) delete that run's state."""
        earlier = earlier_run_files(self.output_dir)
        if earlier and not overwrite:
            raise FileExistsError(
                f"{self.output_dir} holds an earlier training run ({', '.join(p.name for p in earlier)}); "
                "pass --resume to continue it, or --overwrite to delete its checkpoints/ and metrics.jsonl "
                "and start again at step 0"
            )
        distributed.barrier()  # every rank has looked before anything is deleted
        if earlier and self.context.is_main:
            for path in earlier:
                print(f"--overwrite: removing {path}", flush=True)
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        distributed.barrier()

    def _intact_checkpoint(self) -> Path:
        """The newest checkpoint whose files all have their recorded size and sha256 (each rank checks
        a share of the digests); a warning names every newer one skipped, and why."""
        import warnings

        skipped = []
        for folder in checkpoint_folders(self.output_dir):
            problems = size_problems(folder)
            if not problems:
                mine = digest_problems(folder, self.context.rank, self.context.world_size)
                problems = [p for part in distributed.gather_to_all(mine) for p in part]
            if not problems:
                if skipped and self.context.is_main:
                    warnings.warn(
                        f"--resume: skipped damaged checkpoint(s) {'; '.join(skipped)}; resuming from {folder}",
                        stacklevel=3,
                    )
                return folder
            skipped.append(f"{folder.name} ({', '.join(problems[:3])})")
        where = self.output_dir / "checkpoints"
        if skipped:
            raise FileNotFoundError(
                f"--resume: no intact checkpoint under {where} (damaged: {'; '.join(skipped)}); "
                "start again with --overwrite"
            )
        raise FileNotFoundError(f"--resume: no checkpoint under {where}; start without --resume")

    def _resume(self) -> None:
        folder = self._intact_checkpoint()
        state = json.loads((folder / "trainer_state.json").read_text())
        if state["world_size"] != self.context.world_size and self.context.is_main:
            import warnings

            warnings.warn(
                f"resuming a {state['world_size']}-process checkpoint on {self.context.world_size} "
                "processes: weights continue, but the run will not match an uninterrupted one exactly",
                stacklevel=2,
            )
        distributed.load_distributed_checkpoint(folder, self.model, self.optimizer, self._extra_tensors())
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        rng_path = folder / f"rng-rank{self.context.rank}.safetensors"
        if rng_path.is_file():
            torch.set_rng_state(load_file(str(rng_path))["torch"])

    # ------------------------------------------------------------------------------------------ export

    def export(self) -> Path:
        """Write the trained weights (EMA when enabled) as a diffusers folder, or LoRA weights.

        `<output_dir>/final/transformer/` (config.json + safetensors; stage 2's `init_from`), or
        `<output_dir>/final/lora/pytorch_lora_weights.safetensors` for LoRA runs.
        """
        state = distributed.full_state_dict(self.model)
        if self.ema is not None:
            for name, tensor in self.ema.items():
                state[name] = distributed.full_tensor(tensor).detach().cpu()
        final = self.output_dir / "final"
        if self.config.lora is not None:
            from kaleido_s2v.training.lora import save_lora

            if self.context.is_main:
                save_lora(self.model, state, final / "lora")
            distributed.barrier()
            return final / "lora"
        if self.context.is_main:
            folder = final / "transformer"
            folder.mkdir(parents=True, exist_ok=True)
            config = {k: v for k, v in dict(self.model.config).items() if not k.startswith("_")}
            config["_class_name"] = self.model_class_name
            write_json_atomic(folder / "config.json", config)
            with atomic_path(folder / TRANSFORMER_WEIGHTS) as temporary:
                tensors = {k: v.contiguous() for k, v in state.items()}
                save_file(tensors, str(temporary), metadata={"format": "pt"})
            write_json_atomic(
                final / "training_state.json", {"step": self.step, "shift": self.shift_record()}
            )
        distributed.barrier()
        return final / "transformer"
