import numpy as np
import pytest

from kaleido_s2v.data.masks import box_iou, mask_box, mask_iou, rle_decode, rle_encode


@pytest.mark.parametrize("first", [False, True])
def test_rle_round_trip(first):
    rng = np.random.default_rng(1)
    mask = rng.random((13, 7)) > 0.6
    mask[0, 0] = first
    rle = rle_encode(mask)
    assert sum(rle["counts"]) == 13 * 7
    assert (rle["counts"][0] == 0) == first
    np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_rejects_wrong_counts():
    with pytest.raises(ValueError, match="expected 2\\*2=4"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_boxes_and_iou():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:9] = True
    assert mask_box(mask) == (3, 2, 9, 5)
    assert mask_box(np.zeros((3, 3), bool)) is None
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert mask_iou(mask, mask) == 1.0
    assert mask_iou(mask, ~mask) == 0.0
