"""Cross-pairing rules (docs/contracts.md#3-cross-pairing-and-procedural-scenes) and reference variants."""

import numpy as np
import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.samples import iter_samples
from kaleido_s2v.data.synthetic import SceneConfig, write_scenes

GT = {"detect": {"backend": "ground_truth"}, "segment": {"backend": "ground_truth"}}


def _run(inputs, run_dir, clip_config, **overrides):
    values = clip_config(inputs, run_dir, **GT)
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value}
    return run_pipeline(config_from_dict(values), progress=False)


def test_cross_pairs_never_take_the_target_shot(easy_scenes, tmp_path, clip_config):
    summary = _run([easy_scenes], tmp_path, clip_config, references={"match": "label"})
    samples = list(iter_samples(tmp_path / "export"))
    assert len(samples) == len(summary.exported) >= 6
    for sample in samples:
        target = sample.meta["source"]
        assert sample.subjects and len(sample.subjects) == len(sample.references)
        for subject in sample.subjects:
            assert subject["source"]["video"] == target["video"]
            assert subject["source"]["shot"] != target["shot"]
            assert subject["source"]["frame"] not in target["frames"]
            assert subject["label"] in sample.caption  # matched by label to a subject of the target clip


def test_naive_pairs_crop_the_target_clip(easy_scenes, tmp_path, clip_config):
    _run([easy_scenes], tmp_path, clip_config, references={"mode": "naive"})
    samples = list(iter_samples(tmp_path / "export"))
    assert samples
    for sample in samples:
        frames, _ = sample.read_video()
        keyframe = frames[len(frames) // 2]
        for subject, image in zip(sample.subjects, sample.reference_images(), strict=True):
            assert subject["variant"] == "naive" and subject["source"]["clip"] == sample.id
            crop = np.asarray(image)
            # the crop keeps its background: it is a window of the target keyframe, not white
            assert (crop.reshape(-1, 3) == 255).all(axis=1).mean() < 0.5
            h, w = crop.shape[:2]
            windows = [
                np.abs(keyframe[y : y + h, x : x + w].astype(int) - crop).mean()
                for y in range(keyframe.shape[0] - h + 1)
                for x in range(keyframe.shape[1] - w + 1)
            ]
            assert min(windows) < 1.0


def test_same_shot_mode_keeps_the_gap(tmp_path, clip_config):
    scenes = write_scenes(
        tmp_path / "long", 2, SceneConfig(seed=4, num_shots=2, frames_per_shot=48, motions=("left", "right"))
    )
    gap = 8
    summary = _run(
        scenes,
        tmp_path / "run",
        clip_config,
        split={"max_clips_per_shot": 4},
        references={"mode": "same_shot", "min_gap_frames": gap, "match": "label"},
    )
    samples = list(iter_samples(tmp_path / "run" / "export"))
    assert samples and len(summary.exported) == len(samples)
    for sample in samples:
        target = sample.meta["source"]
        for subject in sample.subjects:
            assert subject["source"]["shot"] == target["shot"] and subject["source"]["clip"] != sample.id
            frame = subject["source"]["frame"]
            assert frame < min(target["frames"]) - gap or frame > max(target["frames"]) + gap


def test_single_shot_video_has_no_cross_pair(tmp_path, clip_config):
    scenes = write_scenes(tmp_path / "one", 1, SceneConfig(seed=2, num_shots=1, motions=("left",)))
    summary = _run(scenes, tmp_path / "run", clip_config)
    assert summary.exported == []
    assert summary.funnel["references"]["dropped"] == {"rejected:no_cross_pair": 1}


def test_variants_are_drawn_from_the_seed_and_reproduce(easy_scenes, tmp_path, clip_config):
    first = _run([easy_scenes], tmp_path / "a", clip_config, references={"match": "label"})
    second = _run([easy_scenes], tmp_path / "b", clip_config, references={"match": "label"})
    a = {s.id: s for s in iter_samples(tmp_path / "a" / "export")}
    b = {s.id: s for s in iter_samples(tmp_path / "b" / "export")}
    assert a.keys() == b.keys() == set(first.exported) == set(second.exported)
    variants = []
    for key in a:
        assert [s["variant"] for s in a[key].subjects] == [s["variant"] for s in b[key].subjects]
        assert [np.asarray(i).tolist() for i in a[key].reference_images()] == [
            np.asarray(i).tolist() for i in b[key].reference_images()
        ]
        for subject, image in zip(a[key].subjects, a[key].reference_images(), strict=True):
            variants.append(subject["variant"])
            pixels = np.asarray(image)
            corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
            if subject["variant"] in ("cutout", "pose"):
                assert (corners == 255).all()  # on white
            else:
                assert subject["variant"] == "inpainted" and subject["backend"] == "opencv"
                assert not (corners == 255).all()  # composited on another shot's clean plate
    assert set(variants) == {"cutout", "inpainted", "pose"}


def test_clean_plate_removes_the_subject():
    from kaleido_s2v.data.stages.references import clean_plate
    from kaleido_s2v.data.synthetic import render_scene

    frames, truth = render_scene(SceneConfig(seed=1, min_subjects=1, max_subjects=1, num_shots=1))
    background = np.median(frames, axis=0)  # the subject moves, so the median is the empty background
    from kaleido_s2v.data.masks import rle_decode

    mask = rle_decode(truth["shots"][0]["subjects"][0]["masks"][0])
    plate = clean_plate(frames[0], [mask])
    before = np.abs(frames[0][mask].astype(float) - background[mask]).mean()
    after = np.abs(plate[mask].astype(float) - background[mask]).mean()
    assert after < before / 3


def test_geometric_pose_changes_the_subject():
    from kaleido_s2v.data.stages.references import geometric_pose

    image = np.full((32, 32, 3), 255, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:12] = True
    image[mask] = (200, 0, 0)
    posed, posed_mask = geometric_pose(image, mask, np.random.default_rng(3))
    assert posed.shape == image.shape and posed_mask.any()
    assert not np.array_equal(posed_mask, mask)
    again, _ = geometric_pose(image, mask, np.random.default_rng(3))
    np.testing.assert_array_equal(posed, again)


def test_bad_mode_is_a_clear_error():
    from kaleido_s2v.data.stages.references import ReferencesConfig

    with pytest.raises(ValueError, match="references.mode"):
        ReferencesConfig(mode="random")
