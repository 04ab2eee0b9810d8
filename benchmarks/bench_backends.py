"""Per-call time of the data/evaluation model wrappers (prints, never fails).

The models are the tiny random ones that `tests/tiny_backends.py` builds (test builders, not part
of the package: this script puts the repository's `tests/` folder on `sys.path` to import them), so
the figures are the wrappers' own CPU cost (processor pre-processing, our SAM2 pre-processing,
box/mask post-processing, FluxFill padding and pasting back) plus a negligible forward pass: a floor
on the per-image overhead a real model adds on top of its forward pass, not real model speed.
For each wrapper: median, interquartile range and best over repeats, and the share of the call spent
inside the model's forward (measured by wrapping it).

Run: `python benchmarks/bench_backends.py [--repeats 9] [--threads 2]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny_backends as tiny  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class ForwardTimer:
    """Accumulates the time spent in `module.forward` while installed."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.total = 0.0
        original = module.forward

        def forward(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - start

        module.forward = forward


def report(name: str, fn, repeats: int, module: torch.nn.Module | None, calls: int = 1) -> None:
    timer = ForwardTimer(module) if module is not None else None
    times = timed(fn, repeats)
    median = statistics.median(times) * 1000
    q1, _, q3 = statistics.quantiles(times, n=4)
    best = min(times) * 1000  # the least disturbed call: the machine is shared
    line = f"{name:<52} median {median:8.1f} ms  IQR {q1 * 1000:7.1f}–{q3 * 1000:7.1f}  best {best:7.1f} ms"
    if timer is not None:
        forward_share = timer.total / (sum(times) + times[0])  # warm-up call included in the total
        line += f"   in forward {forward_share * 100:5.1f}%"
    print(line + (f"   ({calls} images per call)" if calls > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from skimage import data

    from kaleido_s2v.data import backends

    astronaut = data.astronaut()  # (512, 512, 3)
    cat = data.chelsea()  # (300, 451, 3)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}, repeats {args.repeats}"
    )
    print(
        f"images: astronaut {astronaut.shape[1]}x{astronaut.shape[0]}, chelsea {cat.shape[1]}x{cat.shape[0]}\n"
    )

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start = time.perf_counter()
        paths = {
            "gdino": tiny.save_tiny_grounding_dino(root / "gdino"),
            "sam": tiny.save_tiny_sam(root / "sam"),
            "sam2": tiny.save_tiny_sam2(root / "sam2"),
            "clip": tiny.save_tiny_clip(root / "clip"),
            "dinov2": tiny.save_tiny_dinov2(root / "dinov2"),
            "flux": tiny.save_tiny_flux_fill(root / "flux"),
            "qwen": tiny.save_tiny_qwen2_vl(root / "qwen", kind="qwen2_5_vl"),
        }
        head = tiny.save_tiny_aesthetic_head(root / "head.safetensors", paths["clip"])
        print(f"building and saving the tiny models: {time.perf_counter() - start:.1f} s\n")

        detector = backends.GroundingDinoDetector.from_pretrained(
            paths["gdino"], box_threshold=0.0, text_threshold=0.0
        )
        report(
            "GroundingDinoDetector.detect 512px, 2 labels",
            lambda: detector.detect(astronaut, ["person", "flag"]),
            args.repeats,
            detector.model,
        )

        boxes = [(150, 20, 380, 500), (20, 300, 200, 510), (300, 200, 500, 400)]
        for kind in ("sam", "sam2"):
            segmenter = backends.SamSegmenter.from_pretrained(paths[kind])
            report(
                f"SamSegmenter[{kind}].segment 512px, 3 boxes",
                lambda s=segmenter: s.segment(astronaut, boxes),
                args.repeats,
                segmenter.model,
            )

        scorer = backends.ClipScorer.from_pretrained(paths["clip"])
        crops = [astronaut, cat] * 4
        report(
            "ClipScorer.image_text_similarity 8 images x 3 texts",
            lambda: scorer.image_text_similarity(crops, ["a cat", "a person", "a flag"]),
            args.repeats,
            None,
            calls=8,
        )

        embedder = backends.DinoV2Embedder.from_pretrained(paths["dinov2"])
        report(
            "DinoV2Embedder.image_features",
            lambda: embedder.image_features(crops),
            args.repeats,
            embedder.model,
            calls=8,
        )

        aesthetic = backends.LaionAestheticPredictor.from_pretrained(paths["clip"], head_path=head)
        report("LaionAestheticPredictor.score", lambda: aesthetic.score(crops), args.repeats, None, calls=8)

        # The tiny VAE does not downsample: the transformer sees (H/2)*(W/2) tokens, so keep it small.
        inpainter = backends.FluxFillInpainter.from_pretrained(
            paths["flux"], num_inference_steps=2, max_side=96, max_sequence_length=16
        )
        mask = np.zeros(cat.shape[:2], dtype=bool)
        mask[60:240, 120:330] = True
        report(
            "FluxFillInpainter.inpaint 451x300 -> 96px, 2 steps",
            lambda: inpainter.inpaint(cat, mask, "a dog", seed=0),
            args.repeats,
            inpainter.pipeline.transformer,
        )

        captioner = backends.VlmCaptioner.from_pretrained(paths["qwen"], max_frames=4, max_new_tokens=16)
        frames = [astronaut, cat, astronaut, cat, astronaut, cat, astronaut, cat]
        report(
            "VlmCaptioner.caption 8 frames -> 4, 16 new tokens",
            lambda: captioner.caption(frames),
            args.repeats,
            captioner.model.model,
        )


if __name__ == "__main__":
    main()
