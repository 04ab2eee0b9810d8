"""Buckets and the resumable global-batch sampler (docs/contracts.md#5-batches-and-reference-counts).

References are never padded, so a batch only mixes samples of one (height, width, frames,
reference count) bucket. Each global batch (all ranks, all accumulation steps) comes from one
bucket; the order is a pure function of (seed, epoch), so the sampler's position is two integers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class BucketKey:
    height: int
    width: int
    num_frames: int
    num_references: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.num_frames}+{self.num_references}refs"


def nearest_resolution(height: int, width: int, resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The candidate (height, width) closest to the clip's aspect ratio (in log space)."""
    if not resolutions:
        raise ValueError("no resolutions configured; set data.resolutions")
    ratio = np.log(width / height)
    return min(resolutions, key=lambda hw: (abs(np.log(hw[1] / hw[0]) - ratio), -hw[0] * hw[1]))


class BucketBatchSampler:
    """Yields global batches (lists of dataset indices), each drawn from a single bucket.

    An epoch shuffles every bucket and the order of its full batches with a generator seeded by
    (seed, epoch); samples left over after the last full batch of a bucket wait for another epoch.
    """

    def __init__(self, bucket_keys: Sequence[BucketKey], global_batch_size: int, seed: int) -> None:
        if global_batch_size < 1:
            raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
        self.global_batch_size = global_batch_size
        self.seed = seed
        groups: dict[BucketKey, list[int]] = defaultdict(list)
        for index, key in enumerate(bucket_keys):
            groups[key].append(index)
        self.buckets = dict(sorted(groups.items()))
        if not any(len(v) >= global_batch_size for v in self.buckets.values()):
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in self.buckets.items()) or "no samples"
            raise ValueError(
                f"no bucket holds a full global batch of {global_batch_size} samples ({sizes}); "
                "lower micro_batch_size or gradient_accumulation_steps, or add data"
            )
        self.batches_per_epoch = sum(len(v) // global_batch_size for v in self.buckets.values())
        self.epoch = 0
        self.position = 0  # batches of `epoch` already handed out
        self._cached_epoch, self._cached_batches = -1, []

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for indices in self.buckets.values():
            shuffled = rng.permutation(indices).tolist()
            full = len(shuffled) // self.global_batch_size * self.global_batch_size
            batches += [
                shuffled[start : start + self.global_batch_size]
                for start in range(0, full, self.global_batch_size)
            ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def next_batch(self) -> list[int]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        if self._cached_epoch != self.epoch:
            self._cached_batches, self._cached_epoch = self.epoch_batches(self.epoch), self.epoch
        batch = self._cached_batches[self.position]
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"checkpoint sampler seed {state['seed']} differs from config seed {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def rank_slice(global_batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous slice of a global batch."""
    if len(global_batch) % world_size:
        raise ValueError(f"global batch of {len(global_batch)} does not split over {world_size} ranks")
    size = len(global_batch) // world_size
    return list(global_batch[rank * size : (rank + 1) * size])
