"""Fixtures for the pipeline tests: tiny real components and small reference images on disk."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tiny_components import save_tiny_pipeline, tiny_generation_config, tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny pipeline saved in diffusers' format with a 64x64x5, 2-step generation_config.json."""
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture()
def pipe():
    """A fresh tiny pipeline (seed 0) with the tiny generation defaults; progress bars off."""
    pipeline = tiny_pipeline(0)
    pipeline.generation_config = tiny_generation_config()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def reference_files(tmp_path_factory):
    """Two small reference images on disk: a wide red/blue PNG and a tall RGBA PNG."""
    folder = tmp_path_factory.mktemp("refs")
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :20] = (200, 30, 30)
    wide[:, 20:] = (30, 30, 200)
    Image.fromarray(wide).save(folder / "wide.png")
    tall = np.zeros((48, 16, 4), np.uint8)
    tall[..., 1] = 180
    tall[8:40, :, 3] = 255  # opaque band in the middle, transparent top and bottom
    Image.fromarray(tall).save(folder / "tall.png")
    return [folder / "wide.png", folder / "tall.png"]
