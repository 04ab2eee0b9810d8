"""Tiny real models with random weights, saved once per session and loaded through our loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tiny_backends


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::4, ::4])  # (128, 128, 3) uint8, a real photo


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.chelsea()[::4, ::4])  # (75, 113, 3) uint8, a cat


@pytest.fixture(scope="session")
def gdino_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino"))


@pytest.fixture(scope="session")
def sam_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_sam(tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="session")
def sam2_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_sam2(tmp_path_factory.mktemp("sam2"))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_clip(tmp_path_factory.mktemp("clip"), kind="clip")


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_clip(tmp_path_factory.mktemp("siglip"), kind="siglip")


@pytest.fixture(scope="session")
def siglip2_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_clip(tmp_path_factory.mktemp("siglip2"), kind="siglip2")


@pytest.fixture(scope="session")
def dinov2_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_dinov2(tmp_path_factory.mktemp("dinov2"))


@pytest.fixture(scope="session")
def flux_fill_dir(tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_flux_fill(tmp_path_factory.mktemp("flux_fill"))


@pytest.fixture(scope="session", params=["qwen2_vl", "qwen2_5_vl"])
def qwen_vl_dir(request, tmp_path_factory) -> Path:
    return tiny_backends.save_tiny_qwen2_vl(tmp_path_factory.mktemp(request.param), kind=request.param)
