"""The offline backend with a reference that has a photo background: it finds the identical subject."""

import cv2
import numpy as np
from PIL import Image
from skimage import data

from kaleido_s2v.common.cases import Case, CaseReference
from kaleido_s2v.data.synthetic import Identity, sprite
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.offline import interior, reference_seeds
from kaleido_s2v.evaluation.scoring import score_video

SIDE = 40  # the subject's side, pixels


def _photo(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def test_a_reference_on_a_photo_background_finds_its_subject(tmp_path):
    """A striped orange star pasted in the middle of the espresso photo (whose orange-brown saucer and
    white cup GrabCut takes in with it) is the reference; the video shows the same star crossing the cat
    photo. Before matching on the interior it was found in 4 of 16 sampled frames."""
    pixels, mask = sprite(Identity("star", "orange", "striped"), SIDE)
    margin = 14
    reference = _photo(data.coffee(), SIDE + 2 * margin, SIDE + 2 * margin)
    reference[margin : margin + SIDE, margin : margin + SIDE][mask] = pixels[mask]
    Image.fromarray(reference).save(tmp_path / "star.png")

    background, frames, boxes = _photo(data.chelsea(), 120, 160), [], []
    ys, xs = np.nonzero(mask)
    for t in range(32):
        x, y = round(8 + (160 - SIDE - 16) * t / 31), (120 - SIDE) // 2 + int(10 * np.sin(t / 5))
        frame = background.copy()
        frame[y : y + SIDE, x : x + SIDE][mask] = pixels[mask]
        frames.append(frame)
        boxes.append((x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1))
    case = Case(id="star", prompt="a star", references=[CaseReference(tmp_path / "star.png", "star")])
    score = score_video(np.stack(frames), case, EvalConfig(num_frames=16))

    subject = score.subjects[0]
    found = [
        box is not None and _box_iou(box, boxes[f]) >= 0.5
        for box, f in zip(subject.boxes, score.sampled_frames, strict=True)
    ]
    assert len(found) == 16 and sum(found) >= 14, subject.boxes
    assert not subject.no_background  # the reference does have a background


def test_reference_seeds_anchor_the_centre_and_give_up_the_border():
    import cv2 as cv

    seeds = reference_seeds(50, 40)
    assert (seeds[:5] == cv.GC_BGD).all() and (seeds[:, :4] == cv.GC_BGD).all()
    assert seeds[25, 20] == cv.GC_FGD and seeds[10, 10] == cv.GC_PR_FGD


def test_interior_is_the_central_ellipse_of_the_mask():
    mask = np.zeros((100, 100), bool)
    mask[10:90, 20:80] = True
    inner = interior(mask)
    assert inner[50, 50] and not inner[12, 22] and not (inner & ~mask).any()
    assert 0.2 < inner.sum() / mask.sum() < 0.35  # pi/4 * 0.6**2 of the box
    assert np.array_equal(interior(np.zeros((5, 5), bool)), np.zeros((5, 5), bool))
