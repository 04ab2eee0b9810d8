import numpy as np
import pytest
import torch

from kaleido_s2v.data.backends import Detection, SamSegmenter


@pytest.fixture(scope="module", params=["sam", "sam2"])
def segmenter(request, sam_dir, sam2_dir):
    path = {"sam": sam_dir, "sam2": sam2_dir}[request.param]
    loaded = SamSegmenter.from_pretrained(path)
    assert loaded.kind == request.param
    return loaded


def test_segment_shapes_and_determinism(segmenter, chelsea):
    boxes = [(10.0, 5.0, 60.0, 70.0), (40.0, 20.0, 110.0, 74.0)]
    masks = segmenter.segment(chelsea, boxes)
    assert masks.shape == (2, *chelsea.shape[:2]) and masks.dtype == bool
    assert np.array_equal(masks, segmenter.segment(chelsea, boxes))
    # Detections are accepted as boxes, and an image with no boxes gives an empty stack.
    detections = [Detection("cat", boxes[0], 0.9)]
    assert np.array_equal(segmenter.segment(chelsea, detections)[0], masks[0])
    assert segmenter.segment(chelsea, []).shape == (0, *chelsea.shape[:2])


def test_each_box_gets_its_own_mask_in_the_image_frame(segmenter, astronaut):
    masks = segmenter.segment(astronaut, [(0, 0, 40, 40), (80, 80, 128, 128)])
    assert not np.array_equal(masks[0], masks[1])  # prompts reach the decoder box by box


def test_sam2_preprocessing_scales_boxes_to_the_model_frame(sam2_dir, chelsea):
    """Our SAM2 pre-processing must hand the model boxes in its square input frame."""
    segmenter = SamSegmenter.from_pretrained(sam2_dir)
    seen = {}
    original = segmenter.model.forward

    def spy(**inputs):
        seen.update(inputs)
        return original(**inputs)

    segmenter.model.forward = spy
    segmenter.segment(chelsea, [(0, 0, chelsea.shape[1], chelsea.shape[0])])
    size = segmenter.input_size
    assert seen["pixel_values"].shape == (1, 3, size, size)
    assert torch.allclose(seen["input_boxes"][0, 0], torch.tensor([0.0, 0.0, size, size]))
    # Normalised with ImageNet statistics: a white pixel maps to (1 - mean) / std.
    assert seen["pixel_values"].max().item() <= (1 - 0.406) / 0.225 + 1e-4


def test_bad_boxes(segmenter, chelsea):
    with pytest.raises(ValueError, match="x1 <= x0"):
        segmenter.segment(chelsea, [(50, 10, 20, 40)])
    with pytest.raises(ValueError, match="NaN"):
        segmenter.segment(chelsea, [(0, 0, float("nan"), 10)])
    clipped = segmenter.segment(chelsea, [(-20, -20, 500, 500)])  # clipped to the image, still one mask
    assert clipped.shape == (1, *chelsea.shape[:2])


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_pixels_reach_the_model_normalised_with_the_imagenet_mean_and_std(segmenter, monkeypatch):
    """A flat colour stays flat through any resize, so every image pixel the model sees must be exactly
    (colour / 255 - mean) / std per channel, for SAM (its processor) and SAM2 (our pre-processing)."""
    colour = np.array([200, 100, 30])
    image = np.broadcast_to(colour.astype(np.uint8), (48, 80, 3)).copy()
    seen = {}
    original = segmenter.model.forward

    def spy(**inputs):
        seen.update(inputs)
        return original(**inputs)

    monkeypatch.setattr(segmenter.model, "forward", spy)
    segmenter.segment(image, [(10, 10, 40, 30)])
    pixels = seen["pixel_values"].float()
    assert pixels.shape[:2] == (1, 3)
    mean, std = torch.tensor(IMAGENET["mean"]), torch.tensor(IMAGENET["std"])
    expected = (torch.tensor(colour / 255.0, dtype=torch.float32) - mean) / std  # (3,)
    # SAM pads its resized image (longest side 64 -> 64x38) at the bottom; the top rows are image.
    image_part = pixels[0, :, : pixels.shape[2] // 2, :]
    assert torch.allclose(image_part, expected.view(3, 1, 1).expand_as(image_part), atol=1e-4)
