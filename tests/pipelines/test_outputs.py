"""Video outputs: MP4 via PyAV, GIF, PNG frames, side-car paths; the pixel rule of docs/model.md#5-sampling-defaults."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kaleido_s2v.common.video_io import probe_video, read_video
from kaleido_s2v.pipelines.outputs import (
    check_output,
    frames_to_uint8,
    is_own_output,
    save_frames,
    sidecar_path,
    write_sidecar,
)


def _frames(count=5, height=32, width=48):
    ramp = np.linspace(0, 1, count, dtype=np.float32)[:, None, None, None]
    return np.broadcast_to(ramp, (count, height, width, 3)).copy()


def test_pixel_rule_clamps_and_scales():
    frames = np.array([-0.5, 0.0, 0.5, 1.0, 1.5], np.float32).reshape(5, 1, 1, 1).repeat(3, -1)
    assert frames_to_uint8(frames)[:, 0, 0, 0].tolist() == [0, 0, 127, 255, 255]


def test_mp4_reads_back_with_the_frame_count_size_and_fps(tmp_path):
    out = save_frames(_frames(9), tmp_path / "clip.mp4", fps=16)
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height, info.fps) == (9, 48, 32, 16.0)
    decoded, _ = read_video(out)
    assert abs(float(decoded[-1].mean()) - 255) < 3 and float(decoded[0].mean()) < 3
    assert not (tmp_path / "clip.tmp.mp4").exists()


def test_gif_has_every_frame_and_the_duration(tmp_path):
    out = save_frames(_frames(5), tmp_path / "clip.gif", fps=10)
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.size == (48, 32)
        assert gif.info["duration"] == 100


@pytest.mark.parametrize(
    ("name", "fps", "message"),
    [
        ("clip.mp4", 0, "fps 0 is not a frame rate"),
        ("clip.gif", 0, "fps 0 is not a frame rate"),
        ("clip.gif", -5, "fps -5 is not a frame rate"),
        ("frames", 0, "fps 0 is not a frame rate"),
        ("clip.mp4", float("nan"), "fps nan is not a frame rate"),
        ("clip.gif", 101, "at most 100 fps"),
    ],
)
def test_a_frame_rate_the_output_cannot_play_is_refused(tmp_path, name, fps, message):
    with pytest.raises(ValueError, match=message):
        save_frames(_frames(2), tmp_path / name, fps=fps)
    assert list(tmp_path.iterdir()) == []


def test_png_frames_folder(tmp_path):
    out = save_frames(_frames(3), tmp_path / "frames", fps=8)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.png", "00001.png", "00002.png"]
    assert np.asarray(Image.open(out / "00002.png")).shape == (32, 48, 3)
    # Writing again replaces a folder of frames as a whole.
    save_frames(_frames(2), out, fps=8)
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png"]


def test_png_frames_never_replace_a_folder_with_other_files(tmp_path):
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "00000.png").write_bytes(b"a frame-like name")
    (folder / "beach.jpg").write_bytes(b"the user's photo")
    with pytest.raises(FileExistsError, match="beach.jpg"):
        save_frames(_frames(2), folder, fps=8)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "beach.jpg"]
    assert (folder / "00000.png").read_bytes() == b"a frame-like name"


@pytest.mark.parametrize("photo", ["beach.png", "0001.png", "000001.png", "00000.PNG", "00000.png.bak"])
def test_only_names_write_png_frames_writes_count_as_frames(tmp_path, photo):
    """A folder of the user's own PNGs (or other five-digit-like names) is never taken for frames."""
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / photo).write_bytes(b"the user's picture")
    with pytest.raises(FileExistsError, match="not PNG frames"):
        check_output(folder, overwrite=True)
    with pytest.raises(FileExistsError, match="not PNG frames"):
        save_frames(_frames(2), folder, fps=8)
    assert [p.name for p in folder.iterdir()] == [photo]


@pytest.mark.parametrize("name", [".", "..", "~"])
def test_png_frames_refuse_the_working_folder_its_parents_and_home(tmp_path, monkeypatch, name):
    work = tmp_path / "parent" / "work"
    work.mkdir(parents=True)
    (work / "mine.txt").write_text("keep")
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="refusing to write PNG frames"):
        check_output(name)
    with pytest.raises(ValueError, match="refusing to write PNG frames"):
        save_frames(_frames(1), name, fps=8)
    for ancestor in (work, work.parent, tmp_path):
        with pytest.raises(ValueError, match="refusing"):
            check_output(ancestor)
    assert (work / "mine.txt").read_text() == "keep"


def test_check_output_accepts_new_empty_and_own_outputs_only(tmp_path):
    assert check_output(tmp_path / "new.mp4") == tmp_path / "new.mp4"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty")
    users = tmp_path / "users.mp4"
    users.write_bytes(b"someone else's video")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output(users)
    check_output(users, overwrite=True)
    # An earlier output of generate: its side-car names it.
    ours = save_frames(_frames(2), tmp_path / "ours", fps=8)
    with pytest.raises(FileExistsError, match="was not written by kaleido-s2v generate"):
        check_output(ours)  # frames without a side-car could be anyone's
    write_sidecar(ours, {"output": "ours"})
    assert is_own_output(ours)
    check_output(ours)
    write_sidecar(users, {"output": "another.mp4"})
    assert not is_own_output(users)
    (ours / "notes.txt").write_text("added by the user")
    assert not is_own_output(ours)
    with pytest.raises(FileExistsError, match="notes.txt"):
        check_output(ours, overwrite=True)


def test_unknown_suffix_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown format '.avi'"):
        save_frames(_frames(1), tmp_path / "clip.avi", fps=8)


def test_sidecar_sits_beside_the_output(tmp_path):
    assert sidecar_path(tmp_path / "a.mp4") == tmp_path / "a.json"
    assert sidecar_path(tmp_path / "frames") == tmp_path / "frames.json"
    written = write_sidecar(tmp_path / "a.mp4", {"seed": 3, "prompt": "猫"})
    assert '"prompt": "猫"' in written.read_text(encoding="utf-8")
