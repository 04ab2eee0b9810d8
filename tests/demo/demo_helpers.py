"""Shared pieces of the demo tests."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def example_generate_argv(out: Path, prompt: str, model: Path | None = None) -> list[str]:
    """`kaleido-s2v generate` arguments with the two `examples/` references."""
    model_args = ["--model", str(model)] if model is not None else []
    references = ["striped_red_star.png", "dotted_blue_circle.png"]
    reference_args = [arg for name in references for arg in ("--ref", str(REPO / "examples" / name))]
    return ["generate", *model_args, *reference_args, "--prompt", prompt, "--out", str(out)]
