"""The offline `motion` detector, `grabcut` clean-up and the filter's motion rules on small frames:
residual motion under a moving camera, subjects split apart, faces kept with their person."""

import cv2
import numpy as np
import pytest
from skimage import data

from kaleido_s2v.common.video_io import write_video
from kaleido_s2v.data.mask_cleanup import solid_subject
from kaleido_s2v.data.masks import mask_iou, rle_encode
from kaleido_s2v.data.stages.base import Context
from kaleido_s2v.data.stages.detect import (
    DetectConfig,
    DetectStage,
    attach_faces,
    motion_regions,
    moving_subjects,
)
from kaleido_s2v.data.stages.filter import FilterConfig, FilterStage

HEIGHT, WIDTH = 96, 128


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.GaussianBlur(data.astronaut(), (0, 0), 1.0)


def _item(tmp_path, frames: np.ndarray) -> dict:
    """A clip item whose clip is the whole video, its source too."""
    write_video(tmp_path / "clip.mp4", frames, fps=8)
    return {
        "id": "c",
        "source": str(tmp_path / "clip.mp4"),
        "clip": "clip.mp4",
        "source_frames": list(range(len(frames))),
        "shot_range": [0, len(frames)],
        "width": frames.shape[2],
        "height": frames.shape[1],
    }


def test_a_camera_only_pan_yields_no_subject_and_records_its_motion(tmp_path, photo):
    frames = np.stack([photo[100:196, 100 + 2 * t : 228 + 2 * t] for t in range(20)])  # 2 px a frame
    item = _item(tmp_path, frames)
    context = Context(run_dir=tmp_path, artifact_dir=tmp_path, upstream={"caption": {"subjects": []}})
    result = DetectStage(DetectConfig()).run(item, context)
    assert (result.status, result.reason) == ("rejected", "no_subject")
    motion = result.data["camera_motion"]
    assert np.allclose(motion["translation_px"], (-38, 0), atol=1.0)  # over the clip's 19 steps
    assert motion["scale"] == pytest.approx(1.0, abs=0.02)


def _touching_subjects(photo: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """17 frames of two textured discs over a still photo, moving apart 4 px a frame each; they touch
    in frame 8. Returns (frames (17, H, W, 3), [mask of each disc at frame 8])."""
    background = photo[200 : 200 + HEIGHT, 150 : 150 + WIDTH]
    yy, xx = np.mgrid[0:28, 0:28]
    disc = (yy - 13.5) ** 2 + (xx - 13.5) ** 2 <= 13.5**2
    patches = [data.chelsea()[150:178, 150:178], data.coffee()[100:128, 250:278]]
    frames, masks = [], []
    for t in range(17):
        frame = background.copy()
        placed = []
        for patch, x in zip(patches, (40 + 4 * (t - 8), 66 - 4 * (t - 8)), strict=True):
            frame[34:62, x : x + 28][disc] = patch[disc]
            full = np.zeros((HEIGHT, WIDTH), bool)
            full[34:62, x : x + 28] = disc
            placed.append(full)
        frames.append(frame)
        masks.append(placed)
    return np.stack(frames), masks[8]


def test_touching_subjects_that_move_apart_are_two_subjects(photo):
    frames, truth = _touching_subjects(photo)
    key = frames[8]
    difference = np.abs(key.astype(np.int16) - np.median(frames, axis=0)).max(axis=-1)
    assert len(motion_regions(difference, 30, 0.004)) == 1  # one merged region, before the split
    found = moving_subjects(frames, key, 30, 0.004, 0.5)
    assert len(found) == 2
    for true_mask in truth:  # each disc has a region of its own, holding (almost) nothing of the other
        mask = max(found, key=lambda m: mask_iou(m, true_mask))
        assert mask_iou(mask, true_mask) >= 0.5 and (mask & true_mask).sum() / mask.sum() >= 0.95


def test_a_face_inside_a_subject_is_its_attribute_not_a_subject():
    person = {"label": "person", "box": [10.0, 10.0, 60.0, 120.0], "score": 0.2}
    faces = [[25.0, 12.0, 45.0, 32.0], [100.0, 10.0, 120.0, 30.0], [55.0, 10.0, 75.0, 30.0]]
    out = attach_faces([person], faces)
    assert out[0]["faces"] == [faces[0]]
    assert [d["box"] for d in out[1:]] == [faces[1], faces[2]]  # outside, and mostly outside
    assert all(d["label"] == "face" for d in out[1:]) and "faces" not in person


def test_solid_subject_joins_stripes_drops_islands_and_fills_holes():
    yy, xx = np.mgrid[0:64, 0:64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 <= 20**2
    striped = disc & ((xx + yy) // 3 % 3 != 0)  # GrabCut's cut of a striped subject
    striped[2:5, 2:5] = True  # an island of the subject's colours elsewhere
    striped[30:34, 30:34] = False  # a hole
    solid = solid_subject(striped)
    assert mask_iou(solid, disc) > 0.95 and not solid[3, 3]
    assert not solid_subject(np.zeros((8, 8), bool)).any()


def _filter_context(tmp_path, camera: dict, mask: np.ndarray, hint: np.ndarray) -> tuple[dict, Context]:
    frames = np.stack([data.astronaut()[100 : 100 + HEIGHT, 100 : 100 + WIDTH]] * 9)
    item = _item(tmp_path, frames)
    detection = {"label": "object", "box": [30.0, 20.0, 90.0, 80.0], "score": 0.3, "hint": rle_encode(hint)}
    upstream = {
        "detect": {"keyframe": 4, "source_frame": 4, "detections": [detection], "camera_motion": camera},
        "segment": {"masks": [rle_encode(mask)], "areas": [int(mask.sum())]},
    }
    return item, Context(run_dir=tmp_path, artifact_dir=tmp_path, upstream=upstream)


STILL = {"model": "similarity", "translation_px": [0.0, 0.0], "scale": 1.0, "rotation_deg": 0.0}


def test_a_mask_mostly_outside_its_motion_region_is_dropped_as_background(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[20:80, 30:90] = True
    inside = np.zeros_like(mask)
    inside[20:80, 30:60] = True  # half of the mask moved
    stage = FilterStage(FilterConfig(require_face_for_people=False))
    kept = stage.run(*_filter_context(tmp_path / "half", STILL, mask, inside))
    assert kept.status == "ok" and len(kept.data["subjects"]) == 1
    assert kept.data["quality"]["camera_travel"] == 0.0
    inside[:, 50:] = False  # now a third
    dropped = stage.run(*_filter_context(tmp_path / "third", STILL, mask, inside))
    assert (dropped.status, dropped.reason) == ("rejected", "no_subject_kept")
    assert dropped.data["rejected_subjects"] == [{"label": "object", "reason": "mostly_background"}]


def test_a_clip_whose_camera_travels_too_far_is_rejected(tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[20:80, 30:90] = True
    fast = {**STILL, "translation_px": [0.6 * 160, 0.0]}  # 96 px of a 160 px diagonal
    result = FilterStage(FilterConfig()).run(*_filter_context(tmp_path, fast, mask, mask))
    assert (result.status, result.reason) == ("rejected", "camera_motion")
    assert result.data["quality"]["camera_travel"] == pytest.approx(0.6)
