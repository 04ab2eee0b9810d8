"""The frozen encoders, one rule for generation and training (docs/model.md#6-vae-and-text-encoder): text states and normalised latents.

Text: each prompt is cleaned (`clean_prompt`: HTML entities unescaped, whitespace collapsed), tokenised
with its end-of-text token, truncated or padded to `max_length` tokens and encoded; every position past
the prompt's own tokens is zero (Wan trims each prompt to its length and pads with zeros).

Latents: pixels in [-1, 1] are VAE-encoded to the posterior mean (never a sample) and normalised with
the VAE config's statistics as (z - latents_mean) * (1 / latents_std); `denormalize_latents` undoes it
before decoding. An image (a reference) is encoded as a one-frame video.

`KaleidoPipeline` calls these functions on its components; the trainer and its latent cache call them
through `LatentEncoder`, which holds the three frozen modules.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from kaleido_s2v.models.components import load_text_encoder, load_tokenizer, load_vae

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: unescape HTML entities (twice, for double-escaped text) and collapse whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def count_prompt_tokens(tokenizer, prompt: str) -> int:
    """Tokens the text encoder gets for `prompt` before truncation: cleaned as `encode_text` cleans it,
    special tokens (UMT5's end-of-text) included. `encode_text` keeps at most max_length of them, so a
    larger count means the end of the prompt is cut off."""
    return len(tokenizer(clean_prompt(prompt), add_special_tokens=True, verbose=False).input_ids)


def encode_text(
    text_encoder: torch.nn.Module, tokenizer, prompts: list[str], max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text states of the cleaned `prompts`, on the text encoder's execution device and in its dtype.

    Returns (states (N, max_length, D) zero past each prompt's tokens, lengths (N,) of those tokens).
    """
    tokens = tokenizer(
        [clean_prompt(p) for p in prompts],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    device = get_module_execution_device(text_encoder)
    mask = tokens.attention_mask.to(device)  # (N, L), 1 for the prompt's tokens then 0
    states = text_encoder(tokens.input_ids.to(device), attention_mask=mask).last_hidden_state  # (N, L, D)
    return states * mask[..., None].to(states.dtype), mask.sum(dim=1)


def latent_statistics(vae, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents_mean, 1 / latents_std) of the VAE config, each (1, C, 1, 1, 1) float32 on `device`."""
    config = vae.config
    mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, config.z_dim, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(config.latents_std, dtype=torch.float32).view(1, config.z_dim, 1, 1, 1)
    return mean.to(device), inv_std.to(device)


def encode_latents(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> normalised posterior means (B, C, (F - 1) / t + 1, H / s, W / s), float32
    on the VAE's execution device (t, s: the VAE's temporal and spatial scale factors)."""
    device = get_module_execution_device(vae)
    posterior_mean = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist.mode()
    mean, inv_std = latent_statistics(vae, device)
    return (posterior_mean.float() - mean) * inv_std


def denormalize_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Undo `encode_latents`' normalisation: latents / (1 / latents_std) + latents_mean, float32."""
    mean, inv_std = latent_statistics(vae, latents.device)
    return latents / inv_std + mean


class LatentEncoder:
    """The three frozen modules, encoding training clips, references and captions by the rules above.

    Results are float32 on the CPU: latents as `encode_latents` gives them, captions without padding
    (`pad_text_states` restores the zeros).
    """

    def __init__(
        self,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer,
        max_text_length: int = 512,
        device: torch.device | str = "cpu",
    ) -> None:
        # Moved to `device` in the dtype they have (from_folder loads both in its `dtype`).
        self.vae = vae.to(device=device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(device=device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        max_text_length: int = 512,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
    ) -> LatentEncoder:
        """Load `vae/`, `text_encoder/` and `tokenizer/` of a model folder as the pipeline loads them
        (`models.components`), both models in `dtype` ("float32", "bfloat16" or "float16")."""
        path = Path(path)
        for part in ("vae", "text_encoder", "tokenizer"):
            if not (path / part).is_dir():
                raise FileNotFoundError(
                    f"encoders.path {path} has no {part}/ folder; point it at a diffusers pipeline "
                    "folder (vae/, text_encoder/, tokenizer/)"
                )
        torch_dtype = _DTYPES[dtype]
        vae = load_vae(path, torch_dtype)
        text_encoder = load_text_encoder(path, torch_dtype)
        return cls(vae, text_encoder, load_tokenizer(path), max_text_length, device)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, 16, (F - 1) / 4 + 1, H / 8, W / 8) normalised latents (fp32)."""
        return encode_latents(self.vae, pixels).cpu()

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 16, 1, H / 8, W / 8): each image its own one-frame latent."""
        return self.encode_video(pixels.unsqueeze(2))

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> list[torch.Tensor]:
        """Each cleaned caption's states without padding: a list of (n_tokens_i, text_dim) fp32 tensors."""
        states, lengths = encode_text(self.text_encoder, self.tokenizer, captions, self.max_text_length)
        return [state[:length].float().cpu() for state, length in zip(states, lengths.tolist(), strict=True)]


def pad_text_states(states: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack per-caption states into (B, length, D), zeroing the padding positions (docs/model.md#6-vae-and-text-encoder)."""
    dim = states[0].shape[-1]
    batch = torch.zeros(len(states), length, dim, dtype=states[0].dtype)
    for row, state in enumerate(states):
        batch[row, : min(len(state), length)] = state[:length]
    return batch
