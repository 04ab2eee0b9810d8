"""Training checkpoints in `<output_dir>/checkpoints/step-N/`: save, prune, find and resume.

- save: every rank writes its DCP shards and RNG state into `step-N.tmp/`, rank 0 adds
  `trainer_state.json` and, last, the completeness marker (`checkpoint_integrity`); then the folder is
  renamed to `step-N/` and older ones beyond `keep_checkpoints` are pruned.
- resume: the newest intact checkpoint (sizes, then digests) is loaded in place through the safe
  reader (`checkpoint_reading`); a warning names every newer one skipped, and why.
- a fresh start refuses an output folder holding an earlier run (`earlier_run_files`) unless told
  to overwrite it, and then deletes only that run's checkpoints and metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.training import distributed
from kaleido_s2v.training.buckets import BucketBatchSampler
from kaleido_s2v.training.checkpoint_integrity import (
    TRAINER_STATE,
    describe_files,
    digest_problems,
    rank_files,
    rng_state_file,
    size_problems,
    write_complete_marker,
)
from kaleido_s2v.training.distributed import DistributedContext
from kaleido_s2v.training.metrics import METRICS_FILE

CHECKPOINTS_FOLDER = "checkpoints"
CHECKPOINT_PREFIX = "step-"


@dataclass(frozen=True)
class ResumableState:
    """The live objects a checkpoint saves and a resume restores in place."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: BucketBatchSampler
    # Further tensors saved beside model and optimizer, e.g. {"ema": {name: tensor}}.
    extra_tensors: dict[str, dict[str, torch.Tensor]]


def checkpoint_step(folder: Path) -> int:
    """The step a `step-N` folder was saved at."""
    return int(folder.name[len(CHECKPOINT_PREFIX) :])


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Every `checkpoints/step-N` folder, newest first (temporary `.tmp` folders never count)."""
    folder = Path(output_dir) / CHECKPOINTS_FOLDER
    steps = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.suffix != ".tmp"]
    return sorted(steps, key=checkpoint_step, reverse=True)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint whose completeness marker lists files that are all there, at their size."""
    return next((p for p in checkpoint_folders(output_dir) if not size_problems(p)), None)


def earlier_run_files(output_dir: str | os.PathLike) -> list[Path]:
    """What an earlier run left in `output_dir` that a new run would mix with: `checkpoints/` (when it
    holds anything) and `metrics.jsonl`."""
    folder = Path(output_dir)
    checkpoints, metrics = folder / CHECKPOINTS_FOLDER, folder / METRICS_FILE
    found = [checkpoints] if checkpoints.is_dir() and any(checkpoints.iterdir()) else []
    return found + ([metrics] if metrics.exists() else [])


def start_fresh(output_dir: Path, overwrite: bool, context: DistributedContext) -> None:
    """Refuse to start at step 0 over an earlier run, or (`overwrite`) delete that run's state."""
    earlier = earlier_run_files(output_dir)
    if earlier and not overwrite:
        raise FileExistsError(
            f"{output_dir} holds an earlier training run ({', '.join(p.name for p in earlier)}); "
            f"pass --resume to continue it, or --overwrite to delete its {CHECKPOINTS_FOLDER}/ and "
            f"{METRICS_FILE} and start again at step 0"
        )
    distributed.barrier()  # every rank has looked before anything is deleted
    if earlier and context.is_main:
        for path in earlier:
            print(f"--overwrite: removing {path}", flush=True)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    distributed.barrier()


