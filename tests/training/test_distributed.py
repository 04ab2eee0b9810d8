"""FSDP2 on CPU with gloo: 2 processes under torchrun against 1 process, and exact resume."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kaleido_s2v.training.config import TrainConfig, config_from_dict
from kaleido_s2v.training.datasets import save_latent_examples
from kaleido_s2v.training.trainer import Trainer
from training.training_helpers import config_dict, latent_examples


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(config_path, *extra: str) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "kaleido_s2v.cli", "train", str(config_path), *extra,
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]


def losses(output_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_and_resume_exactly(tmp_path):
    cache = save_latent_examples(tmp_path / "cache", latent_examples(num_clips=4), torch.zeros(1, 32))
    common = dict(max_steps=4, checkpoint_every=2, data=dict(cache_dir=str(cache)))

    # One process, micro-batch 2 == two processes, micro-batch 1 each (the same global batch).
    one = config_from_dict(TrainConfig, config_dict(tmp_path / "one", micro_batch_size=2, **common))
    Trainer(one).train()
    two_raw = config_dict(tmp_path / "two", micro_batch_size=1, **common)
    two_path = tmp_path / "two.yaml"
    two_path.write_text(yaml.safe_dump(two_raw))
    torchrun(two_path)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
    weights = "final/transformer/diffusion_pytorch_model.safetensors"
    single, sharded = load_file(tmp_path / "one" / weights), load_file(tmp_path / "two" / weights)
    # Measured max difference 1.3e-5 (Adam rescales summation-order noise of small gradients).
    for name, tensor in single.items():
        assert torch.allclose(tensor, sharded[name], atol=1e-4), name

    # Interrupt after step 2 (drop what came later), resume on 2 processes: identical weights.
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step-00000004")
    shutil.rmtree(tmp_path / "two" / "final")
    torchrun(two_path, "--resume")
    resumed = load_file(tmp_path / "two" / weights)
    for name, tensor in sharded.items():
        assert torch.equal(tensor, resumed[name]), name
    assert len(losses(tmp_path / "two")) == 4


@pytest.mark.slow
def test_fsdp_with_lora_bf16_checkpointing_and_ema_exports_adapters(tmp_path):
    from tiny_components import TINY_TRANSFORMER_CONFIG

    cache = save_latent_examples(
        tmp_path / "cache", latent_examples(num_clips=4, channels=16), torch.zeros(1, 32)
    )
    raw = config_dict(
        tmp_path / "run",
        micro_batch_size=1,
        max_steps=2,
        mixed_precision="bf16",
        ema_decay=0.9,
        model=dict(config=dict(TINY_TRANSFORMER_CONFIG), gradient_checkpointing=True),
        lora=dict(rank=4, alpha=4.0),
        data=dict(cache_dir=str(cache)),
    )
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(raw))
    torchrun(path)
    adapters = load_file(tmp_path / "run" / "final" / "lora" / "pytorch_lora_weights.safetensors")
    # 2 blocks x 2 attentions x 4 projections x (A, B), all full-size (gathered from the shards).
    assert len(adapters) == 32
    assert adapters["transformer.blocks.0.attn1.to_q.lora_A.weight"].shape == (4, 24)
    assert sum(v.abs().sum() for k, v in adapters.items() if "lora_B" in k) > 0
