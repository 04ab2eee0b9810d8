import math

import pytest
import torch

from kaleido_s2v.training.flow_matching import (
    flow_matching_loss,
    noisy_latents,
    resolution_shift,
    sample_sigma,
    shift_sigma,
    timesteps_from_sigma,
    tokens_per_frame,
)
from kaleido_s2v.training.trainer import Trainer
from training.training_helpers import latent_dataset, tiny_config


@pytest.mark.parametrize(("height", "width", "expected"), [(480, 832, 2.0559), (512, 896, 2.1383)])
def test_resolution_shift_matches_spec(height, width, expected):
    tokens = tokens_per_frame(height // 8, width // 8)
    assert tokens == (height // 16) * (width // 16)
    assert resolution_shift(tokens) == pytest.approx(expected, abs=5e-5)


def test_shift_endpoints_and_anchors():
    assert resolution_shift(256) == pytest.approx(math.exp(0.5))
    assert resolution_shift(4096) == pytest.approx(math.exp(1.15))
    sigma = torch.tensor([0.0, 0.5, 1.0])
    shifted = shift_sigma(sigma, 3.0)
    assert shifted.tolist() == pytest.approx([0.0, 0.75, 1.0])


def test_sampled_sigma_is_shifted_logit_normal():
    generator = torch.Generator().manual_seed(0)
    sigma = sample_sigma(200_000, 2.0, generator)
    assert 0 < sigma.min() and sigma.max() < 1
    # The median of sigmoid(N(0,1)) is 0.5, which the shift maps to 2*0.5/(1+0.5) = 2/3.
    assert sigma.median().item() == pytest.approx(2 / 3, abs=5e-3)
    unshifted = sample_sigma(200_000, 1.0, torch.Generator().manual_seed(0))
    assert torch.allclose(shift_sigma(unshifted, 2.0), sigma)


def test_interpolation_target_timestep_and_loss():
    x0 = torch.randn(2, 4, 3, 4, 4)
    eps = torch.randn(2, 4, 3, 4, 4)
    sigma = torch.tensor([0.25, 1.0])
    x_sigma, target = noisy_latents(x0, eps, sigma)
    assert torch.allclose(x_sigma[0], 0.75 * x0[0] + 0.25 * eps[0])
    assert torch.allclose(x_sigma[1], eps[1])
    assert torch.equal(target, eps - x0)
    assert timesteps_from_sigma(sigma).tolist() == [250.0, 1000.0]
    assert flow_matching_loss(target, target) == 0
    assert flow_matching_loss(torch.zeros_like(target), target) == pytest.approx((target**2).mean().item())


def test_trainer_feeds_the_model_exactly_the_spec_inputs(tmp_path):
    """Video latents noised, references clean, timestep sigma*1000, target eps - x0, auto shift."""
    dataset = latent_dataset(num_clips=2, num_references=2)
    trainer = Trainer(tiny_config(tmp_path, max_steps=1), dataset=dataset)
    examples = [dataset[i] for i in range(2)]
    batch, noise, sigma = trainer._prepare(examples, step=0, first_position=0, drop_slot=None)
    # 8x8 latents at patch 2: 16 tokens per frame -> auto shift exp(0.5 + 0.65 * (16 - 256) / 3840).
    unshifted = sigma / (resolution_shift(16) - (resolution_shift(16) - 1) * sigma)
    assert torch.all((unshifted > 0) & (unshifted < 1))
    seen = {}

    def spy(hidden_states, timestep, encoder_hidden_states, reference_latents, return_dict):
        seen.update(x=hidden_states, t=timestep, refs=reference_latents, text=encoder_hidden_states)
        return (torch.zeros_like(hidden_states),)

    trainer.model = spy
    loss = trainer._loss(batch, noise, sigma)
    x0 = torch.stack([e.latents for e in examples])
    s = sigma.view(-1, 1, 1, 1, 1)
    assert torch.allclose(seen["x"], (1 - s) * x0 + s * noise)
    assert torch.allclose(seen["t"], sigma * 1000)
    assert len(seen["refs"]) == 2
    for slot in range(2):
        assert torch.equal(seen["refs"][slot], torch.stack([e.reference_latents[slot] for e in examples]))
    assert seen["text"].shape == (2, 8, 32) and torch.all(seen["text"][:, 5:] == 0)
    assert loss.item() == pytest.approx(((noise - x0) ** 2).mean().item(), rel=1e-6)


def test_caption_dropout_uses_empty_states_and_reference_dropout_removes_one_slot(tmp_path):
    dataset = latent_dataset(num_clips=2, num_references=2)
    trainer = Trainer(tiny_config(tmp_path, max_steps=1, data=dict(caption_dropout=1.0)), dataset=dataset)
    examples = [dataset[i] for i in range(2)]
    batch, _, _ = trainer._prepare(examples, step=0, first_position=0, drop_slot=1)
    assert torch.all(batch.text_states == 0)  # the dataset's empty-caption states are zeros
    assert len(batch.reference_latents) == 1
    assert torch.equal(batch.reference_latents[0], torch.stack([e.reference_latents[0] for e in examples]))
