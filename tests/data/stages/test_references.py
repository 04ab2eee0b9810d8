"""Cross-pairing rules (docs/contracts.md#3-cross-pairing-and-procedural-scenes) and reference variants."""

import cv2
import numpy as np
import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.masks import rle_decode
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.samples import iter_samples
from kaleido_s2v.data.stages.frames import decode_frames
from kaleido_s2v.data.stages.references import ReferencesConfig, clean_plate, geometric_pose, padded_box
from kaleido_s2v.data.synthetic import GroundTruth, SceneConfig, render_scene, write_scenes

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
    frames, truth = render_scene(SceneConfig(seed=1, min_subjects=1, max_subjects=1, num_shots=1))
    background = np.median(frames, axis=0)  # the subject moves, so the median is the empty background
    mask = rle_decode(truth["shots"][0]["subjects"][0]["masks"][0])
    plate = clean_plate(frames[0], [mask])
    before = np.abs(frames[0][mask].astype(float) - background[mask]).mean()
    after = np.abs(plate[mask].astype(float) - background[mask]).mean()
    assert after < before / 3


def test_geometric_pose_changes_the_subject():
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
    with pytest.raises(ValueError, match="references.mode"):
        ReferencesConfig(mode="random")


# ------------------------------------------------------------------------------------------------ real footage

LEAK = 8.0  # median |difference| (0..255) under which two backgrounds are the same pixels (H.264 noise)
GT_ALL = {**GT, "caption": {"backend": "ground_truth"}}


def _real_samples(real_footage, run_dir, clip_config, **references) -> list:
    """Export pairs from the real-footage set with ground-truth subjects: 9-frame clips at 8 fps, up
    to 3 per shot (so `same_shot` mode finds partners), subjects matched by label."""
    values = clip_config([real_footage["folder"] / "videos"], run_dir, **GT_ALL)
    values["split"] = {**values["split"], "max_clips_per_shot": 3}
    values["references"] = {"match": "label", **references}
    run_pipeline(config_from_dict(values), progress=False)
    return list(iter_samples(run_dir / "export"))


def _truth(real_footage, sample) -> tuple[str, GroundTruth]:
    """(video name, ground truth) of the real-footage video a sample was cut from."""
    name = sample.meta["source"]["video"].rsplit("-", 1)[0]
    return name, GroundTruth(real_footage["truth"][name])


def _around_subject(truth, subject) -> np.ndarray:
    """(h, w) bool: the reference's pixels more than 2 px away from its subject's true mask."""
    x0, y0, x1, y1 = subject["source"]["crop"]
    masks = {s["label"]: s["mask"] for s in truth.subjects_at(subject["source"]["frame"])}
    near = cv2.dilate(masks[subject["label"]].astype(np.uint8), np.ones((5, 5), np.uint8))
    return near[y0:y1, x0:x1] == 0


def _difference(picture: np.ndarray, frame: np.ndarray, crop: list[int], keep: np.ndarray) -> float:
    """Median |picture - frame's crop| over the `keep` pixels, 0..255."""
    x0, y0, x1, y1 = crop
    return float(np.median(np.abs(frame[y0:y1, x0:x1].astype(int) - picture.astype(int))[keep]))


@pytest.mark.parametrize("mode", ["cross_shot", "same_shot"])
def test_no_reference_carries_the_target_background(real_footage, tmp_path, clip_config, mode):
    """Every reference is `inpainted` (cutouts and poses are on white, see above): each one's background
    is the frame its meta names (checked in the pixels), that frame lies in another true shot than the
    target clip, and at the crop the background matches none of the target clip's frames."""
    samples = _real_samples(real_footage, tmp_path, clip_config, mode=mode, variants=["inpainted"])
    checked = 0
    for sample in samples:
        name, truth = _truth(real_footage, sample)
        target = sample.meta["source"]
        target_shot = truth.shot_of(target["frames"][0])["index"]
        frames, _ = sample.read_video()
        for subject, image in zip(sample.subjects, sample.reference_images(), strict=True):
            source, background = subject["source"], subject["source"]["background"]
            picture, keep = np.asarray(image), _around_subject(truth, subject)
            assert subject["variant"] == "inpainted" and background["clip"] != sample.id
            assert truth.shot_of(background["frame"])["index"] != target_shot
            if mode == "same_shot":
                assert truth.shot_of(source["frame"])["index"] == target_shot
            plate = decode_frames(real_footage["videos"][name], [background["frame"]])[background["frame"]]
            assert _difference(picture, plate, source["crop"], keep) < LEAK
            assert min(_difference(picture, f, source["crop"], keep) for f in frames) > LEAK
            checked += 1
    assert checked >= 10


def test_naive_references_carry_the_target_background(real_footage, tmp_path, clip_config):
    """What `naive` promises, the leak the ablation measures: a box crop of the target's own keyframe."""
    samples = _real_samples(real_footage, tmp_path, clip_config, mode="naive")
    assert len(samples) >= 10
    for sample in samples:
        frames, _ = sample.read_video()
        keyframe = frames[len(frames) // 2]
        for subject, image in zip(sample.subjects, sample.reference_images(), strict=True):
            source = subject["source"]
            assert source["background"] == {k: source[k] for k in ("video", "shot", "frame", "clip")}
            assert source["clip"] == sample.id
            assert source["frame"] == sample.meta["source"]["frames"][len(frames) // 2]
            assert _difference(np.asarray(image), keyframe, source["crop"], np.True_) < 1.0


def test_pose_crop_is_the_subject_box_in_the_source_frame(real_footage, tmp_path, clip_config):
    """meta's `source.crop` of a posed reference is where its subject is in the source frame (padded),
    not where the flipped, rotated copy lies."""
    samples = _real_samples(real_footage, tmp_path, clip_config, variants=["pose"])
    padding = ReferencesConfig().padding
    crops = 0
    for sample in samples:
        _, truth = _truth(real_footage, sample)
        for subject in sample.subjects:
            source = subject["source"]
            boxes = {s["label"]: s["box"] for s in truth.subjects_at(source["frame"])}
            expected = padded_box(
                boxes[subject["label"]], padding, sample.meta["height"], sample.meta["width"]
            )
            assert subject["variant"] == "pose" and source["crop"] == list(expected)
            assert source["background"] is None
            crops += 1
    assert crops >= 10


def test_same_shot_offers_no_inpainted_reference_without_another_shot(tmp_path, clip_config):
    """A single-shot video has no clean plate outside the target's shot: `inpainted` is not drawn."""
    scenes = write_scenes(tmp_path / "one", 1, SceneConfig(seed=2, num_shots=1, frames_per_shot=48))
    summary = _run(
        scenes,
        tmp_path / "run",
        clip_config,
        split={"max_clips_per_shot": 4},
        references={"mode": "same_shot", "match": "label", "variants": ["cutout", "inpainted"]},
    )
    samples = list(iter_samples(tmp_path / "run" / "export"))
    assert samples and len(samples) == len(summary.exported)
    assert {s["variant"] for sample in samples for s in sample.subjects} == {"cutout"}
