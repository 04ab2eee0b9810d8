"""Pipeline overhead of KaleidoPipeline on tiny real components (docs/contracts.md#12-what-the-pipeline-benchmark-reports). Prints figures; not a test.

Reports, as medians with their spread (min-max) over repeats:
  - the inference issue's figure: (total - transformer time) / total, against its 5% target;
  - the share outside the transformer, the VAE and the text encoder, with a per-component breakdown
    (on tiny components VAE decoding dominates, so the first figure can miss 5%);
  - end-to-end time of KaleidoPipeline vs diffusers' WanPipeline on the same tiny components with
    S = 0 references (target ratio <= 1.05), runs interleaved so machine load hits both alike.

Run: python benchmarks/bench_pipeline.py [--repeats 7] [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_components import tiny_text_encoder_and_tokenizer, tiny_transformer, tiny_vae  # noqa: E402

PROMPT = "a cat walks on the beach"


class Timers:
    """Wall time spent inside the transformer, the text encoder, VAE encode and VAE decode."""

    def __init__(self, pipe) -> None:
        self.seconds = {"transformer": 0.0, "text_encoder": 0.0, "vae_encode": 0.0, "vae_decode": 0.0}
        self._hook_module(pipe.transformer, "transformer")
        self._hook_module(pipe.text_encoder, "text_encoder")
        self._wrap_method(pipe.vae, "encode", "vae_encode")
        self._wrap_method(pipe.vae, "decode", "vae_decode")

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def _hook_module(self, module, name) -> None:
        start = {}
        module.register_forward_pre_hook(lambda *_: start.__setitem__("t", time.perf_counter()))
        module.register_forward_hook(lambda *_: self._add(name, time.perf_counter() - start["t"]))

    def _wrap_method(self, module, method, name) -> None:
        original = getattr(module, method)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - began)

        setattr(module, method, timed)

    def _add(self, name, seconds) -> None:
        self.seconds[name] += seconds


def build_pipelines(seed: int = 0):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    from kaleido_s2v.pipelines.generation_config import make_scheduler
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

    transformer = tiny_transformer(seed)
    wan_transformer = WanTransformer3DModel(
        **{k: v for k, v in transformer.config.items() if k != "rope_policy"}
    )
    wan_transformer.load_state_dict(transformer.state_dict())
    text_encoder, tokenizer = tiny_text_encoder_and_tokenizer(seed)
    vae = tiny_vae(seed)
    ours = KaleidoPipeline(tokenizer, text_encoder, vae, make_scheduler("kaleido_euler"), transformer)
    wan_text_encoder, wan_tokenizer = tiny_text_encoder_and_tokenizer(seed)
    wan_vae = tiny_vae(seed)
    theirs = WanPipeline(
        tokenizer=wan_tokenizer,
        text_encoder=wan_text_encoder,
        vae=wan_vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=wan_transformer.eval(),
    )
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} [{min(values):.4g}-{max(values):.4g}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--references", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours, theirs = build_pipelines()
    timers, their_timers = Timers(ours), Timers(theirs)
    rng = np.random.default_rng(0)
    references = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(args.references)]
    common = dict(
        height=args.height, width=args.width, num_frames=args.frames, num_inference_steps=args.steps
    )
    common["guidance_scale"] = args.guidance

    def run_ours(refs):
        generator = torch.Generator().manual_seed(0)
        return ours(PROMPT, reference_images=refs, negative_prompt="", generator=generator, **common)

    def run_theirs():
        generator = torch.Generator().manual_seed(0)
        return theirs(PROMPT, negative_prompt="", generator=generator, **common)

    run_ours(references), run_ours([]), run_theirs()  # warm-up

    # 1. Overhead breakdown with S references.
    totals, shares = [], {key: [] for key in [*timers.seconds, "other"]}
    issue_figure, outside_models = [], []
    for _ in range(args.repeats):
        timers.reset()
        began = time.perf_counter()
        run_ours(references)
        total = time.perf_counter() - began
        totals.append(total)
        parts = dict(timers.seconds)
        other = total - sum(parts.values())
        for key, value in {**parts, "other": other}.items():
            shares[key].append(100 * value / total)
        issue_figure.append(100 * (total - parts["transformer"]) / total)
        outside_models.append(100 * other / total)

    # 2. End to end vs diffusers' WanPipeline, S = 0, interleaved.
    ours_s0, theirs_s0, ratios = [], [], []
    parts_s0 = {"ours": {key: [] for key in timers.seconds}, "wan": {key: [] for key in timers.seconds}}
    for _ in range(args.repeats):
        timers.reset()
        began = time.perf_counter()
        run_ours([])
        ours_s0.append(time.perf_counter() - began)
        their_timers.reset()
        began = time.perf_counter()
        run_theirs()
        theirs_s0.append(time.perf_counter() - began)
        ratios.append(ours_s0[-1] / theirs_s0[-1])
        for name, source in (("ours", timers), ("wan", their_timers)):
            for key, value in source.seconds.items():
                parts_s0[name][key].append(value)

    print(
        f"tiny components, {args.height}x{args.width}x{args.frames}, {args.steps} steps, guidance {args.guidance}, "
        f"{args.references} references, {args.repeats} repeats, {torch.get_num_threads()} threads; "
        "median [min-max]"
    )
    print(f"total generate time (s):                         {spread(totals)}")
    print(f"(total - transformer) / total (%), target < 5:   {spread(issue_figure)}")
    print(f"outside transformer, VAE, text encoder (%):      {spread(outside_models)}")
    for key, values in shares.items():
        print(f"  share {key:<14} (%):                      {spread(values)}")
    print(f"KaleidoPipeline S=0 (s):                         {spread(ours_s0)}")
    print(f"diffusers WanPipeline (s):                       {spread(theirs_s0)}")
    print(f"ratio Kaleido / Wan, S=0, target <= 1.05:        {spread(ratios)}")
    for key in timers.seconds:
        print(
            f"  S=0 {key:<14} (s) Kaleido {spread(parts_s0['ours'][key])}  Wan {spread(parts_s0['wan'][key])}"
        )


if __name__ == "__main__":
    main()
