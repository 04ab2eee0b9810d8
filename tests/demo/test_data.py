"""The demo's data: held-out scenes and `examples/` are disjoint from training; pairing modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kaleido_s2v.data.samples import iter_folder
from kaleido_s2v.demo.data import (
    HELDOUT_SEED_OFFSET,
    RESERVED_IDENTITIES,
    DemoDataConfig,
    build_pairs,
    example_name,
    example_reference,
    image_digest,
    select_clean_pairs,
    training_overlap,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.png"))


def test_examples_are_the_reserved_subjects_as_rendered_by_the_recipe():
    assert [p.name for p in EXAMPLES] == sorted(example_name(i) for i in RESERVED_IDENTITIES)
    for identity in RESERVED_IDENTITIES:
        shipped = np.asarray(Image.open(REPO / "examples" / example_name(identity)).convert("RGB"))
        assert np.array_equal(shipped, example_reference(identity))


def test_examples_and_heldout_scenes_never_appear_in_the_training_data(reduced_run):
    run_dir, _ = reduced_run
    export = run_dir / "data" / "train" / "export"
    assert training_overlap(export, EXAMPLES, run_dir / "scenes" / "train") == []
    train_scenes = {p.stem for p in (run_dir / "scenes" / "train").glob("*.mp4")}
    heldout_scenes = {p.stem for p in (run_dir / "scenes" / "heldout").glob("*.mp4")}
    assert train_scenes and heldout_scenes and not train_scenes & heldout_scenes
    assert all(int(name[len("scene") :]) >= HELDOUT_SEED_OFFSET for name in heldout_scenes)
    # every training pair comes from a training scene, and no held-out clip is among them
    train_sources = {s.meta["source"]["video"].split("-")[0] for s in iter_folder(export)}
    assert train_sources <= train_scenes
    heldout_ids = {s.id for s in iter_folder(run_dir / "data" / "heldout" / "export")}
    assert heldout_ids and not heldout_ids & {s.id for s in iter_folder(export)}


def test_overlap_check_catches_a_training_reference_among_the_images(reduced_run, tmp_path):
    run_dir, _ = reduced_run
    export = run_dir / "data" / "train" / "export"
    leaked = next(iter_folder(export)).references[0]
    copy = tmp_path / "leaked.png"
    Image.open(leaked).save(copy)
    assert image_digest(copy) == image_digest(leaked)
    problems = training_overlap(export, [*EXAMPLES, copy], run_dir / "scenes" / "train")
    assert len(problems) >= 1 and "same pixels" in problems[0]


def test_pairs_are_cross_shot_with_references_from_another_shot(reduced_run):
    run_dir, _ = reduced_run
    samples = list(iter_folder(run_dir / "data" / "train" / "export"))
    assert samples
    for sample in samples:
        assert sample.meta["mode"] == "cross_shot"
        for subject in sample.subjects:
            assert subject["source"]["shot"] != sample.meta["source"]["shot"]
            assert subject["variant"] in ("cutout", "pose")


def test_stage_two_data_holds_only_cut_out_pairs(reduced_run):
    run_dir, _ = reduced_run
    sft = list(iter_folder(run_dir / "data" / "sft"))
    train = {s.id for s in iter_folder(run_dir / "data" / "train" / "export")}
    assert sft and {s.id for s in sft} <= train
    assert all(subject["variant"] == "cutout" for s in sft for subject in s.subjects)


def test_heldout_cases_follow_the_case_format(reduced_run):
    run_dir, _ = reduced_run
    cases_file = run_dir / "heldout" / "cases.jsonl"
    cases = [json.loads(line) for line in cases_file.read_text().splitlines()]
    assert cases
    for case in cases:
        assert case["prompt"] and case["references"]
        for reference in case["references"]:
            assert (cases_file.parent / reference["path"]).is_file() and reference["label"] in case["prompt"]


def test_naive_pairs_are_crops_of_the_target_clip_with_background(reduced_run, tmp_path):
    run_dir, _ = reduced_run
    config = DemoDataConfig(num_train_scenes=3, num_heldout_scenes=1)
    export = build_pairs(
        run_dir / "scenes" / "train", tmp_path / "naive", config, mode="naive", progress=False
    )
    samples = list(iter_folder(export))
    assert samples
    for sample in samples:
        assert sample.meta["mode"] == "naive"
        for subject, image in zip(sample.subjects, sample.reference_images(), strict=True):
            assert subject["source"]["shot"] == sample.meta["source"]["shot"]
            pixels = np.asarray(image)
            # a crop with its background is not mostly white, unlike a cut-out (no white backgrounds)
            assert (pixels.min(axis=-1) > 240).mean() < 0.5
    # stage 2 of the naive cell fine-tunes on naive pairs; none of them is a cut-out pair
    assert len(list(iter_folder(select_clean_pairs(export, tmp_path / "sft", variant="naive")))) == len(
        samples
    )
    with pytest.raises(RuntimeError, match="only 'cutout' references"):
        select_clean_pairs(export, tmp_path / "sft_cutout")


def test_short_shots_are_refused_with_the_minimum():
    with pytest.raises(ValueError, match="use at least 15"):
        DemoDataConfig(frames_per_shot=12, num_frames=9)
