"""Forward-pass figures for KaleidoTransformer3DModel (issue 2's benchmark; prints, never fails).

1. Our model at S = 0 against diffusers' WanTransformer3DModel with the same weights, timed
   interleaved (A, B, A, B, ...) so machine noise hits both alike: median ratio and its spread.
2. How forward time grows with the number of references S = 0..4 and with the frame count.

Run: `python benchmarks/bench_transformer.py [--repeats 15] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import torch
from diffusers import WanTransformer3DModel

from kaleido_s2v import KaleidoTransformer3DModel

CONFIGS = {
    "tiny (2 layers, dim 24)": dict(num_attention_heads=2, attention_head_dim=12, ffn_dim=48, num_layers=2),
    "small (4 layers, dim 256)": dict(
        num_attention_heads=4, attention_head_dim=64, ffn_dim=1024, num_layers=4
    ),
}
COMMON = dict(
    patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=64, freq_dim=64, rope_max_seq_len=256
)


def timed_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    return [timed_once(fn) for _ in range(repeats)]


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.4g} (IQR {q[0]:.4g}–{q[2]:.4g})"


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}"
    )

    for name, sizes in CONFIGS.items():
        torch.manual_seed(0)
        config = {**COMMON, **sizes}
        wan = WanTransformer3DModel(**config).eval()
        ours = KaleidoTransformer3DModel(**config).eval()
        ours.load_state_dict(wan.state_dict())
        video = torch.randn(1, 16, 5, 32, 32)  # 5 latent frames of 32x32 -> 1280 tokens
        text = torch.randn(1, 32, COMMON["text_dim"])
        timestep = torch.tensor([500.0])

        run_wan = functools.partial(wan, video, timestep, text)
        run_ours = functools.partial(ours, video, timestep, text)
        run_wan(), run_ours()  # warm-up
        ratios = [timed_once(run_ours) / timed_once(run_wan) for _ in range(args.repeats)]
        print(f"\n[{name}] S=0, latent (5, 32, 32): ours / diffusers Wan forward time = {spread(ratios)}")

        print("  references S | tokens | forward s (median, IQR)")
        for count in range(5):
            refs = [torch.randn(1, 16, 1, 32, 32) for _ in range(count)]
            times = timed(
                functools.partial(ours, video, timestep, text, reference_latents=refs), args.repeats
            )
            tokens = 1280 + 256 * count
            print(f"  {count:12d} | {tokens:6d} | {spread(times)}")

        print("  latent frames | tokens (S=2) | forward s (median, IQR)")
        refs = [torch.randn(1, 16, 1, 32, 32) for _ in range(2)]
        for frames in (1, 3, 5, 9):
            clip = torch.randn(1, 16, frames, 32, 32)
            times = timed(functools.partial(ours, clip, timestep, text, reference_latents=refs), args.repeats)
            print(f"  {frames:13d} | {256 * frames + 512:12d} | {spread(times)}")


if __name__ == "__main__":
    main()
