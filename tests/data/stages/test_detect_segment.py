"""Offline detect/segment against the procedural scenes' exact ground truth."""

import numpy as np
import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.manifest import Manifest, decode_row
from kaleido_s2v.data.masks import box_iou, mask_iou, rle_decode
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.synthetic import GroundTruth


def _ious(run_dir):
    rows = {(k[0], k[1]): decode_row(r) for k, r in Manifest(run_dir).rows.items()}
    clips = {c["id"]: c for (_, stage), r in rows.items() if stage == "split" for c in r["data"]["clips"]}
    box_scores, mask_scores = [], []
    for (item, stage), row in rows.items():
        if stage != "segment" or row["status"] != "ok":
            continue
        detections = rows[(item, "detect")]["data"]
        truth = GroundTruth.for_video(clips[item]["source"]).subjects_at(detections["source_frame"])
        for subject in truth:  # each true subject against its best-overlapping detection
            boxes = [d["box"] for d in detections["detections"]]
            best = int(np.argmax([box_iou(b, subject["box"]) for b in boxes]))
            box_scores.append(box_iou(boxes[best], subject["box"]))
            mask_scores.append(mask_iou(rle_decode(row["data"]["masks"][best]), subject["mask"]))
    return np.array(box_scores), np.array(mask_scores)


@pytest.fixture(scope="module")
def offline_run(easy_scenes, tmp_path_factory, clip_config):
    run_dir = tmp_path_factory.mktemp("offline_run")
    run_pipeline(config_from_dict(clip_config([easy_scenes], run_dir)), progress=False)
    return run_dir


def test_offline_detect_and_segment_reach_the_floor(offline_run):
    boxes, masks = _ious(offline_run)
    assert len(boxes) >= 15  # every subject of every clip was scored
    print(
        f"offline IoU on the easy set: box mean {boxes.mean():.3f} median {np.median(boxes):.3f}, "
        f"mask mean {masks.mean():.3f} median {np.median(masks):.3f} over {len(boxes)} subjects"
    )
    assert boxes.mean() >= 0.8 and masks.mean() >= 0.8
    assert np.median(masks) >= 0.8


def test_ground_truth_backends_are_exact(easy_scenes, tmp_path, clip_config):
    config = clip_config(
        [easy_scenes], tmp_path, detect={"backend": "ground_truth"}, segment={"backend": "ground_truth"}
    )
    run_pipeline(config_from_dict(config), progress=False)
    boxes, masks = _ious(tmp_path)
    assert boxes.min() == 1.0 and masks.min() == 1.0


def test_static_video_has_no_subject(tmp_path):
    from kaleido_s2v.common.video_io import write_video
    from kaleido_s2v.data.stages.base import Context
    from kaleido_s2v.data.stages.detect import DetectConfig, DetectStage

    frames = np.tile(np.linspace(60, 200, 64, dtype=np.uint8)[None, None, :, None], (20, 64, 1, 3))
    write_video(tmp_path / "clip.mp4", frames, fps=8)
    item = {
        "id": "c",
        "source": str(tmp_path / "clip.mp4"),
        "clip": "clip.mp4",
        "source_frames": list(range(9)),
        "shot_range": [0, 20],
        "width": 64,
        "height": 64,
    }
    context = Context(run_dir=tmp_path, artifact_dir=tmp_path, upstream={"caption": {"subjects": []}})
    result = DetectStage(DetectConfig()).run(item, context)
    assert (result.status, result.reason) == ("rejected", "no_subject")


def test_face_detector_finds_the_astronaut():
    from skimage import data

    from kaleido_s2v.data.stages.detect import detect_faces

    faces = detect_faces(data.astronaut())
    assert any(x0 <= 235 <= x1 and y0 <= 110 <= y1 for x0, y0, x1, y1 in faces)
    assert detect_faces(np.full((64, 64, 3), 128, np.uint8)) == []


def test_grabcut_recovers_a_disc():
    from kaleido_s2v.data.stages.segment import grabcut

    yy, xx = np.mgrid[0:64, 0:64]
    disc = (yy - 30) ** 2 + (xx - 34) ** 2 <= 14**2
    image = np.where(disc[..., None], [200, 40, 40], [90, 140, 80]).astype(np.uint8)
    mask = grabcut(image, (16, 12, 52, 48), None, 5)
    assert mask_iou(mask, disc) > 0.95
