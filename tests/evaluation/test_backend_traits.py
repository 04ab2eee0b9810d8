"""Scoring asks a backend what it does (analysis width, presence rule), never what it is called."""

import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np

from evaluation.eval_scenes import green_background, moving_video, striped_ball
from kaleido_s2v.common.cases import Case, CaseReference
from kaleido_s2v.evaluation.config import BACKENDS, EvalConfig, ModelPaths
from kaleido_s2v.evaluation.offline import OfflineBackend
from kaleido_s2v.evaluation.runner import cache_key
from kaleido_s2v.evaluation.scoring import BACKEND_CONSTRUCTORS, make_backend, score_video

CONFIG = EvalConfig(num_frames=5)


def _wide_video() -> np.ndarray:
    """(17, 240, 320, 3): the moving ball scene at 320 px wide, over the offline analysis width."""
    ball, mask = striped_ball(30)
    frames = moving_video(green_background(), ball, mask)
    return np.stack([cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA) for f in frames])


def _case(reference: Path) -> Case:
    return Case(id="c", prompt="a ball moves right", references=[CaseReference(reference, "ball")])


class Recording(OfflineBackend):
    """The offline backend under another name, remembering the frames it localised in."""

    name = "recording"

    def candidates(self, frames, references):
        self.seen = frames.shape
        return super().candidates(frames, references)


def test_a_renamed_offline_backend_scores_exactly_like_the_offline_one(ball_reference):
    video = _wide_video()
    offline = score_video(video, _case(ball_reference), CONFIG, OfflineBackend())
    recording = Recording()
    renamed = score_video(video, _case(ball_reference), CONFIG, recording)
    assert recording.seen[2] == OfflineBackend.analysis_width == 256
    assert dataclasses.replace(renamed, backend="offline") == offline


def test_analysis_width_none_keeps_the_frames_at_full_size(ball_reference):
    recording = Recording()
    recording.analysis_width = None
    score_video(_wide_video(), _case(ball_reference), CONFIG, recording)
    assert recording.seen[1:3] == (240, 320)


def test_presence_threshold_applies_only_where_the_backend_says_so(ball_reference):
    strict = dataclasses.replace(CONFIG, presence_threshold=1.0)  # no proposal is that similar
    thresholded = score_video(_wide_video(), _case(ball_reference), strict, OfflineBackend())
    trusting = OfflineBackend()
    trusting.presence_threshold_applies = False
    untested = score_video(_wide_video(), _case(ball_reference), strict, trusting)
    assert thresholded.presence == 0.0 < untested.presence


def test_every_configurable_backend_has_a_constructor_and_a_comparability_note():
    assert tuple(BACKEND_CONSTRUCTORS) == BACKENDS
    assert isinstance(make_backend(EvalConfig()), OfflineBackend)
    assert "not comparable" in EvalConfig().comparability
    assert "not comparable" not in EvalConfig(backend="model").comparability


def test_fingerprint_and_cache_key_are_sha256_of_sorted_json(ball_reference):
    config = EvalConfig(num_frames=8)
    payload = {**config.to_json(), "version": 1}
    payload.pop("device")
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    assert config.fingerprint() == expected
    case = _case(ball_reference)
    reference = hashlib.sha256(ball_reference.read_bytes()).hexdigest()
    key = {
        "video": "v" * 64,
        "case": {"id": "c", "prompt": case.prompt, "references": [["ball", reference]]},
        "config": expected,
    }
    assert (
        cache_key("v" * 64, case, config)
        == hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    )


def test_a_model_path_given_as_a_path_fingerprints_like_its_string():
    as_path = EvalConfig(backend="model", models=ModelPaths(dinov2=Path("models/dinov2")))
    as_text = EvalConfig(backend="model", models=ModelPaths(dinov2="models/dinov2"))
    assert as_path.fingerprint() == as_text.fingerprint()
