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
