"""Pure pieces: caption directions, displacement classes, the no-background rule, letterboxing, swaps."""

import numpy as np
import pytest

from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.motion import classify_displacement, expected_direction, flow_metrics
from kaleido_s2v.evaluation.references import ReferenceImage, has_no_background, letterbox, letterbox_mask
from kaleido_s2v.evaluation.scoring import _attribute_swap, sample_indices
from kaleido_s2v.evaluation.summary import summarise


@pytest.mark.parametrize(
    ("prompt", "label", "single", "expected"),
    [
        ("A cat walks to the left.", "cat", True, "left"),
        ("a dog runs right while the cat stays still", "cat", False, "stays"),
        ("a dog runs right while the cat stays still", "dog", False, "right"),
        ("two birds fly upward and a leaf falls", "leaf", False, "down"),
        ("the red car drives away", "red car", True, None),
        ("a ball goes left then right", "ball", True, None),  # two directions: undecided
        ("it moves up", "ball", True, "up"),  # single subject: the whole prompt
        ("it moves up", "ball", False, None),
    ],
)
def test_expected_direction(prompt, label, single, expected):
    assert expected_direction(prompt, label, single_subject=single) == expected


def test_classify_displacement_uses_five_percent_of_width_for_stays():
    assert classify_displacement(4.9, 0, 100) == "stays"
    assert classify_displacement(5.1, 0, 100) == "right"
    assert classify_displacement(-20, 10, 100) == "left"
    assert classify_displacement(3, -30, 100) == "up"
    assert classify_displacement(3, 30, 100) == "down"


def test_no_background_rule_counts_white_and_transparent_outside_the_subject():
    image = np.full((20, 20, 3), 255, np.uint8)
    subject = np.zeros((20, 20), bool)
    subject[5:15, 5:15] = True
    image[subject] = (200, 0, 0)
    reference = ReferenceImage("x", None, image, transparent=np.zeros((20, 20), bool))
    assert has_no_background(reference, subject)
    image[0, :] = (0, 0, 0)  # 20 of 300 outside pixels: 93% blank
    assert not has_no_background(reference, subject)
    reference.transparent[0, :] = True  # transparent pixels count as blank whatever their colour
    assert has_no_background(reference, subject)
    image[1, :] = (245, 245, 245)  # within 10/255 of white
    assert has_no_background(reference, subject, tolerance=10)
    assert not has_no_background(reference, subject, tolerance=5)


def test_letterbox_matches_spec_section_3_geometry():
    image = np.zeros((50, 100, 3), np.uint8)
    boxed = letterbox(image, 96, 128)
    assert boxed.shape == (96, 128, 3)
    assert (boxed[:16] == 255).all() and (boxed[16:80] == 0).all() and (boxed[80:] == 255).all()
    mask, inside = letterbox_mask(np.ones((50, 100), bool), 96, 128)
    assert mask.sum() == inside.sum() == 64 * 128 and not inside[:16].any()


def test_attribute_swap_needs_both_subjects_exchanged_in_half_the_frames():
    # (R=2, N=4, R=2): crop of subject r in frame f vs reference j.
    swapped = np.array([[[0.2, 0.9]] * 4, [[0.8, 0.3]] * 4])
    assert _attribute_swap(swapped)
    one_sided = np.array([[[0.2, 0.9]] * 4, [[0.3, 0.8]] * 4])
    assert not _attribute_swap(one_sided)
    half = swapped.copy()
    half[:, :2] = np.array([[0.9, 0.2], [0.3, 0.8]])
    assert _attribute_swap(half)
    half[:, 2] = np.array([[0.9, 0.2], [0.3, 0.8]])
    assert not _attribute_swap(half)


def test_sample_indices_and_config_validation():
    assert sample_indices(81, 5) == [0, 20, 40, 60, 80]
    assert sample_indices(3, 16) == [0, 1, 2]
    with pytest.raises(ValueError, match="0 frames"):
        sample_indices(0, 4)
    with pytest.raises(ValueError, match="backend"):
        EvalConfig(backend="gpt")
    assert EvalConfig().fingerprint() == EvalConfig(device="cuda").fingerprint()
    assert EvalConfig().fingerprint() != EvalConfig(num_frames=8).fingerprint()


def test_flow_metrics_of_a_one_frame_video_are_none_and_a_shift_is_measured():
    assert flow_metrics(np.zeros((1, 32, 32, 3), np.uint8)) == (None, None)
    rng = np.random.default_rng(0)
    texture = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    import cv2

    texture = cv2.GaussianBlur(texture, (0, 0), 2)
    frames = np.stack([np.roll(texture, 2 * t, axis=1) for t in range(6)])
    amplitude, smoothness = flow_metrics(frames, width=96)
    assert amplitude == pytest.approx(2 / 96, rel=0.3)
    assert smoothness > 0.95


def test_summary_leaves_null_decoupling_out_and_counts_each_reason(tmp_path):
    from kaleido_s2v.evaluation.scoring import SubjectScore, VideoScore

    def subject(decoupling, found=True):
        return SubjectScore(
            label="x",
            consistency=0.5,
            presence=1.0,
            identity_correct=True,
            copy_paste=0.0,
            decoupling=decoupling,
            no_background=decoupling is None and found,
            subject_found=found,
            expected_direction=None,
            observed_direction=None,
            motion_correct=None,
        )

    def video(subjects):
        return VideoScore(
            case_id="c",
            video="v",
            backend="offline",
            num_frames=9,
            width=64,
            height=64,
            sampled_frames=[0],
            subjects=subjects,
            consistency=0.5,
            presence=1.0,
            decoupling=None,
            no_background_references=0,
            subject_not_found_references=0,
            identity_accuracy=1.0,
            attribute_swap=None,
            motion_accuracy=None,
            copy_paste=0.0,
            motion_amplitude=0.0,
            motion_smoothness=1.0,
            text_alignment=None,
            aesthetics=None,
        )

    summary = summarise(
        [video([subject(None), subject(0.4)]), video([subject(0.8), subject(None, found=False)])]
    )
    assert summary["decoupling"] == {
        "mean": pytest.approx(0.6),
        "n": 2,
        "no_background_references": 1,
        "subject_not_found_references": 1,
    }
    assert summary["attribute_swap_rate"] == {"mean": None, "n": 0}
    assert summary["text_alignment"]["mean"] is None


def test_16_bit_grey_reference_keeps_its_grey_and_so_its_background(tmp_path):
    from PIL import Image

    from kaleido_s2v.evaluation.references import load_reference

    grey = np.full((20, 20), 32768, np.uint16)  # mid-grey background ...
    grey[5:15, 5:15] = 0  # ... around a black subject
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    reference = load_reference(tmp_path / "grey16.png", "box")
    assert reference.image.shape == (20, 20, 3) and reference.image.dtype == np.uint8
    assert reference.image[0, 0].tolist() == [128, 128, 128] and not reference.has_alpha
    subject = grey == 0
    assert not has_no_background(reference, subject)  # read as 99.7% white it had "no background"
