"""The offline pipeline on the fixed real-footage set (tests/data/real_footage.py): no background patch
becomes a subject, pasted subjects are found whole and apart, references are cut out clean.

How each figure is counted, at every clip's keyframe (one clip per shot of 2 s or more):
- a true subject is a pasted one whose visible mask covers at least `filter.min_area` (1 %) of the
  frame; a kept subject (the `filter` stage's) matches it at mask IoU >= 0.5;
- recall: true subjects matched / true subjects; precision: kept subjects that match / kept subjects,
  where a kept subject in a footage shot that matches nothing is not counted (that footage moves on
  its own, unannotated: a cyclist is a subject, not an error);
- a reference is real when its source subject matches a pasted subject in its source frame;
- a cut-out's or pose's subject-pixel share: the share of its source mask's pixels that are pasted
  subject pixels (what the reference shows on white).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kaleido_s2v.data.config import load_config
from kaleido_s2v.data.manifest import Manifest
from kaleido_s2v.data.masks import mask_iou, rle_decode
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.stages.references import padded_box
from kaleido_s2v.data.synthetic import GroundTruth

OFFLINE = Path(__file__).parents[2] / "configs" / "data" / "offline.yaml"
MATCH_IOU = 0.5


@pytest.fixture(scope="module")
def run(real_footage, tmp_path_factory) -> dict:
    """One offline run over the set: {"config", "rows": {(item, stage): row with decoded data}, "clips"}."""
    run_dir = tmp_path_factory.mktemp("real_footage_run")
    overrides = {"inputs": [str(real_footage["folder"] / "videos")], "run_dir": str(run_dir), "workers": 1}
    config = load_config(OFFLINE, overrides)
    run_pipeline(config, progress=False)
    rows = {}
    for row in Manifest(run_dir).rows.values():
        rows[(row["item_id"], row["stage"])] = {**row, "data": json.loads(row["data"] or "{}")}
    clips = {c["id"]: c for (_, stage), r in rows.items() if stage == "split" for c in r["data"]["clips"]}
    return {"config": config, "rows": rows, "clips": clips}


def _keyframe(clip: dict) -> int:
    return clip["source_frames"][len(clip["source_frames"]) // 2]


def _kept(run: dict, clip_id: str) -> list[dict]:
    row = run["rows"].get((clip_id, "filter"))
    return row["data"]["subjects"] if row and row["status"] == "ok" else []


def _matches(run: dict) -> tuple[list[float], int, int, int]:
    """(mask IoU of each matched true subject, true subjects, kept subjects judged, kept that match)."""
    ious, truths, judged, correct = [], 0, 0, 0
    min_area = run["config"].filter.min_area
    for clip_id, clip in run["clips"].items():
        truth = GroundTruth.for_video(clip["source"])
        frame = _keyframe(clip)
        pasted = [s["mask"] for s in truth.subjects_at(frame) if s["mask"].mean() >= min_area]
        kept = [rle_decode(s["mask"]) for s in _kept(run, clip_id)]
        matched = set()
        for true_mask in pasted:
            scores = [mask_iou(mask, true_mask) for mask in kept]
            if scores and max(scores) >= MATCH_IOU:
                ious.append(max(scores))
                matched.add(int(np.argmax(scores)))
        truths += len(pasted)
        native = truth.shot_of(frame)["native_motion"]
        judged += len(kept) if not native else len(matched)
        correct += len(matched)
    return ious, truths, judged, correct


def _references(run: dict) -> list[tuple[str, float, float]]:
    """(variant, best mask IoU with a pasted subject, subject-pixel share) of every reference."""
    out = []
    padding = run["config"].references.padding
    for (_, stage), row in run["rows"].items():
        if stage != "references" or row["status"] != "ok":
            continue
        for reference in row["data"]["references"]:
            source = reference["source"]
            clip = run["clips"][source["clip"]]
            subjects = run["rows"][(source["clip"], "filter")]["data"]["subjects"]
            (subject,) = [
                s
                for s in subjects
                if list(padded_box(s["box"], padding, clip["height"], clip["width"])) == source["crop"]
            ]
            mask = rle_decode(subject["mask"])
            pasted = [s["mask"] for s in GroundTruth.for_video(clip["source"]).subjects_at(source["frame"])]
            best = max((mask_iou(mask, p) for p in pasted), default=0.0)
            union = np.any(pasted, axis=0) if pasted else np.zeros_like(mask)
            out.append((reference["variant"], best, float((mask & union).sum() / mask.sum())))
    return out


def test_camera_only_shots_yield_no_subject(run):
    camera_only = []
    for clip_id, clip in run["clips"].items():
        if GroundTruth.for_video(clip["source"]).shot_of(_keyframe(clip))["camera_only"]:
            camera_only.append(clip_id)
            detected = run["rows"][(clip_id, "detect")]
            assert (detected["status"], detected["reason"]) == ("rejected", "no_subject"), clip_id
            assert _kept(run, clip_id) == []
    assert len(camera_only) == 2  # the zoom into the astronaut and the pan over the launch pad


def test_camera_motion_is_recorded_per_clip_and_matches_the_windows(run):
    """The pans' net motion over a clip, from the crop windows the set moved, within 10 %."""
    checked = 0
    for clip_id, clip in run["clips"].items():
        motion = run["rows"][(clip_id, "detect")]["data"]["camera_motion"]
        assert set(motion) == {"model", "translation_px", "scale", "rotation_deg"}
        shot = GroundTruth.for_video(clip["source"]).shot_of(_keyframe(clip))
        camera = shot["camera"]
        if camera["motion"] in ("static", "pan"):
            first, last = (
                np.asarray(camera["windows"][clip["source_frames"][k] - shot["start"]]) for k in (0, -1)
            )
            scale = clip["width"] / (first[2] - first[0])
            expected = (first[:2] - last[:2]) * scale  # the scene moves against the window
            assert np.allclose(
                motion["translation_px"], expected, atol=max(1.0, 0.1 * np.abs(expected).max())
            )
            checked += 1
    assert checked == 4


def test_pasted_subjects_are_found_whole_and_apart(run):
    ious, truths, judged, correct = _matches(run)
    recall, precision = len(ious) / truths, correct / judged
    print(
        f"real footage: recall {recall:.3f} ({len(ious)}/{truths}), precision {precision:.3f} "
        f"({correct}/{judged}), mask IoU mean {np.mean(ious):.3f} min {np.min(ious):.3f}"
    )
    assert truths >= 9
    assert recall >= 0.9 and precision >= 0.8
    assert np.mean(ious) >= 0.8


def test_references_are_real_subjects_cut_out_clean(run):
    references = _references(run)
    real = [best >= MATCH_IOU for _, best, _ in references]
    shares = [share for variant, _, share in references if variant in ("cutout", "pose")]
    print(
        f"references: {sum(real)}/{len(real)} real; cut-out/pose subject-pixel shares {np.round(shares, 3)}"
    )
    assert len(references) >= 4 and np.mean(real) >= 0.9
    assert len(shares) >= 3 and np.median(shares) >= 0.95
