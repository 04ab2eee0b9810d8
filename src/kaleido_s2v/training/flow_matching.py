"""Flow-matching training objective (docs/model.md#4-flow-matching-training): sigma sampling, resolution shift, targets, loss.

The whole objective on one page:

    sigma   ~ shift(sigmoid(N(0, 1)), s)        s = exp(mu(n)), n = tokens per latent frame
    x_sigma = (1 - sigma) * x0 + sigma * eps    video latents only; references stay clean
    v       = eps - x0                          the model predicts v at timestep sigma * 1000
    loss    = mean((model(x_sigma) - v) ** 2)   over video latent elements
"""

from __future__ import annotations

import math

import torch

# mu(n) is linear in the token count n between these anchors (docs/model.md#4-flow-matching-training).
_BASE_TOKENS, _MAX_TOKENS = 256, 4096
_BASE_MU, _MAX_MU = 0.5, 1.15


def tokens_per_frame(latent_height: int, latent_width: int, patch_size: tuple[int, int] = (2, 2)) -> int:
    """Tokens of one latent frame after patchifying: (H_lat / p_h) * (W_lat / p_w)."""
    if latent_height % patch_size[0] or latent_width % patch_size[1]:
        raise ValueError(
            f"latent size {latent_height}x{latent_width} is not divisible by the patch {patch_size}"
        )
    return (latent_height // patch_size[0]) * (latent_width // patch_size[1])


def resolution_shift(num_tokens: int) -> float:
    """The shift s = exp(mu) for `num_tokens` tokens per latent frame (2.0559 at 480x832)."""
    mu = _BASE_MU + (_MAX_MU - _BASE_MU) * (num_tokens - _BASE_TOKENS) / (_MAX_TOKENS - _BASE_TOKENS)
    return math.exp(mu)


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """s * sigma / (1 + (s - 1) * sigma): moves mass towards high noise for s > 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sample_sigma(batch_size: int, shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) sigmas: sigmoid of a standard normal, then shifted. Drawn on CPU in fp32."""
    logits = torch.randn(batch_size, generator=generator, dtype=torch.float32)
    return shift_sigma(torch.sigmoid(logits), shift)


def noisy_latents(
    latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolate video latents towards noise and return (x_sigma, target v = eps - x0).

    latents, noise: (B, C, F, H, W); sigma: (B,).
    """
    if latents.shape != noise.shape:
        raise ValueError(f"latents {tuple(latents.shape)} and noise {tuple(noise.shape)} differ")
    sigma = sigma.to(latents.dtype).view(-1, *([1] * (latents.ndim - 1)))  # (B, 1, 1, 1, 1)
    x_sigma = (1 - sigma) * latents + sigma * noise
    return x_sigma, noise - latents


def timesteps_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """The model's timestep input, sigma * 1000 (shared by video and reference tokens)."""
    return sigma * 1000.0


def flow_matching_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every video latent element, computed in fp32."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ")
    return torch.mean((prediction.float() - target.float()) ** 2)
