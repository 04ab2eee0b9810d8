"""One encoder rule for generation and training (kaleido_s2v.models.encoders): the pipeline and the
trainer's LatentEncoder, loaded from the same tiny folder, give identical text states and latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kaleido_s2v.models.encoders import (
    LatentEncoder,
    clean_prompt,
    denormalize_latents,
    encode_latents,
    pad_text_states,
)
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from kaleido_s2v.pipelines.references import prepare_references
from tiny_components import save_tiny_pipeline

TEXT_LENGTH = 16
MESSY_PROMPTS = [
    "  a cat &amp; a dog\n\twalk   on the beach ",
    "a red &amp;lt;ball&amp;gt; jumps",  # double-escaped HTML
    "a man runs left",
    "",
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(pipeline, trainer encoder), each loaded from the same saved tiny pipeline folder."""
    folder = save_tiny_pipeline(tmp_path_factory.mktemp("encoders") / "model")
    return KaleidoPipeline.from_pretrained(folder), LatentEncoder.from_folder(folder, TEXT_LENGTH)


def test_both_load_the_same_encoder_weights(loaded):
    pipeline, encoder = loaded
    assert type(encoder.text_encoder) is type(pipeline.text_encoder)
    for module, other in ((pipeline.text_encoder, encoder.text_encoder), (pipeline.vae, encoder.vae)):
        theirs = other.state_dict()
        assert all(torch.equal(tensor, theirs[name]) for name, tensor in module.state_dict().items())


def test_text_states_are_equal_for_messy_prompts(loaded):
    pipeline, encoder = loaded
    with torch.no_grad():
        generation = pipeline.encode_prompt(MESSY_PROMPTS, max_sequence_length=TEXT_LENGTH)
    training = pad_text_states(encoder.encode_text(MESSY_PROMPTS), TEXT_LENGTH)
    assert generation.shape == training.shape == (4, TEXT_LENGTH, 32)
    assert torch.equal(generation, training)


def test_training_captions_are_cleaned_like_prompts(loaded):
    """Behaviour change: captions get the pipeline's `clean_prompt` (before, only prompts did)."""
    _, encoder = loaded
    messy, clean = encoder.encode_text([MESSY_PROMPTS[0], clean_prompt(MESSY_PROMPTS[0])])
    assert clean_prompt(MESSY_PROMPTS[0]) == "a cat & a dog walk on the beach"
    assert torch.equal(messy, clean)


def test_reference_latents_are_equal_one_frame_each(loaded):
    pipeline, encoder = loaded
    images = [np.full((20, 40, 3), (200, 30, 30), np.uint8), np.full((48, 16, 3), (30, 180, 30), np.uint8)]
    pixels = prepare_references(images, 64, 64)  # (2, 3, 64, 64)
    with torch.no_grad():
        generation = pipeline.encode_references(pixels)
    for index, latent in enumerate(generation):
        alone = encoder.encode_images(pixels[index : index + 1])  # each reference encoded alone
        assert latent.shape == alone.shape == (1, 16, 1, 8, 8)
        assert torch.equal(latent, alone)


def test_video_latents_are_the_normalised_posterior_mean_the_pipeline_decodes(loaded):
    pipeline, encoder = loaded
    video = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    training = encoder.encode_video(video)
    assert training.shape == (1, 16, 2, 8, 8)
    with torch.no_grad():
        assert torch.equal(training, encode_latents(pipeline.vae, video))
        posterior_mean = pipeline.vae.encode(video).latent_dist.mean
    config = pipeline.vae.config
    mean = torch.tensor(config.latents_mean).view(1, 16, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(config.latents_std).view(1, 16, 1, 1, 1)
    # Behaviour change for training: (z - mean) * (1 / std), the pipeline's arithmetic (was / std).
    assert torch.equal(training, (posterior_mean - mean) * inv_std)
    torch.testing.assert_close(denormalize_latents(pipeline.vae, training), posterior_mean)
