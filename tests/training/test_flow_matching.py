import json
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
from kaleido_s2v.training.trainer import Trainer, sample_seed
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


def _shift_by_the_formula(latent_height: int, latent_width: int) -> float:
    """docs/model.md#4-flow-matching-training: s = exp(mu),
    mu = 0.5 + (1.15 - 0.5) * (n - 256) / (4096 - 256), n = (H_lat / 2) * (W_lat / 2) tokens per latent frame."""
    tokens = (latent_height // 2) * (latent_width // 2)
    return math.exp(0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256))


def _sigma_by_the_formula(shift: float, seed: int, step: int, position: int) -> float:
    """sigma = s * u / (1 + (s - 1) * u), u = sigmoid(n), n ~ N(0, 1) from the sample's own generator
    (seeded by (seed, step, position); its caption-dropout draw comes first), in fp32."""
    generator = torch.Generator().manual_seed(sample_seed(seed, step, 0, position))
    torch.rand(1, generator=generator)  # the caption-dropout draw
    n = torch.randn(1, generator=generator, dtype=torch.float32).item()
    u = 1.0 / (1.0 + math.exp(-n))
    return shift * u / (1.0 + (shift - 1.0) * u)


def _shift_that_gave(sigma: float, shift_free_sigma: float) -> float:
    """The s with s * u / (1 + (s - 1) * u) == sigma, for u = the unshifted draw (s = 1)."""
    u = shift_free_sigma
    return sigma * (1.0 - u) / (u * (1.0 - sigma))


@pytest.mark.parametrize("setting", ["auto", 3.0])
def test_drawn_sigmas_follow_the_shift_formula_and_the_recorded_shift_is_the_one_used(tmp_path, setting):
    dataset = latent_dataset(num_clips=3, size=8)  # 8x8 latents: 16 tokens per frame
    expected_shift = _shift_by_the_formula(8, 8) if setting == "auto" else 3.0
    config = tiny_config(tmp_path, max_steps=2, micro_batch_size=3, shift=setting)
    trainer = Trainer(config, dataset=dataset)

    # The sigmas of one micro-batch, for a fixed (seed, step, position): exactly the formula's values.
    _, _, sigma = trainer._prepare([dataset[i] for i in range(3)], step=5, first_position=2, drop_slot=None)
    expected = [_sigma_by_the_formula(expected_shift, config.seed, 5, 2 + i) for i in range(3)]
    assert sigma.tolist() == pytest.approx(expected, rel=1e-6)
    unshifted = [_sigma_by_the_formula(1.0, config.seed, 5, 2 + i) for i in range(3)]
    assert sigma.tolist() != pytest.approx(unshifted, rel=1e-3)  # the shift moved every one of them

    # The sigmas train() actually feeds the loss, step by step, and the shift the export records.
    drawn = []
    original_loss = trainer._loss

    def recording_loss(batch, noise, sigma):
        drawn.append(sigma.clone())
        return original_loss(batch, noise, sigma)

    trainer._loss = recording_loss
    trainer.train()
    assert len(drawn) == 2
    for step, sigmas in enumerate(drawn):
        expected = [_sigma_by_the_formula(expected_shift, config.seed, step, i) for i in range(3)]
        assert sigmas.tolist() == pytest.approx(expected, rel=1e-6)
    record = json.loads((tmp_path / "final" / "training_state.json").read_text())["shift"]
    assert record == {"setting": setting, "values": {"64x64": pytest.approx(expected_shift, rel=1e-9)}}
    used = [
        _shift_that_gave(s, _sigma_by_the_formula(1.0, config.seed, step, i))
        for step, sigmas in enumerate(drawn)
        for i, s in enumerate(sigmas.tolist())
    ]
    assert used == pytest.approx([record["values"]["64x64"]] * 6, rel=1e-4)
