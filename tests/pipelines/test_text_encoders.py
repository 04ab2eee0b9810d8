"""KaleidoPipeline with a text encoder other than UMT5: loaded as the class it was saved from (`models.components`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from transformers import BertConfig, BertModel

from kaleido_s2v.demo.text_encoder import MINILM_TEXT_DIM, load_minilm
from kaleido_s2v.models.transformer import KaleidoTransformer3DModel
from kaleido_s2v.pipelines.generation_config import make_scheduler
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from tiny_components import TINY_TRANSFORMER_CONFIG, TINY_VAE_CONFIG, tiny_generation_config


def _pipeline(text_encoder, tokenizer, text_dim: int) -> KaleidoPipeline:
    torch.manual_seed(0)
    transformer = KaleidoTransformer3DModel(**{**TINY_TRANSFORMER_CONFIG, "text_dim": text_dim}).eval()
    pipeline = KaleidoPipeline(
        transformer=transformer,
        vae=AutoencoderKLWan(**TINY_VAE_CONFIG).eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=make_scheduler("kaleido_euler"),
    )
    pipeline.generation_config = tiny_generation_config()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _generate(pipeline, references, prompt="a red circle moves left"):
    generator = torch.Generator().manual_seed(0)
    return pipeline(prompt, references, generator=generator, max_sequence_length=16).frames


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_minilm_pipeline_round_trips_through_model_index(minilm, reference_files, tmp_path):
    text_encoder, tokenizer = minilm
    pipeline = _pipeline(text_encoder, tokenizer, MINILM_TEXT_DIM)
    before = _generate(pipeline, reference_files)
    pipeline.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "BertModel"]

    loaded = KaleidoPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.text_encoder) is BertModel
    assert not loaded.text_encoder.training
    for name, tensor in text_encoder.state_dict().items():
        assert torch.equal(loaded.text_encoder.state_dict()[name], tensor), name
    assert np.array_equal(_generate(loaded, reference_files), before)


def test_minilm_states_are_zero_past_the_prompt_and_depend_on_it(minilm):
    text_encoder, tokenizer = minilm
    pipeline = _pipeline(text_encoder, tokenizer, MINILM_TEXT_DIM)
    states = pipeline.encode_prompt(["a red circle", "a blue star moves up"], max_sequence_length=16)
    assert states.shape == (2, 16, MINILM_TEXT_DIM)
    # [CLS] a red circle [SEP] is 5 tokens: everything after it is padding, zeroed.
    assert torch.all(states[0, 5:] == 0) and torch.all(states[0, :5].abs().sum(-1) > 0)
    assert not torch.allclose(states[0, :3], states[1, :3])


def test_tiny_random_bert_is_loaded_with_its_own_class(reference_files, tmp_path, minilm):
    _, tokenizer = minilm
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    pipeline = _pipeline(BertModel(config).eval(), tokenizer, 32)
    before = _generate(pipeline, reference_files[:1])
    pipeline.save_pretrained(tmp_path / "saved")
    loaded = KaleidoPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.text_encoder) is BertModel and loaded.text_encoder.config.hidden_size == 32
    assert np.array_equal(_generate(loaded, reference_files[:1]), before)


def test_umt5_folder_still_loads_umt5(tiny_model_dir):
    loaded = KaleidoPipeline.from_pretrained(tiny_model_dir)
    assert type(loaded.text_encoder).__name__ == "UMT5EncoderModel"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (["transformers", "NoSuchModel"], "NoSuchModel.*not a transformers model class"),
        (["transformers", "AutoTokenizer"], "AutoTokenizer.*not a transformers model class"),
        (["diffusers", "AutoencoderKLWan"], 'expected \\["transformers"'),
    ],
)
def test_unknown_text_encoder_class_is_refused_with_the_entry(tiny_model_dir, tmp_path, entry, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = entry
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=message):
        KaleidoPipeline.from_pretrained(folder)
