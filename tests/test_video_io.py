import numpy as np
import pytest

from kaleido_s2v.common.video_io import probe_video, read_video, write_video


def test_write_read_round_trip_keeps_count_size_and_fps(tmp_path):
    # A smooth gradient survives H.264 with 4:2:0 chroma nearly unchanged; noise would not.
    y, x = np.mgrid[0:32, 0:48]
    image = np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)
    frames = np.repeat(image[None], 9, axis=0)
    path = write_video(tmp_path / "clip.mp4", frames, fps=16)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (9, 48, 32, 16.0)
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and fps == 16.0
    # Lossy codec, but a static frame must come back close.
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 4
    assert not list(tmp_path.glob("*.tmp.*"))


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="cannot read video"):
        read_video(tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="even frame sizes"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 48, 3), np.uint8), fps=8)


def test_same_frames_give_identical_bytes(tmp_path):
    import hashlib

    import torch  # noqa: F401  (the variation was seen in processes that had imported torch)

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (9, 48, 64, 3), dtype=np.uint8)
    digests = {
        hashlib.sha256(write_video(tmp_path / f"run{i}.mp4", frames, fps=8).read_bytes()).hexdigest()
        for i in range(4)
    }
    assert len(digests) == 1
