import json

import numpy as np
import pytest

from kaleido_s2v.data.masks import mask_box, rle_decode
from kaleido_s2v.data.synthetic import COLOURS, GroundTruth, SceneConfig, render_scene, write_scene


def test_deterministic_from_seed():
    a, truth_a = render_scene(SceneConfig(seed=5))
    b, truth_b = render_scene(SceneConfig(seed=5))
    c, _ = render_scene(SceneConfig(seed=6))
    np.testing.assert_array_equal(a, b)
    assert truth_a == truth_b
    assert not np.array_equal(a, c)


def test_ground_truth_matches_the_pixels():
    frames, truth = render_scene(SceneConfig(seed=2, min_subjects=3, max_subjects=3, num_shots=2))
    assert frames.shape == (48, 64, 64, 3) and truth["num_frames"] == 48
    labels = [s["label"] for s in truth["subjects"]]
    assert len(set(labels)) == 3  # distinct identities
    for shot in truth["shots"]:
        for subject in shot["subjects"]:
            assert subject["label"] in shot["caption"]
            phrase = "stays" if subject["motion"] == "stays" else f"moves {subject['motion']}"
            assert f"{subject['label']} {phrase}" in shot["caption"]
            colour = np.array(COLOURS[subject["label"].split()[1]])
            for offset, (box, rle) in enumerate(zip(subject["boxes"], subject["masks"], strict=True)):
                mask = rle_decode(rle)
                assert (list(mask_box(mask)) if mask.any() else None) == box
                if mask.sum() > 10:
                    # visible mask pixels carry the subject's hue (plain colour or its darker pattern)
                    pixels = frames[shot["start"] + offset][mask].astype(float)
                    hue_match = np.corrcoef(pixels.mean(0), colour)[0, 1]
                    assert hue_match > 0.9


def test_motion_matches_caption():
    frames, truth = render_scene(SceneConfig(seed=3, motions=("left", "right", "up", "down")))
    for shot in truth["shots"]:
        for s in shot["subjects"]:
            first, last = np.array(s["boxes"][0], float), np.array(s["boxes"][-1], float)
            dx = (last[0] + last[2] - first[0] - first[2]) / 2
            dy = (last[1] + last[3] - first[1] - first[3]) / 2
            expected = {"left": dx < -5, "right": dx > 5, "up": dy < -5, "down": dy > 5}[s["motion"]]
            assert expected, (s["motion"], dx, dy)


def test_written_scene_has_hard_cuts(tmp_path):
    from kaleido_s2v.data.stages.split import detect_shots

    video, meta = write_scene(tmp_path / "scene", SceneConfig(seed=1, num_shots=3, frames_per_shot=20))
    truth = json.loads(meta.read_text())
    assert [(s["start"], s["end"]) for s in truth["shots"]] == [(0, 20), (20, 40), (40, 60)]
    assert detect_shots(str(video), 27.0, 5, 60) == [(0, 20), (20, 40), (40, 60)]
    gt = GroundTruth.for_video(video)
    assert gt.shot_of(25)["index"] == 1
    assert {s["label"] for s in gt.subjects_at(25)} <= {s["label"] for s in truth["subjects"]}


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="must be even"):
        SceneConfig(width=63)
    with pytest.raises(ValueError, match="subset of"):
        SceneConfig(motions=("sideways",))
    with pytest.raises(ValueError, match="at least two of"):
        SceneConfig(backgrounds=("brick wall",))
    with pytest.raises(ValueError, match="at least two of"):
        SceneConfig(backgrounds=("grey grid", "marble"))


def test_scenes_draw_only_the_configured_backgrounds():
    allowed = ("sand gradient", "dark tiles")
    for seed in range(6):
        _, truth = render_scene(SceneConfig(seed=seed, backgrounds=allowed))
        names = [shot["background"] for shot in truth["shots"]]
        assert set(names) <= set(allowed)
        assert all(a != b for a, b in zip(names[:-1], names[1:], strict=True))  # consecutive shots differ


def test_camera_pan_scrolls_the_background_only():
    still, truth = render_scene(SceneConfig(seed=9, num_shots=1, motions=("stays",)))
    panned, panned_truth = render_scene(
        SceneConfig(seed=9, num_shots=1, motions=("stays",), camera_pan=2.0)
    )  # a brick wall
    assert panned_truth["shots"][0]["subjects"] == truth["shots"][0]["subjects"]  # same subjects, same places
    mask = np.zeros(still.shape[1:3], bool)
    for subject in truth["shots"][0]["subjects"]:
        mask |= rle_decode(subject["masks"][5])
    np.testing.assert_array_equal(panned[5][mask], still[5][mask])
    assert not np.array_equal(panned[5][~mask], panned[0][~mask])  # the background moved
