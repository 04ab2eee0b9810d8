"""Distributed set-up, FSDP2 and distributed checkpoints, applied as separate named steps.

The trainer builds a plain transformer, then (torchtitan style):

    context = init_distributed()
    apply_activation_checkpointing(model)           # optional
    apply_fsdp(model, context.mesh, param_dtype)    # world size > 1

Sequence parallelism is a later step: it will add a "sp" dimension to the mesh built in
`init_distributed` and an `apply_sequence_parallel(model, mesh["sp"])` step before `apply_fsdp`;
the data slicing in the trainer already goes through `DistributedContext.data_rank/data_world_size`.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kaleido_s2v.training.checkpoint_reading import SafeFileSystemReader, SafeLoadPlanner


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # A 1-D data-parallel mesh when world_size > 1, else None.
    mesh: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_rank(self) -> int:
        """Index of this rank's slice of each global batch (all ranks are data-parallel today)."""
        return self.rank

    @property
    def data_world_size(self) -> int:
        return self.world_size


def init_distributed() -> DistributedContext:
    """Join the process group `torchrun` describes in the environment, or run as one process.

    CUDA ranks use NCCL on `cuda:LOCAL_RANK`; CPU ranks use gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if world_size == 1:
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=device)
    from torch.distributed.device_mesh import init_device_mesh

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    mesh = init_device_mesh(device.type, (world_size,), mesh_dim_names=("dp",))
    return DistributedContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=device, mesh=mesh
    )


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Average a Python float over all ranks (identity on one process)."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item()) / dist.get_world_size()


def gather_to_all(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (`[value]` on one process).

    The values travel pickled between this job's own processes, never from files.
    """
    if not dist.is_initialized():
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer block in the backward pass (diffusers' own mechanism).

    diffusers' checkpointing keeps parameter names unchanged, so checkpoints and exported
    weights look the same with or without it.
    """
    model.enable_gradient_checkpointing()


def apply_fsdp(model: nn.Module, mesh: Any, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard each transformer block, then the root (embeddings, head), with FSDP2.

    `param_dtype` bf16 computes in bf16 while gradients are reduced and kept in fp32.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    blocks = list(model.blocks)
    for index, block in enumerate(blocks):
        # The last block's parameters are needed again at once by the backward pass.
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=index < len(blocks) - 1)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly sharded) DTensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """An unsharded CPU state dict (a collective under FSDP: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


@contextmanager
def _single_process_quiet():
    """DCP warns that it assumes a single process when no process group exists: that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def save_distributed_checkpoint(
    folder: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra_tensors: dict[str, dict[str, torch.Tensor]],
) -> None:
    """Write model, optimizer and `extra_tensors` (e.g. EMA) shards with torch.distributed.checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, **extra_tensors}
    with _single_process_quiet():
        dcp.save(state, checkpoint_id=str(folder))


def load_distributed_checkpoint(
    folder: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra_tensors: dict[str, dict[str, torch.Tensor]],
) -> None:
    """Load what `save_distributed_checkpoint` wrote into the live objects, in place.

    Read through `checkpoint_reading`: nothing in the folder is unpickled beyond DCP metadata classes,
    tensors and plain containers.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"checkpoint {folder} does not exist")
    SafeFileSystemReader(folder).read_metadata()  # a bad .metadata is named here, not wrapped by DCP
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, **extra_tensors}
    try:
        with _single_process_quiet():
            dcp.load(state, storage_reader=SafeFileSystemReader(folder), planner=SafeLoadPlanner(str(folder)))
    except CheckpointException as error:  # a BaseException carrying each rank's own error
        first = next(iter(error.failures.values()))[0]
        if isinstance(first, ValueError):
            raise first from None
        raise ValueError(f"checkpoint {folder} could not be loaded: {first}") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
