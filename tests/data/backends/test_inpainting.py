import numpy as np
import pytest

from kaleido_s2v.data.backends import FluxFillInpainter, PoseVariator
from kaleido_s2v.data.backends.inpainting import pad_to_multiple


# The tiny VAE does not downsample, so the transformer sees one token per 2x2 pixels: keep images small.
@pytest.fixture(scope="module")
def small_cat(chelsea) -> np.ndarray:
    return np.ascontiguousarray(chelsea[::2, ::2])  # (38, 57, 3): odd sizes need padding


@pytest.fixture(scope="module")
def small_astronaut(astronaut) -> np.ndarray:
    return np.ascontiguousarray(astronaut[::2, ::2])  # (64, 64, 3)


@pytest.fixture(scope="module")
def inpainter(flux_fill_dir):
    return FluxFillInpainter.from_pretrained(flux_fill_dir, num_inference_steps=2, max_sequence_length=16)


def ellipse_mask(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    return ((ys - height * 0.45) / (height * 0.3)) ** 2 + ((xs - width * 0.5) / (width * 0.25)) ** 2 <= 1.0


def test_pixels_outside_the_mask_are_the_input_exactly(inpainter, small_cat):
    mask = ellipse_mask(*small_cat.shape[:2])  # 38 x 57: not a multiple of 2, so it is padded
    out = inpainter.inpaint(small_cat, mask, "a photo of a dog", seed=0)
    assert out.shape == small_cat.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], small_cat[~mask])
    assert np.abs(out[mask].astype(int) - small_cat[mask]).mean() > 1.0  # the mask really was repainted


def test_raw_fill_differs_outside_the_mask_so_pasting_back_matters(inpainter, small_cat):
    mask = ellipse_mask(*small_cat.shape[:2])
    raw = inpainter.repaint(small_cat, mask, "a photo of a dog", seed=0)
    assert raw.shape == small_cat.shape
    assert not np.array_equal(raw[~mask], small_cat[~mask])


def test_seeds_reproduce(inpainter, small_astronaut):
    mask = ellipse_mask(*small_astronaut.shape[:2])
    first = inpainter.inpaint(small_astronaut, mask, "a red car", seed=3)
    np.testing.assert_array_equal(first, inpainter.inpaint(small_astronaut, mask, "a red car", seed=3))
    assert not np.array_equal(first, inpainter.inpaint(small_astronaut, mask, "a red car", seed=4))


def test_large_images_are_shrunk_and_restored(flux_fill_dir, small_cat):
    small_side = FluxFillInpainter.from_pretrained(
        flux_fill_dir, num_inference_steps=1, max_side=24, max_sequence_length=16
    )
    mask = np.zeros(small_cat.shape[:2], dtype=bool)
    mask[15:17, 25:27] = True  # a tiny hole survives the shrink (kept by area)
    out = small_side.inpaint(small_cat, mask, "a cat", seed=0)
    assert out.shape == small_cat.shape
    np.testing.assert_array_equal(out[~mask], small_cat[~mask])
    assert not np.array_equal(out[mask], small_cat[mask])


def test_empty_mask_and_bad_masks(inpainter, small_cat):
    empty = np.zeros(small_cat.shape[:2], dtype=bool)
    np.testing.assert_array_equal(inpainter.inpaint(small_cat, empty, "a cat", seed=0), small_cat)
    with pytest.raises(ValueError, match="image size"):
        inpainter.inpaint(small_cat, np.ones((10, 10), dtype=bool), "a cat", seed=0)


def test_pad_to_multiple():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    padded, size = pad_to_multiple(image, 4)
    assert padded.shape == (8, 8, 3) and size == (5, 7)
    np.testing.assert_array_equal(padded[:5, :7], image)
    np.testing.assert_array_equal(padded[7, 7], image[4, 6])  # edge replication
    mask, _ = pad_to_multiple(np.ones((5, 7), dtype=bool), 4)
    assert mask.sum() == 35


def test_pose_variator_returns_a_cutout_on_white(flux_fill_dir, small_cat):
    variator = PoseVariator.from_pretrained(flux_fill_dir, num_inference_steps=2, margin=0.1)
    mask = ellipse_mask(*small_cat.shape[:2])
    image, new_mask = variator.vary(small_cat, mask, seed=0, label="cat")
    assert image.shape == small_cat.shape and image.dtype == np.uint8
    assert new_mask.shape == mask.shape and new_mask.dtype == bool and new_mask.any()
    assert np.all(image[~new_mask] == 255)  # a reference-style cut-out: white outside the subject
    ys, xs = np.nonzero(mask)
    box = np.zeros_like(mask)
    grow_y, grow_x = round((ys.max() + 1 - ys.min()) * 0.1), round((xs.max() + 1 - xs.min()) * 0.1)
    box[
        max(0, ys.min() - grow_y) : ys.max() + 1 + grow_y, max(0, xs.min() - grow_x) : xs.max() + 1 + grow_x
    ] = True
    assert not new_mask[~box].any()  # the new subject stays inside the enlarged subject box
    again, again_mask = variator.vary(small_cat, mask, seed=0, label="cat")
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(new_mask, again_mask)
    with pytest.raises(ValueError, match="empty"):
        variator.vary(small_cat, np.zeros_like(mask), seed=0)
