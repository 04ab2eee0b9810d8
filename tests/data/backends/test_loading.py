"""Every loader says clearly what is wrong with the folder it was given."""

import numpy as np
import pytest

from kaleido_s2v.data import backends
from kaleido_s2v.data.backends._common import check_images, check_mask, resolve_model_source

LOADERS = [
    "GroundingDinoDetector",
    "SamSegmenter",
    "ClipScorer",
    "DinoV2Embedder",
    "FluxFillInpainter",
    "VlmCaptioner",
    "PoseVariator",
]


def load(name: str, path):
    return getattr(backends, name).from_pretrained(path)


@pytest.mark.parametrize("name", LOADERS)
def test_missing_path_and_non_model_folder(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(name, tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match="not a saved model folder"):
        load(name, tmp_path)
    with pytest.raises(NotADirectoryError, match="is a file"):
        load(name, tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("GroundingDinoDetector", "sam_dir"),
        ("SamSegmenter", "dinov2_dir"),
        ("ClipScorer", "dinov2_dir"),
        ("DinoV2Embedder", "clip_dir"),
        ("VlmCaptioner", "clip_dir"),
        ("FluxFillInpainter", "clip_dir"),
    ],
)
def test_wrong_architecture_is_named(name, wrong, request):
    folder = request.getfixturevalue(wrong)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load(name, folder)
    message = str(error.value)
    assert str(folder) in message
    if name != "FluxFillInpainter":  # a transformers folder has no model_index.json at all
        assert wrong.removesuffix("_dir") in message  # the model type found is named


def test_aesthetic_predictor_wants_clip(siglip_dir, tmp_path):
    with pytest.raises(ValueError, match="siglip"):
        backends.LaionAestheticPredictor.from_pretrained(siglip_dir, head_path=tmp_path / "head.pth")


def test_hub_ids_pass_through_and_paths_do_not():
    assert resolve_model_source("IDEA-Research/grounding-dino-tiny") == (
        "IDEA-Research/grounding-dino-tiny",
        None,
    )
    for path in ("./models/sam", "/models/sam2", "models/a/b"):
        with pytest.raises(FileNotFoundError):
            resolve_model_source(path)


def test_image_and_mask_checks(astronaut):
    assert len(check_images(np.stack([astronaut, astronaut]))) == 2
    assert len(check_images(astronaut)) == 1
    with pytest.raises(ValueError, match="empty"):
        check_images([astronaut[:0]])
    with pytest.raises(TypeError, match="numpy"):
        check_images([astronaut.tolist()])
    assert check_mask(np.ones((2, 3), dtype=np.uint8), (2, 3)).dtype == bool
    with pytest.raises(ValueError, match="bool"):
        check_mask(np.array([["a"]]), (1, 1))


def test_lazy_exports():
    assert set(backends.__all__) <= set(dir(backends))
    with pytest.raises(AttributeError):
        backends.NotAThing  # noqa: B018


def test_bfloat16_models_get_bfloat16_inputs(sam2_dir, clip_dir, gdino_dir, astronaut):
    import torch

    masks = backends.SamSegmenter.from_pretrained(sam2_dir, dtype=torch.bfloat16).segment(
        astronaut, [(0, 0, 64, 64)]
    )
    assert masks.shape == (1, *astronaut.shape[:2]) and masks.dtype == bool
    similarity = backends.ClipScorer.from_pretrained(clip_dir, dtype=torch.bfloat16).image_text_similarity(
        [astronaut], ["cat"]
    )
    assert similarity.dtype == np.float32 and np.isfinite(similarity).all()
    detector = backends.GroundingDinoDetector.from_pretrained(
        gdino_dir, dtype=torch.bfloat16, box_threshold=0.0
    )
    assert next(detector.model.parameters()).dtype == torch.bfloat16
    assert all(np.isfinite(d.box).all() for d in detector.detect(astronaut, ["cat"]))


def test_flux_fill_folder_without_text_encoders(flux_fill_dir, tmp_path):
    import shutil

    partial = tmp_path / "flux_no_t5"
    shutil.copytree(flux_fill_dir, partial)
    index = (partial / "model_index.json").read_text()
    (partial / "model_index.json").write_text(
        index.replace(
            '"text_encoder_2": [\n    "transformers",\n    "T5EncoderModel"\n  ]',
            '"text_encoder_2": [null, null]',
        )
    )
    shutil.rmtree(partial / "text_encoder_2")
    with pytest.raises(ValueError, match="text_encoder_2"):
        backends.FluxFillInpainter.from_pretrained(partial)


def test_too_many_labels_for_the_text_length(gdino_dir, astronaut):
    detector = backends.GroundingDinoDetector.from_pretrained(gdino_dir)  # max_text_len 32 tokens
    labels = [f"red car number {i}" for i in range(12)]
    with pytest.raises(ValueError, match="fewer or shorter labels"):
        detector.detect(astronaut, labels)


def test_pipeline_and_model_folders_are_told_apart(flux_fill_dir, sam_dir):
    with pytest.raises(FileNotFoundError, match="a diffusers pipeline folder"):
        backends.SamSegmenter.from_pretrained(flux_fill_dir)
    with pytest.raises(FileNotFoundError, match="not a diffusers pipeline"):
        backends.FluxFillInpainter.from_pretrained(sam_dir)
