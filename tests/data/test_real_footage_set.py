"""The fixed real-footage set (tests/data/real_footage.py): what it promises the tests that use it."""

from __future__ import annotations

import numpy as np

from data.real_footage import HEIGHT, WIDTH, build_real_footage, cast, corner_at
from kaleido_s2v.common.video_io import probe_video, read_video
from kaleido_s2v.data.masks import mask_box, rle_decode


def _shots(real_footage):
    for name, truth in real_footage["truth"].items():
        for shot in truth["shots"]:
            yield name, truth, shot


def test_the_set_is_small_multi_shot_and_rebuilds_byte_for_byte(real_footage, tmp_path):
    assert real_footage["seconds"] < 30
    for name, path in real_footage["videos"].items():
        truth, info = real_footage["truth"][name], probe_video(path)
        assert (info.width, info.height, info.num_frames) == (WIDTH, HEIGHT, truth["num_frames"])
        assert info.fps == truth["fps"] and len(truth["shots"]) == 3
        assert [s["start"] for s in truth["shots"][1:]] == [s["end"] for s in truth["shots"][:-1]]
        assert all(2.0 <= (s["end"] - s["start"]) / truth["fps"] <= 4.0 for s in truth["shots"])
    again = build_real_footage(tmp_path)
    for name, path in real_footage["videos"].items():
        assert again["videos"][name].read_bytes() == path.read_bytes()
        assert again["truth"][name] == real_footage["truth"][name]


def test_masks_are_the_pasted_pixels(real_footage):
    """At every 8th frame, each subject's visible mask holds its cut-out's pixels (up to H.264 noise),
    its box is the mask's box, and no two subjects' visible masks share a pixel."""
    cutouts = cast()
    checked = 0
    for name, path in real_footage["videos"].items():
        frames, _ = read_video(path)
        for shot in real_footage["truth"][name]["shots"]:
            count = shot["end"] - shot["start"]
            for f in range(0, count, 8):
                taken = np.zeros((HEIGHT, WIDTH), bool)
                for subject in shot["subjects"]:
                    visible = rle_decode(subject["masks"][f])
                    box = subject["boxes"][f]
                    assert (list(mask_box(visible)) if visible.any() else None) == box
                    assert not (visible & taken).any()
                    taken |= visible
                    cutout = cutouts[subject["label"]]
                    x, y = corner_at(subject["path"], f, count)
                    h, w = cutout.mask.shape
                    pasted = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
                    pasted[y : y + h, x : x + w] = cutout.pixels
                    error = np.abs(frames[shot["start"] + f].astype(int) - pasted)[visible]
                    assert np.median(error) < 10, (name, shot["index"], subject["label"], f)
                    checked += 1
    assert checked > 50


def test_camera_only_shots_move_over_a_photo_and_hold_no_subject(real_footage):
    camera_only = [(name, shot) for name, _, shot in _shots(real_footage) if shot["camera_only"]]
    assert {shot["camera"]["motion"] for _, shot in camera_only} == {"pan", "zoom"}
    for _, shot in camera_only:
        windows = np.asarray(shot["camera"]["windows"])
        assert shot["subjects"] == [] and not shot["native_motion"]
        assert len(windows) == shot["end"] - shot["start"] and not np.allclose(windows[0], windows[-1])
        sizes = windows[:, 2] - windows[:, 0]
        if shot["camera"]["motion"] == "pan":
            assert np.allclose(sizes, sizes[0])
        else:
            assert (np.diff(sizes) < 0).all()  # zooming in: the window shrinks every frame


def test_two_subjects_overlap_for_part_of_a_shot(real_footage):
    def overlapping(a, b) -> bool:
        return a is not None and b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    found = []
    for name, _, shot in _shots(real_footage):
        if len(shot["subjects"]) == 2:
            first, second = (s["boxes"] for s in shot["subjects"])
            frames = [overlapping(a, b) for a, b in zip(first, second, strict=True)]
            if any(frames) and not all(frames):
                found.append((name, shot["index"]))
    assert found


def test_footage_shots_are_real_video_with_unannotated_motion(real_footage):
    footage = [shot for _, _, shot in _shots(real_footage) if shot["camera"]["motion"] == "footage"]
    assert len(footage) == 3
    assert all(shot["native_motion"] and not shot["camera_only"] for shot in footage)
    assert {shot["background"] for shot in footage} == {"cartoon meadow", "city street"}