def save_checkpoint(
    output_dir: Path,
    step: int,
    state: ResumableState,
    shift_record: dict[str, Any],
    keep: int,
    context: DistributedContext,
) -> Path:
    """Write a complete checkpoint of `step` (every rank calls it): shards to `step-N.tmp`, then
    rename to `step-N` and keep the newest `keep` (`prune_checkpoints`). `shift_record` is stored
    with the trainer state (the shift used, docs/contracts.md#7-generation-defaults-live-with-the-model)."""
    folder = output_dir / CHECKPOINTS_FOLDER / f"{CHECKPOINT_PREFIX}{step:08d}"
    temporary = folder.with_suffix(".tmp")
    if context.is_main and temporary.exists():
        shutil.rmtree(temporary)
    distributed.barrier()
    distributed.save_distributed_checkpoint(temporary, state.model, state.optimizer, state.extra_tensors)
    save_file({"torch": torch.get_rng_state()}, str(rng_state_file(temporary, context.rank)))
    distributed.barrier()
    if context.is_main:
        trainer_state = {
            "step": step,
            "sampler": state.sampler.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "world_size": context.world_size,
            "shift": shift_record,
        }
        write_json_atomic(temporary / TRAINER_STATE, trainer_state)
    # Each rank describes the files it wrote; rank 0 lists them all in the marker, written last.
    written = distributed.gather_to_all(describe_files(rank_files(temporary, context.rank)))
    if context.is_main:
        write_complete_marker(temporary, {name: record for part in written for name, record in part.items()})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(temporary, folder)
        prune_checkpoints(output_dir, step, keep)
    distributed.barrier()
    return folder


def prune_checkpoints(output_dir: Path, step: int, keep: int) -> None:
    """Keep the newest `keep` checkpoints up to `step` (`keep` <= 0: every one). Newer step numbers
    (left by a run this one resumed before, e.g. a damaged checkpoint it skipped) stay until this run
    replaces them."""
    if keep <= 0:
        return
    reached = [p for p in checkpoint_folders(output_dir) if checkpoint_step(p) <= step]
    for stale in reached[keep:]:
        shutil.rmtree(stale)


def intact_checkpoint(output_dir: Path, context: DistributedContext) -> Path:
    """The newest checkpoint whose files all have their recorded size and sha256 (each rank checks
    a share of the digests); a warning names every newer one skipped, and why."""
    skipped = []
    for folder in checkpoint_folders(output_dir):
        problems = size_problems(folder)
        if not problems:
            mine = digest_problems(folder, context.rank, context.world_size)
            problems = [p for part in distributed.gather_to_all(mine) for p in part]
        if not problems:
            if skipped and context.is_main:
                warnings.warn(
                    f"--resume: skipped damaged checkpoint(s) {'; '.join(skipped)}; resuming from {folder}",
                    stacklevel=3,  # the trainer's call of `resume_checkpoint`
                )
            return folder
        skipped.append(f"{folder.name} ({', '.join(problems[:3])})")
    where = output_dir / CHECKPOINTS_FOLDER
    if skipped:
        raise FileNotFoundError(
            f"--resume: no intact checkpoint under {where} (damaged: {'; '.join(skipped)}); "
            "start again with --overwrite"
        )
    raise FileNotFoundError(f"--resume: no checkpoint under {where}; start without --resume")


def resume_checkpoint(output_dir: Path, state: ResumableState, context: DistributedContext) -> int:
    """Restore `state` and this rank's RNG from the newest intact checkpoint; returns its step.

    A checkpoint saved by another number of processes loads with a warning: the weights continue,
    but the run no longer matches an uninterrupted one exactly."""
    folder = intact_checkpoint(output_dir, context)
    trainer_state = json.loads((folder / TRAINER_STATE).read_text())
    if trainer_state["world_size"] != context.world_size and context.is_main:
        warnings.warn(
            f"resuming a {trainer_state['world_size']}-process checkpoint on {context.world_size} "
            "processes: weights continue, but the run will not match an uninterrupted one exactly",
            stacklevel=2,
        )
    distributed.load_distributed_checkpoint(folder, state.model, state.optimizer, state.extra_tensors)
    state.scheduler.load_state_dict(trainer_state["scheduler"])
    state.sampler.load_state_dict(trainer_state["sampler"])
    rng_path = rng_state_file(folder, context.rank)
    if rng_path.is_file():
        torch.set_rng_state(load_file(str(rng_path))["torch"])
    return int(trainer_state["step"])
