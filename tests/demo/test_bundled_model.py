"""The bundled demo model: the default of `kaleido-s2v generate`, and better than its controls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo.demo_helpers import example_generate_argv
from kaleido_s2v.cli import main
from kaleido_s2v.common.video_io import probe_video, read_video
from kaleido_s2v.demo.bundled import MAX_BUNDLE_BYTES, bundled_model_path, folder_bytes
from kaleido_s2v.pipelines.cli import MODEL_ENV
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

REPO = Path(__file__).resolve().parents[2]
HELDOUT = REPO / "tests" / "data" / "demo_heldout"
# Identity accuracy of the bundled model minus that of the same model given other cases' references,
# on tests/data/demo_heldout (27 subjects): measured 0.52 - 0.11 = 0.41 when the model was bundled
# (configs/demo/README.md); asserted with 3 subjects (0.11) of slack for other CPUs' float rounding.
IDENTITY_MARGIN = 0.30


def test_bundled_model_is_a_small_pipeline_folder_that_reads_minilm_from_its_package():
    folder = bundled_model_path()
    assert folder_bytes(folder) <= MAX_BUNDLE_BYTES
    for component in ("text_encoder", "tokenizer"):
        assert [p.name for p in (folder / component).iterdir()] == ["package.json"]
    pipeline = KaleidoPipeline.from_pretrained(folder)
    assert type(pipeline.text_encoder).__name__ == "BertModel"
    assert tuple(pipeline.transformer.config.patch_size) == (1, 2, 2)
    assert pipeline.transformer.config.rope_policy == "kaleido"
    assert type(pipeline.vae).__name__ == "AutoencoderKLWan"


def test_generate_without_a_model_uses_the_bundled_one_and_writes_the_configured_mp4(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    defaults = json.loads((bundled_model_path() / "generation_config.json").read_text())
    out = tmp_path / "demo.mp4"
    status = main(
        example_generate_argv(
            out,
            "a striped red star moves right and a dotted blue circle moves down, on a sand gradient background",
        )
    )
    assert status == 0
    info = probe_video(out)
    assert (info.num_frames, info.height, info.width) == (
        defaults["num_frames"],
        defaults["height"],
        defaults["width"],
    )
    assert info.num_frames >= 9 and info.height >= 64 and info.width >= 64
    frames, _ = read_video(out)
    assert frames.std() > 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert Path(sidecar["model_path"]).resolve() == bundled_model_path().resolve()


@pytest.mark.slow
def test_bundled_model_identity_beats_the_shuffled_reference_control(tmp_path, monkeypatch):
    from kaleido_s2v.demo.evaluate import shuffled_cases
    from kaleido_s2v.evaluation.runner import run_eval

    monkeypatch.delenv(MODEL_ENV, raising=False)
    cases = HELDOUT / "cases.jsonl"
    shuffled = shuffled_cases(cases, tmp_path / "shuffled.jsonl")
    scores = {}
    for name, case_file in (("model", cases), ("shuffled", shuffled)):
        videos = tmp_path / name
        assert main(["generate", "--batch", str(case_file), "--out-dir", str(videos)]) == 0
        metrics = run_eval(
            videos, cases, tmp_path / f"eval_{name}", controls=False, report=False, progress=False
        )
        scores[name] = metrics["summary"]["identity_accuracy"]["mean"]
    assert scores["model"] - scores["shuffled"] >= IDENTITY_MARGIN, scores
