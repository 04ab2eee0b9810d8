"""Fixtures for the evaluation tests; the drawing helpers live in eval_scenes.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.eval_scenes import save_png, striped_ball


@pytest.fixture
def ball_reference(tmp_path) -> Path:
    image, _ = striped_ball(40)
    canvas = np.full((48, 48, 3), 255, np.uint8)
    canvas[4:44, 4:44] = image
    return save_png(tmp_path / "refs" / "ball.png", canvas)


@pytest.fixture(scope="session")
def tiny_eval_models(tmp_path_factory) -> dict[str, Path]:
    """Grounding DINO, SAM, DINOv2 and CLIP from tiny configs with random weights, saved as real
    model folders for the model backend to load (the builders of tests/tiny_backends.py)."""
    import torch

    import tiny_backends

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("eval_models")
    return {
        "grounding_dino": tiny_backends.save_tiny_grounding_dino(root / "grounding_dino"),
        "sam": tiny_backends.save_tiny_sam(root / "sam"),
        "dinov2": tiny_backends.save_tiny_dinov2(root / "dinov2"),
        "clip": tiny_backends.save_tiny_clip(root / "clip"),
    }
