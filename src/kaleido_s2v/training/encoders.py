"""The frozen encoders of training: Wan VAE for clips and references, umt5 for captions (SPEC §6).

Used once by the latent cache (`kaleido-s2v train cache`) or on every step without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LatentEncoder:
    """Encodes pixels to normalised VAE latents and captions to text states."""

    def __init__(
        self,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer,
        max_text_length: int = 512,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        # from_folder loads in `dtype`; modules passed in keep theirs (diffusers keeps some in fp32).
        self.vae = vae.to(device=device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(device=device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length
        self.device = torch.device(device)
        self.dtype = dtype
        config = self.vae.config
        channels = config.z_dim
        self._latent_mean = torch.tensor(config.latents_mean, dtype=torch.float32).view(1, channels, 1, 1, 1)
        self._latent_std = torch.tensor(config.latents_std, dtype=torch.float32).view(1, channels, 1, 1, 1)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        max_text_length: int = 512,
        device: torch.device | str = "cpu",
        dtype: str = "float32",
    ) -> LatentEncoder:
        """Load `vae/`, `text_encoder/` and `tokenizer/` from a diffusers pipeline folder.

        The text encoder is umt5 (Wan) or any transformers encoder returning `last_hidden_state`.
        """
        from diffusers import AutoencoderKLWan
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

        path = Path(path)
        for part in ("vae", "text_encoder", "tokenizer"):
            if not (path / part).is_dir():
                raise FileNotFoundError(
                    f"encoders.path {path} has no {part}/ folder; point it at a diffusers pipeline "
                    "folder (vae/, text_encoder/, tokenizer/)"
                )
        torch_dtype = _DTYPES[dtype]
        vae = AutoencoderKLWan.from_pretrained(path / "vae", torch_dtype=torch_dtype)
        # umt5 (Wan) loads encoder-only; another encoder (e.g. the demo's MiniLM BertModel) by AutoModel.
        model_type = AutoConfig.from_pretrained(path / "text_encoder").model_type
        text_class = {"umt5": UMT5EncoderModel, "t5": T5EncoderModel}.get(model_type, AutoModel)
        text_encoder = text_class.from_pretrained(path / "text_encoder", dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        return cls(vae, text_encoder, tokenizer, max_text_length, device, torch_dtype)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> (B, 16, (F - 1) / 4 + 1, H / 8, W / 8) normalised latents (fp32)."""
        posterior = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist
        latents = posterior.mean.float().cpu()  # the posterior mean, never a sample (SPEC §6)
        return (latents - self._latent_mean) / self._latent_std

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 16, 1, H / 8, W / 8): each image its own one-frame latent."""
        return self.encode_video(pixels.unsqueeze(2))

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> list[torch.Tensor]:
        """Each caption's states without padding: a list of (n_tokens_i, text_dim) fp32 tensors."""
        tokens = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.max_text_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        states = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask).last_hidden_state
        lengths = mask.sum(dim=1).tolist()
        return [state[:length].float().cpu() for state, length in zip(states, lengths, strict=True)]


def pad_text_states(states: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack per-caption states into (B, length, D), zeroing the padding positions (SPEC §6)."""
    dim = states[0].shape[-1]
    batch = torch.zeros(len(states), length, dim, dtype=states[0].dtype)
    for row, state in enumerate(states):
        batch[row, : min(len(state), length)] = state[:length]
    return batch
