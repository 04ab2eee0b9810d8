"""Camera motion (kaleido_s2v.data.camera_motion): a pan or zoom is measured, a subject moving before a
still camera is not mistaken for one."""

import cv2
import numpy as np
import pytest
from skimage import data

from kaleido_s2v.data.camera_motion import CameraMotion, align_to, clip_camera_motion, frame_motion

SIZE = (160, 120)  # (width, height)


def _view(photo: np.ndarray, x: float, y: float, zoom: float = 1.0) -> np.ndarray:
    """A (120, 160) view of `photo` whose top-left corner is (x, y) in photo pixels, magnified `zoom`."""
    matrix = np.array([[zoom, 0, -x * zoom], [0, zoom, -y * zoom]])
    return cv2.warpAffine(photo, matrix, SIZE, flags=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.GaussianBlur(data.astronaut(), (0, 0), 1.0)


def test_a_pan_is_measured_about_the_frame_centre(photo):
    before, after = _view(photo, 100, 80), _view(photo, 103, 78)  # the window moves right and up
    motion = CameraMotion.from_matrix(frame_motion(before, after), *SIZE)
    assert np.allclose(motion.translation_px, (-3, 2), atol=0.2)  # the scene moves the other way
    assert motion.scale == pytest.approx(1.0, abs=0.01) and abs(motion.rotation_deg) < 0.3


def test_a_slow_zoom_adds_up_over_a_clip(photo):
    """1 % a frame is under a pixel a frame at the corners; chained over 20 frames it is 22 %."""
    zooms = 1.01 ** np.arange(21)
    frames = np.stack([_view(photo, 280 - 80 / z, 210 - 60 / z, z) for z in zooms])  # about (280, 210)
    motion = clip_camera_motion(frames, analysis_side=480)
    assert motion.scale == pytest.approx(1.01**20, rel=0.02)
    assert np.allclose(motion.translation_px, (0, 0), atol=1.5)
    assert 0.1 < motion.travel(*SIZE) < 0.2


def test_a_subject_moving_before_a_still_camera_is_not_camera_motion(photo):
    background = _view(photo, 100, 80)
    patch = np.ascontiguousarray(photo[300:340, 300:340])  # textured, so it carries many corners
    frames = []
    for t in range(6):
        frame = background.copy()
        frame[40:80, 20 + 4 * t : 60 + 4 * t] = patch
        frames.append(frame)
    assert np.array_equal(frame_motion(frames[0], frames[1]), np.eye(3))
    aligned, anchor = align_to(np.stack(frames), frames[3])
    assert anchor == 3 and not np.isnan(aligned).any()  # a still camera: every frame covers every pixel


def test_subjects_over_a_plain_background_are_not_camera_motion():
    """Only the subjects carry corners; two moving apart fit a similarity as a rotation."""
    plain = np.broadcast_to(np.linspace(180, 120, 120)[:, None, None], (120, 160, 3)).astype(np.uint8)
    patch = np.ascontiguousarray(data.astronaut()[200:230, 200:230])
    frames = []
    for t in range(2):
        frame = plain.copy()
        frame[10:40, 10 + 3 * t : 40 + 3 * t] = patch
        frame[80:110, 120 - 3 * t : 150 - 3 * t] = patch
        frames.append(frame)
    assert np.array_equal(frame_motion(*frames), np.eye(3))


def test_travel_and_json_round_trip():
    motion = CameraMotion((30.0, 40.0), 1.0, 0.0)
    assert motion.travel(160, 120) == pytest.approx(50 / 200)
    assert CameraMotion.from_json(motion.to_json()) == motion
    assert motion.to_json()["model"] == "similarity"
    assert CameraMotion((0.0, 0.0), 1.2, 0.0).travel(160, 120) == pytest.approx(0.1)  # corners 20 px out
