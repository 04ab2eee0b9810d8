import dataclasses

import numpy as np
import pytest

from kaleido_s2v.data.backends import Detection, GroundingDinoDetector
from kaleido_s2v.data.backends.detection import labels_to_prompt


@pytest.fixture(scope="module")
def detector_all(gdino_dir):
    # Thresholds 0: every query passes, so the shapes and label assignment are exercised.
    return GroundingDinoDetector.from_pretrained(gdino_dir, box_threshold=0.0, text_threshold=0.0)


def test_labels_to_prompt_spans_point_at_each_label():
    prompt, spans = labels_to_prompt(["Cat", "red  car."])
    assert prompt == "cat. red car."
    assert [prompt[a:b] for a, b in spans] == ["cat", "red car"]
    with pytest.raises(ValueError, match="empty"):
        labels_to_prompt(["cat", "  "])


def test_detect_returns_boxes_inside_the_image_with_requested_labels(detector_all, astronaut):
    labels = ["person", "red car"]
    detections = detector_all.detect(astronaut, labels)
    assert len(detections) == detector_all.model.config.num_queries  # threshold 0 keeps every query
    height, width = astronaut.shape[:2]
    for detection in detections:
        assert isinstance(detection, Detection)
        assert detection.label in labels
        x0, y0, x1, y1 = detection.box
        assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        assert 0.0 <= detection.score <= 1.0
    scores = [d.score for d in detections]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        detections[0].score = 2.0


def test_detect_is_deterministic_and_follows_box_coordinates(detector_all, astronaut, chelsea):
    first = detector_all.detect(astronaut, ["person"])
    assert first == detector_all.detect(astronaut, ["person"])
    # A non-square image: boxes are in its own pixel frame, not the processor's resized one.
    for detection in detector_all.detect(chelsea, ["cat"]):
        assert detection.box[2] <= chelsea.shape[1] and detection.box[3] <= chelsea.shape[0]
        assert detection.label == "cat"


def test_thresholds_filter(gdino_dir, astronaut):
    strict = GroundingDinoDetector.from_pretrained(gdino_dir, box_threshold=1.0, text_threshold=0.0)
    assert strict.detect(astronaut, ["person"]) == []
    default = GroundingDinoDetector.from_pretrained(gdino_dir)
    assert (default.box_threshold, default.text_threshold) == (0.35, 0.25)
    assert all(d.score > 0.35 for d in default.detect(astronaut, ["person", "flag"]))
    with pytest.raises(ValueError, match="box_threshold"):
        GroundingDinoDetector.from_pretrained(gdino_dir, box_threshold=1.5)


def test_bad_inputs(detector_all, astronaut):
    assert detector_all.detect(astronaut, []) == []
    with pytest.raises(TypeError, match="list of strings"):
        detector_all.detect(astronaut, "person")
    with pytest.raises(ValueError, match="uint8"):
        detector_all.detect(astronaut.astype(np.float32), ["person"])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector_all.detect(astronaut[..., 0], ["person"])


def test_non_maximum_suppression_is_per_label():
    from kaleido_s2v.data.backends.detection import box_iou, non_maximum_suppression

    a = Detection("cat", (0.0, 0.0, 10.0, 10.0), 0.9)
    b = Detection("cat", (1.0, 1.0, 10.0, 10.0), 0.8)  # IoU 0.81 with a
    c = Detection("dog", (1.0, 1.0, 10.0, 10.0), 0.7)  # same place, other label: kept
    d = Detection("cat", (20.0, 20.0, 30.0, 30.0), 0.6)
    assert box_iou(a.box, b.box) == pytest.approx(81 / 100)
    assert non_maximum_suppression([d, c, b, a], 0.5) == [a, c, d]
    assert non_maximum_suppression([a, b], 0.9) == [a, b]


def test_detector_nms_option(gdino_dir, astronaut):
    plain = GroundingDinoDetector.from_pretrained(gdino_dir, box_threshold=0.0, text_threshold=0.0)
    suppressed = GroundingDinoDetector.from_pretrained(
        gdino_dir, box_threshold=0.0, text_threshold=0.0, nms_iou=0.0
    )
    everything = plain.detect(astronaut, ["person"])
    kept = suppressed.detect(astronaut, ["person"])
    assert 1 <= len(kept) <= len(everything) and set(kept) <= set(everything)
    from kaleido_s2v.data.backends.detection import box_iou

    assert all(box_iou(x.box, y.box) == 0.0 for i, x in enumerate(kept) for y in kept[i + 1 :])


def test_labels_with_inner_periods(detector_all, astronaut):
    labels = ["mr. smith", "st. bernard dog"]
    assert {d.label for d in detector_all.detect(astronaut, labels)} <= set(labels)
