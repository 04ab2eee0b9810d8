"""Bundling a trained demo pipeline: package pointers for the text encoder, size limit, same output."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kaleido_s2v.demo.bundled import MAX_BUNDLE_BYTES, bundle_pipeline, folder_bytes
from kaleido_s2v.pipelines import kaleido
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from tiny_components import save_tiny_pipeline


def _point_at_package(pipeline_dir, site, package, subfolders=("text_encoder", "tokenizer")):
    """Move the pipeline's text encoder and tokenizer into a package whose import would leave a
    marker file (so a test sees whether anything imported it); leave pointers."""
    (site / package).mkdir(parents=True)
    marker = site / "imported.marker"
    (site / package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for component, subfolder in zip(("text_encoder", "tokenizer"), subfolders, strict=True):
        shutil.move(pipeline_dir / component, site / package / component)
        (pipeline_dir / component).mkdir()
        (pipeline_dir / component / "package.json").write_text(
            json.dumps({"package": package, "subfolder": subfolder, "pip": "ignored, the allow-list says"})
        )
    return marker


@pytest.fixture()
def allowed_fake_package(monkeypatch):
    monkeypatch.setitem(kaleido.POINTER_PACKAGES, "fake_text_package", "fake-text-package")
    return "fake_text_package"


def test_text_encoder_and_tokenizer_load_from_the_installed_package_a_pointer_names(
    tmp_path, monkeypatch, allowed_fake_package
):
    folder = save_tiny_pipeline(tmp_path / "pipeline")
    direct = KaleidoPipeline.from_pretrained(folder)
    marker = _point_at_package(folder, tmp_path / "site", allowed_fake_package)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pointed = KaleidoPipeline.from_pretrained(folder)
    for (name, a), (_, b) in zip(
        direct.text_encoder.state_dict().items(), pointed.text_encoder.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert pointed.tokenizer("a red star").input_ids == direct.tokenizer("a red star").input_ids
    assert not marker.exists()  # the package's files were found without importing it


def test_a_pointer_to_a_package_not_on_the_allow_list_is_refused_and_imports_nothing(tmp_path, monkeypatch):
    folder = save_tiny_pipeline(tmp_path / "pipeline")
    marker = _point_at_package(folder, tmp_path / "site", "crafted_package")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ValueError, match="may only point at"):
        KaleidoPipeline.from_pretrained(folder)
    assert not marker.exists()
    # A dotted name imports its parents when looked up: refused before any look-up.
    (folder / "text_encoder" / "package.json").write_text(json.dumps({"package": "crafted_package.sub"}))
    with pytest.raises(ValueError, match="may only point at"):
        kaleido.component_folder(folder / "text_encoder")
    assert not marker.exists()


def test_a_pointer_subfolder_outside_the_package_is_refused(tmp_path, monkeypatch, allowed_fake_package):
    folder = save_tiny_pipeline(tmp_path / "pipeline")
    _point_at_package(folder, tmp_path / "site", allowed_fake_package, subfolders=("../..", "/etc"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for component, name in (("text_encoder", "'../..'"), ("tokenizer", "'/etc'")):
        with pytest.raises(ValueError, match=f"names {name}, which is outside"):
            kaleido.component_folder(folder / component)


def test_a_pointer_to_a_missing_package_says_what_to_install(tmp_path, allowed_fake_package):
    folder = save_tiny_pipeline(tmp_path / "pipeline")
    _point_at_package(folder, tmp_path / "site", allowed_fake_package)  # site is not on sys.path
    with pytest.raises(ImportError, match="pip install fake-text-package"):
        KaleidoPipeline.from_pretrained(folder)


def test_bundle_keeps_the_pipeline_output_and_stays_under_the_size_limit(reduced_run, tmp_path):
    run_dir, pipeline_dir = reduced_run
    bundle = bundle_pipeline(pipeline_dir, tmp_path / "bundle", {"run": "reduced"})
    assert folder_bytes(bundle) <= MAX_BUNDLE_BYTES
    assert sorted(p.name for p in (bundle / "text_encoder").iterdir()) == ["package.json"]
    assert sorted(p.name for p in (bundle / "tokenizer").iterdir()) == ["package.json"]
    assert json.loads((bundle / "bundle.json").read_text()) == {"run": "reduced"}

    reference = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))

    def frames(folder):
        pipeline = KaleidoPipeline.from_pretrained(folder)
        return pipeline(
            "a striped red star moves left",
            reference_images=[reference],
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).frames

    assert (frames(bundle) == frames(pipeline_dir)).all()


def test_bundle_refuses_a_pipeline_whose_text_encoder_is_not_the_installed_minilm(tmp_path):
    folder = save_tiny_pipeline(tmp_path / "pipeline")  # a tiny UMT5, not MiniLM
    with pytest.raises(ValueError, match="all-MiniLM-L6-v2"):
        bundle_pipeline(folder, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()
