"""Training throughput on CPU: samples/s and tokens/s, the data-loading share with and without
the latent cache, and 1- vs 2-process FSDP2 (gloo) throughput. Prints figures; not a test.

    python benchmarks/bench_train.py [--steps 30] [--threads 1]

Uses the tiny real components of `tests/tiny_components.py` (Wan VAE with 8 base channels, a
1-layer UMT5) on 64x64 clips of 9 frames with 2 references, and a transformer of width 64.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODEL = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=32,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=128,
    num_layers=4,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=128,
)


def make_samples(root: Path, count: int) -> Path:
    from PIL import Image

    from kaleido_s2v.common.video_io import write_video
    from kaleido_s2v.data.samples import write_folder_sample

    rng = np.random.default_rng(0)
    for index in range(count):
        frames = rng.integers(0, 255, size=(9, 64, 64, 3), dtype=np.uint8)
        video = root / f"v{index}.mp4"
        write_video(video, frames, 8.0)
        refs = [Image.new("RGB", (40, 24), tuple(int(c) for c in rng.integers(0, 255, 3))) for _ in range(2)]
        info = dict(fps=8.0, num_frames=9, width=64, height=64)
        write_folder_sample(root / "set", f"s{index}", video, "a cat walks on the beach", refs, info)
    return root / "set"


def config_dict(
    output_dir: Path, encoders: Path, samples: Path, steps: int, micro: int, cache: Path | None
) -> dict:
    return dict(
        output_dir=str(output_dir),
        max_steps=steps,
        micro_batch_size=micro,
        mixed_precision="no",
        checkpoint_every=0,
        log_every=steps,
        model=dict(config=MODEL),
        encoders=dict(path=str(encoders), max_text_length=16),
        data=dict(
            paths=[str(samples)],
            resolutions=[[64, 64]],
            num_frames=9,
            fps=8,
            cache_dir=str(cache) if cache else None,
        ),
        optimizer=dict(lr=1e-4),
    )


def last_record(output_dir: Path) -> dict:
    return json.loads((output_dir / "metrics.jsonl").read_text().splitlines()[-1])


def run_in_process(raw: dict) -> dict:
    from kaleido_s2v.training.config import TrainConfig, config_from_dict
    from kaleido_s2v.training.trainer import Trainer

    Trainer(config_from_dict(TrainConfig, raw)).train()
    return last_record(Path(raw["output_dir"]))


def run_torchrun(raw: dict, config_path: Path, threads: int) -> dict:
    config_path.write_text(yaml.safe_dump(raw))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(port),
        "-m", "kaleido_s2v.cli", "train", str(config_path),
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return last_record(Path(raw["output_dir"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from kaleido_s2v.models.encoders import LatentEncoder
    from kaleido_s2v.training.config import TrainConfig, config_from_dict
    from kaleido_s2v.training.datasets import VideoSampleDataset, cache_fingerprint, write_latent_cache
    from tiny_components import save_tiny_pipeline

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    samples = make_samples(work, 16)
    encoders = save_tiny_pipeline(work / "pipeline")
    cache = work / "cache"
    raw = config_dict(work / "x", encoders, samples, args.steps, 4, cache)
    config = config_from_dict(TrainConfig, raw)
    start = time.perf_counter()
    encoder = LatentEncoder.from_folder(encoders, 16)
    write_latent_cache(
        VideoSampleDataset(config.data),
        encoder,
        cache,
        cache_fingerprint(config.data, str(encoders), 16),
        progress=False,
    )
    cache_seconds = time.perf_counter() - start
    tokens = 3 * 16 + 2 * 16  # 3 latent frames of 8x8 at patch 2, plus 2 references
    print(
        f"machine: {os.cpu_count()} CPUs (shared), torch {torch.__version__}, {args.threads} thread(s) per process"
    )
    print(f"model: width 64, 4 layers; sample: 64x64x9 clip + 2 refs = {tokens} tokens; global batch 4")
    print(f"latent cache: 16 samples in {cache_seconds:.1f} s (includes loading the encoders)\n")

    def measure(name: str, runner) -> None:
        records = [runner(i) for i in range(args.repeats)]
        sps = [r["samples_per_s"] for r in records]
        tps = [r["tokens_per_s"] for r in records]
        share = [r["data_time_share"] for r in records]
        print(
            f"{name:<38} samples/s {statistics.median(sps):6.1f} [{min(sps):.1f}-{max(sps):.1f}]  "
            f"tokens/s {statistics.median(tps):7.0f}  data share {statistics.median(share) * 100:5.1f}%"
        )

    measure(
        "1 process, latent cache",
        lambda i: run_in_process(config_dict(work / f"c{i}", encoders, samples, args.steps, 4, cache)),
    )
    measure(
        "1 process, VAE/T5 every step",
        lambda i: run_in_process(config_dict(work / f"v{i}", encoders, samples, args.steps, 4, None)),
    )
    measure(
        "2 processes FSDP2 (gloo), latent cache",
        lambda i: run_torchrun(
            config_dict(work / f"f{i}", encoders, samples, args.steps, 2, cache),
            work / f"f{i}.yaml",
            args.threads,
        ),
    )
    print(
        "\n(each figure: median [min-max] over repeats of the last",
        args.steps,
        "steps' mean; the 2-process figure is the global rate)",
    )


if __name__ == "__main__":
    main()
