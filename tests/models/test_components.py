"""Reading a model folder's frozen components (kaleido_s2v.models.components): the text encoder's class."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import BertConfig, BertModel, UMT5EncoderModel

from kaleido_s2v.models.components import text_encoder_class
from tiny_components import save_tiny_pipeline


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("components") / "model")


def _tiny_bert() -> BertModel:
    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    return BertModel(config)


def test_the_class_is_the_one_the_text_encoder_was_saved_from(pipeline_folder):
    assert text_encoder_class(pipeline_folder) is UMT5EncoderModel


def test_an_encoders_folder_without_model_index_reads_the_saved_class(pipeline_folder, tmp_path):
    for part in ("vae", "tokenizer"):
        shutil.copytree(pipeline_folder / part, tmp_path / part)
    _tiny_bert().save_pretrained(tmp_path / "text_encoder")
    assert text_encoder_class(tmp_path) is BertModel


def test_a_model_index_naming_another_class_is_warned_about_and_the_saved_class_wins(
    pipeline_folder, tmp_path
):
    """Behaviour change for the pipeline: before, model_index.json's class was loaded whatever the
    text encoder was saved from (here UMT5EncoderModel over BertModel weights, which fails)."""
    folder = tmp_path / "model"
    shutil.copytree(pipeline_folder, folder)
    _tiny_bert().save_pretrained(folder / "text_encoder")
    with pytest.warns(
        UserWarning, match="records text_encoder UMT5EncoderModel, but .* was saved from BertModel"
    ):
        assert text_encoder_class(folder) is BertModel


def test_without_architectures_the_model_index_class_is_used_and_without_both_it_is_an_error(
    pipeline_folder, tmp_path
):
    folder = tmp_path / "model"
    shutil.copytree(pipeline_folder, folder)
    config_file = folder / "text_encoder" / "config.json"
    config = json.loads(config_file.read_text())
    del config["architectures"]
    config_file.write_text(json.dumps(config))
    assert text_encoder_class(folder) is UMT5EncoderModel
    (folder / "model_index.json").unlink()
    with pytest.raises(ValueError, match="names no architectures"):
        text_encoder_class(folder)
