"""The model backend with tiny random Grounding DINO / SAM / DINOv2 / CLIP, loaded through our loaders."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from evaluation.eval_scenes import (
    green_background,
    make_video,
    moving_video,
    paste,
    save_png,
    striped_ball,
    write_cases,
)
from kaleido_s2v.cli import main
from kaleido_s2v.common.cases import Case, CaseReference
from kaleido_s2v.evaluation.config import EvalConfig, ModelPaths
from kaleido_s2v.evaluation.model_backend import ModelBackend
from kaleido_s2v.evaluation.runner import run_eval
from kaleido_s2v.evaluation.scoring import score_video


def _config(models, **paths) -> EvalConfig:
    chosen = {name: str(models[name]) for name in ("grounding_dino", "sam", "dinov2", "clip")}
    chosen.update(paths)
    return EvalConfig(backend="model", num_frames=3, models=ModelPaths(**chosen))


def test_model_backend_loads_from_config_and_scores_a_video(tiny_eval_models, ball_reference):
    backend = ModelBackend.from_config(_config(tiny_eval_models))
    # Random weights rarely clear the release thresholds; open them so every stage runs.
    backend.detector.box_threshold = backend.detector.text_threshold = 0.0
    ball, mask = striped_ball(30)
    frames = np.stack(moving_video(green_background(), ball, mask, frames=5))
    case = Case("m", "a ball moves right", [CaseReference(ball_reference, "ball")])
    score = score_video(frames, case, _config(tiny_eval_models), backend=backend)
    assert score.backend == "model"
    assert score.presence == 1.0  # a detection in every sampled frame
    assert 0.0 <= score.consistency <= 1.0 and score.consistency > 0.0
    assert all(box is not None and 0 <= box[0] < box[2] <= 128 for box in score.subjects[0].boxes)
    assert score.text_alignment is not None and -1.0 <= score.text_alignment <= 1.0
    assert score.aesthetics is None  # no LAION head given
    assert score.decoupling is None and score.no_background_references == 1  # a reference on white


def test_embedder_similarity_is_cosine_of_the_loaded_dinov2(tiny_eval_models, ball_reference):
    from kaleido_s2v.data.backends import DinoV2Embedder

    backend = ModelBackend.from_config(_config(tiny_eval_models))
    assert isinstance(backend.embedder, DinoV2Embedder)
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(ball_reference).convert("RGB"))
    full = np.ones(image.shape[:2], bool)
    a = backend.features([image, image[::-1].copy()], [full, full])
    similarity = backend.similarity_matrix(a, a)
    assert similarity.shape == (2, 2) and similarity[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert np.all((similarity >= 0) & (similarity <= 1))
    # Each entry is the clipped cosine of its own pair, not a value that holds for any pair.
    expected = np.clip(np.stack(a) @ np.stack(a).T, 0.0, 1.0)
    assert np.allclose(similarity, expected, atol=1e-6)
    assert similarity[0, 1] == pytest.approx(similarity[1, 0], abs=1e-6)
    green = backend.features([green_background()], [np.ones(green_background().shape[:2], bool)])
    across = backend.similarity_matrix(a, green)
    assert across.shape == (2, 1) and across[0, 0] < 0.999  # a ball is not a green field


def test_similarity_matrix_is_the_clipped_cosine_of_each_pair_in_order():
    # Known unit embeddings: the matrix is exactly their pairwise cosines, negatives clipped to 0.
    backend = ModelBackend(detector=object(), segmenter=None, embedder=object())
    x, y, z = np.eye(3, dtype=np.float32)
    diagonal = ((x + z) / np.sqrt(2)).astype(np.float32)
    a, b = [x, y], [y, diagonal, -x, x]
    similarity = backend.similarity_matrix(a, b)
    expected = [[0.0, 1 / np.sqrt(2), 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]
    assert similarity.shape == (2, 4) and similarity.dtype == np.float64
    assert np.allclose(similarity, expected, atol=1e-6)
    # Rows follow `a` and columns follow `b`: permuting either permutes the matrix the same way.
    assert np.allclose(backend.similarity_matrix(a[::-1], b), similarity[::-1], atol=1e-6)
    assert np.allclose(backend.similarity_matrix(a, b[::-1]), similarity[:, ::-1], atol=1e-6)
    assert backend.similarity_matrix([], b).shape == (0, 4)
    assert backend.similarity_matrix(a, []).shape == (2, 0)


def test_model_backend_needs_a_detector_and_an_embedder(tiny_eval_models):
    with pytest.raises(ValueError, match="--grounding-dino"):
        ModelBackend.from_config(
            EvalConfig(backend="model", models=ModelPaths(dinov2=str(tiny_eval_models["dinov2"])))
        )
    with pytest.raises(ValueError, match="--dinov2 PATH or --clip"):
        ModelBackend.from_config(
            EvalConfig(
                backend="model", models=ModelPaths(grounding_dino=str(tiny_eval_models["grounding_dino"]))
            )
        )
    with pytest.raises(ValueError, match="--clip"):
        ModelBackend.from_config(_config(tiny_eval_models, clip=None, aesthetic="head.pt"))


@pytest.mark.slow
def test_cli_model_backend_end_to_end(tiny_eval_models, ball_reference, tmp_path):
    ball, mask = striped_ball(30)
    make_video(tmp_path / "videos" / "m.mp4", moving_video(green_background(), ball, mask, frames=5))
    cases = write_cases(
        tmp_path / "cases.jsonl", [{"id": "m", "prompt": "a ball", "references": [{"path": "refs/ball.png"}]}]
    )
    args = [
        "eval",
        "--videos",
        str(tmp_path / "videos"),
        "--cases",
        str(cases),
        "--out",
        str(tmp_path / "out"),
        "--backend",
        "model",
    ]
    args += ["--frames", "3", "--no-controls", "--no-report"]
    for name in ("grounding_dino", "sam", "dinov2", "clip"):
        args += [f"--{name.replace('_', '-')}", str(tiny_eval_models[name])]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["backend"] == "model" and "not comparable" not in metrics["comparability"]
    assert metrics["summary"]["text_alignment"]["n"] == 1 and "text_alignment" not in metrics["unavailable"]


def test_aesthetics_with_a_linear_head_on_the_tiny_clip(tiny_eval_models, ball_reference, tmp_path):
    import torch
    from safetensors.torch import save_file

    head = tmp_path / "head.safetensors"
    save_file({"weight": torch.full((1, 16), 0.25), "bias": torch.tensor([5.0])}, str(head))
    backend = ModelBackend.from_config(_config(tiny_eval_models, aesthetic=str(head)))
    frames = np.stack(moving_video(green_background(), *striped_ball(30), frames=3))
    value = backend.aesthetics(frames)
    # bias 5 plus 0.25 × the sum of a unit 16-d vector's components: within 5 ± 0.25 × 4.
    assert value is not None and 4.0 <= value <= 6.0
    direct = backend.aesthetic.score(list(frames))
    assert value == pytest.approx(float(np.mean(direct)), abs=1e-5)


def test_background_similarity_is_one_for_the_same_background_and_reuses_the_reference(tiny_eval_models):
    backend = ModelBackend.from_config(_config(tiny_eval_models, sam=None, clip=None))
    background = green_background()
    everywhere = np.ones(background.shape[:2], bool)
    assert backend.background_similarity(background, everywhere, background, everywhere) == pytest.approx(
        1.0, abs=1e-5
    )
    calls = []
    original = backend.embedder.image_features
    backend.embedder.image_features = lambda images: calls.append(len(images)) or original(images)
    for _ in range(3):
        backend.background_similarity(background, everywhere, background[::-1].copy(), everywhere)
    assert calls == [1, 1, 1]  # only the frame is embedded; the reference's embedding is kept


def _scene_reference(folder: Path) -> Path:
    """The ball on the green background: no alpha, no white border, so only a detection finds it."""
    ball, mask = striped_ball(30)
    return save_png(folder / "refs" / "ball_on_green.png", paste(green_background(), ball, mask, 50, 30))


def test_metrics_json_names_the_model_that_ran_in_each_role(tiny_eval_models, ball_reference, tmp_path):
    ball, mask = striped_ball(30)
    make_video(tmp_path / "videos" / "m.mp4", moving_video(green_background(), ball, mask, frames=5))
    case = Case("m", "a ball", [CaseReference(ball_reference, "ball")])
    options = dict(controls=False, report=False, progress=False)

    full = run_eval(tmp_path / "videos", [case], tmp_path / "full", _config(tiny_eval_models), **options)
    assert full["models"] == {
        "detection": "grounding_dino",
        "masks": "sam",
        "identity_features": "dinov2",
        "text_alignment": "clip",
        "aesthetics": "not used (no --aesthetic given)",
    }
    assert full["unavailable"] == {"aesthetics": "not used (no --aesthetic given)"}

    config = _config(tiny_eval_models, sam=None, dinov2=None)
    fallback = run_eval(tmp_path / "videos", [case], tmp_path / "fallback", config, **options)
    assert fallback["models"]["masks"] == "boxes (no --sam given)"
    assert fallback["models"]["identity_features"] == "clip (no --dinov2 given)"
    assert fallback["comparability"] == (
        "model backend with detection: grounding_dino; masks: boxes (no --sam given); identity features: "
        "clip (no --dinov2 given); text alignment: clip; aesthetics: not used (no --aesthetic given)"
    )
    assert json.loads((tmp_path / "fallback" / "metrics.json").read_text())["models"] == fallback["models"]

    no_clip = _config(tiny_eval_models, clip=None)
    without = run_eval(tmp_path / "videos", [case], tmp_path / "no_clip", no_clip, **options)
    assert without["unavailable"]["text_alignment"] == "not used (no --clip given)"  # not "offline"


def test_a_reference_whose_subject_is_not_detected_is_reported_not_counted_as_no_background(
    tiny_eval_models, tmp_path
):
    ball, mask = striped_ball(30)
    make_video(tmp_path / "videos" / "m.mp4", moving_video(green_background(), ball, mask, frames=5))
    case = Case("m", "a ball", [CaseReference(_scene_reference(tmp_path), "ball")], line=1)
    config = _config(tiny_eval_models)
    backend = ModelBackend.from_config(config)
    backend.detector.box_threshold = 1.0  # a box must score above it: Grounding DINO detects nothing
    payload = run_eval(
        tmp_path / "videos", [case], tmp_path / "out", config, controls=False, report=False, backend=backend
    )
    subject = payload["cases"]["m"]["subjects"][0]
    assert subject["subject_found"] is False and subject["no_background"] is False
    assert subject["decoupling"] is None
    assert payload["summary"]["decoupling"] == {
        "mean": None,
        "n": 0,
        "no_background_references": 0,
        "subject_not_found_references": 1,
    }
    reason = "reference 'ball': subject not found in the reference; its decoupling is left out"
    assert payload["warnings"] == [{"id": "m", "line": 1, "reason": reason}]
    row = next(csv.DictReader((tmp_path / "out" / "cases.csv").open()))
    assert row["subject_not_found_references"] == "1" and row["warning"] == reason

    # Detected (thresholds opened), the same reference has a background and a decoupling figure.
    backend.detector.box_threshold = backend.detector.text_threshold = 0.0
    found = score_video(tmp_path / "videos" / "m.mp4", case, config, backend=backend).subjects[0]
    assert found.subject_found and not found.no_background and found.decoupling is not None
