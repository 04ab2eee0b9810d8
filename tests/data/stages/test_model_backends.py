"""The model-backed path end to end, with the wrappers' tiny random models (no weights, no network).

Random weights make the outputs meaningless, so these tests check the plumbing: every stage runs
through our loader from a saved folder, records its backend, and FluxFill keeps the subject's
pixels exactly.
"""

import numpy as np
import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.manifest import Manifest, decode_row
from kaleido_s2v.data.masks import rle_decode
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.synthetic import SceneConfig, write_scenes


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import tiny_backends

    root = tmp_path_factory.mktemp("tiny_models")
    return {
        name: str(getattr(tiny_backends, f"save_tiny_{name}")(root / name))
        for name in ("grounding_dino", "sam", "clip", "flux_fill", "qwen2_vl")
    }


@pytest.fixture(scope="module")
def model_run(tmp_path_factory, tiny_models, clip_config):
    root = tmp_path_factory.mktemp("model_run")
    scenes = write_scenes(
        root / "scenes", 1, SceneConfig(seed=0, min_subjects=2, max_subjects=2, motions=("left", "right"))
    )
    values = clip_config(scenes, root / "run")
    values.update(
        detect={
            "backend": "grounding_dino",
            "model_path": tiny_models["grounding_dino"],
            "box_threshold": 0.0,
            "text_threshold": 0.0,
        },
        segment={"backend": "sam", "model_path": tiny_models["sam"]},
        filter={
            "backend": "clip",
            "model_path": tiny_models["clip"],
            "min_area": 0.0,
            "max_area": 1.0,
            "max_overlap_iou": 1.0,
            "max_fragments_share": 1.0,
            "min_similarity": -1.0,
            "blur_threshold": 0.0,
        },
        references={
            "match": "label",
            "variants": ["inpainted", "pose"],
            "inpaint_backend": "flux_fill",
            "inpaint_model_path": tiny_models["flux_fill"],
            "pose_backend": "model",
            "pose_model_path": tiny_models["flux_fill"],
            "inpaint_steps": 2,
        },
    )
    summary = run_pipeline(config_from_dict(values), progress=False)
    rows = {(k[0], k[1]): decode_row(r) for k, r in Manifest(root / "run").rows.items()}
    return root / "run", summary, rows


def test_model_stages_run_and_record_their_backend(model_run):
    _, summary, rows = model_run
    failed = [(k, r["reason"]) for k, r in rows.items() if r["status"] == "failed"]
    assert not failed, failed
    backends = {
        stage: {r["backend"] for (_, s), r in rows.items() if s == stage}
        for stage in ("detect", "segment", "filter", "references")
    }
    assert backends == {
        "detect": {"grounding_dino"},
        "segment": {"sam"},
        "filter": {"clip"},
        "references": {"flux_fill+model"},
    }
    assert summary.funnel["detect"]["kept"] == summary.funnel["detect"]["in"] == 3
    for (_, stage), row in rows.items():
        if stage == "filter" and row["status"] == "ok":
            assert all("similarity" in s for s in row["data"]["subjects"])
    assert summary.exported


def test_flux_fill_keeps_the_subject_pixels_exactly(model_run):
    from kaleido_s2v.data.stages.frames import read_keyframe

    run_dir, _, rows = model_run
    clips = {c["id"]: c for (_, s), r in rows.items() if s == "split" for c in r["data"]["clips"]}
    checked = 0
    for (_, stage), row in rows.items():
        if stage != "references" or row["status"] != "ok":
            continue
        for index, ref in enumerate(row["data"]["references"], start=1):
            if ref["variant"] != "inpainted":
                continue
            source = ref["source"]
            frame = read_keyframe(run_dir, clips[source["clip"]])
            filtered = rows[(source["clip"], "filter")]["data"]
            subject = next(s for s in filtered["subjects"] if s["label"] == ref["label"])
            x0, y0, x1, y1 = source["crop"]
            mask = rle_decode(subject["mask"])[y0:y1, x0:x1]
            from PIL import Image

            picture = np.asarray(Image.open(run_dir / row["artifacts"][f"ref{index}"]))
            assert picture.shape[:2] == mask.shape
            np.testing.assert_array_equal(picture[mask], frame[y0:y1, x0:x1][mask])
            checked += 1
    assert checked >= 1


def test_vlm_caption_backend(tmp_path, tiny_models):
    from kaleido_s2v.common.video_io import write_video
    from kaleido_s2v.data.stages.base import Context
    from kaleido_s2v.data.stages.caption import CaptionConfig, CaptionStage

    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=8)
    item = {
        "id": "c",
        "source": str(tmp_path / "clip.mp4"),
        "clip": "clip.mp4",
        "source_frames": list(range(9)),
    }
    stage = CaptionStage(CaptionConfig(backend="vlm", model_path=tiny_models["qwen2_vl"], num_frames=2))
    result = stage.run(item, Context(run_dir=tmp_path, artifact_dir=tmp_path, upstream={}))
    assert (result.status, result.reason) in (("ok", ""), ("rejected", "empty_caption"))
    if result.status == "ok":
        assert result.data["source"] == "vlm" and isinstance(result.data["subjects"], list)


def test_model_backend_without_a_path_is_a_clear_error():
    from kaleido_s2v.data.stages.detect import DetectConfig, DetectStage

    with pytest.raises(ValueError, match="needs model_path"):
        DetectStage(DetectConfig(backend="grounding_dino"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DetectStage(DetectConfig(backend="grounding_dino", model_path="/nowhere/gdino"))


@pytest.mark.slow
def test_ray_actor_pool_for_a_model_stage_matches_local(tmp_path, tiny_models, clip_config):
    import os

    from kaleido_s2v.data.runner import build_stages, uses_model

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    scenes = write_scenes(tmp_path / "scenes", 1, SceneConfig(seed=1, motions=("left", "right")))
    values = clip_config(scenes, tmp_path / "local")
    values.update(segment={"backend": "sam", "model_path": tiny_models["sam"]})
    stages = build_stages(config_from_dict(values))
    assert [s.name for s in stages if uses_model(s)] == ["segment"]
    run_pipeline(config_from_dict(values), progress=False)
    ray_values = {**values, "run_dir": str(tmp_path / "ray"), "executor": "ray", "workers": 2}
    run_pipeline(config_from_dict(ray_values), progress=False)
    assert Manifest(tmp_path / "ray").comparable_rows() == Manifest(tmp_path / "local").comparable_rows()
    segment_workers = {r["worker"] for k, r in Manifest(tmp_path / "ray").rows.items() if k[1] == "segment"}
    assert not any(w.endswith(f":{os.getpid()}") for w in segment_workers)
