"""KaleidoTransformer3DModel: Wan2.1's diffusion transformer on `[references | video]` tokens.

Kaleido adds no weights to Wan2.1-T2V (docs/model.md#1-the-network). Each reference is one clean VAE latent frame,
patch-embedded by Wan's own Conv3d; its tokens go in front of the video tokens, get R-RoPE
positions (`rope.py`), pass through every block exactly like video tokens (same timestep
modulation, self-attention, cross-attention, FFN), and are dropped before the output projection.
With no references the model is exactly `WanTransformer3DModel`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.utils import apply_lora_scale

from kaleido_s2v.models.rope import (
    KALEIDO_REFERENCE_OFFSET,
    ROPE_POLICIES,
    ReferenceRotaryPosEmbed,
    check_positions_fit,
    token_positions,
)


class KaleidoTransformer3DModel(WanTransformer3DModel):
    """Wan2.1 transformer that also attends to reference-image tokens (Kaleido S2V).

    Args: those of `WanTransformer3DModel`, plus
        rope_policy: where reference tokens sit in the rotary table: "kaleido" (the released
            rule, offset (80, 80)), "video" (offset by the video's patch grid) or "none".
    """

    # Under context parallelism the rotary embedding and the block input are split along the
    # sequence; the sequence is gathered after the final norm, before reference tokens are
    # dropped (diffusers' Wan plan gathers at `proj_out`, which here sees video tokens only).
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
            1: ContextParallelInput(split_dim=1, expected_dims=4, split_output=True),
        },
        "blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "norm_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        rope_policy: str = "kaleido",
    ) -> None:
        if rope_policy not in ROPE_POLICIES:
            raise ValueError(f"unknown rope_policy {rope_policy!r}; choose one of {', '.join(ROPE_POLICIES)}")
        super().__init__(
            patch_size=patch_size,
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )
        # Same tables as Wan's, looked up at explicit per-token positions.
        self.rope = ReferenceRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len)

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_latents: list[torch.Tensor] | None = None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the flow for the video latents, attending to clean reference latents.

        Args:
            hidden_states: noisy video latents (B, C, F, H, W).
            timestep: (B,) or a scalar; sigma * 1000, shared by video and reference tokens.
            encoder_hidden_states: text states (B, L, text_dim).
            reference_latents: S clean latents (B, C, 1, h_i, w_i), in order; sizes may differ.
                None or [] gives Wan2.1-T2V exactly.
        Returns:
            the prediction for the video only, (B, C_out, F, H, W).
        """
        references = list(reference_latents or [])
        timestep = self._check_inputs(hidden_states, timestep, encoder_hidden_states, references)
        batch_size, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        video_grid = (num_frames // p_t, height // p_h, width // p_w)
        reference_grids = [(ref.shape[3] // p_h, ref.shape[4] // p_w) for ref in references]

        # 1. Positions of [ref_0 | ... | ref_{S-1} | video] and their rotary embedding.
        config = self.config
        check_positions_fit(video_grid, reference_grids, config.rope_policy, config.rope_max_seq_len)
        self._warn_if_positions_overlap(video_grid, reference_grids)
        positions = token_positions(video_grid, reference_grids, config.rope_policy)
        rotary_emb = self.rope(positions)  # cos, sin: (1, N_ref + N_video, 1, head_dim)

        # 2. Patchify every part with the same Conv3d and concatenate, references first.
        parts = [*references, hidden_states]
        tokens = [self.patch_embedding(part).flatten(2).transpose(1, 2) for part in parts]
        hidden_states = torch.cat(tokens, dim=1).contiguous()  # (B, N_ref + N_video, D)
        num_reference_tokens = hidden_states.shape[1] - tokens[-1].shape[1]

        # 3. Timestep and text conditioning (one timestep for all tokens).
        temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=None
        )
        timestep_proj = timestep_proj.unflatten(1, (6, -1))  # (B, 6, D)
        if encoder_hidden_states_image is not None:
            encoder_hidden_states = torch.cat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

        # 4. Transformer blocks over the joint sequence.
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)

        # 5. Final norm, drop reference tokens, modulate, project and unpatchify the video.
        hidden_states = self.norm_out(hidden_states.float())
        hidden_states = hidden_states[:, num_reference_tokens:]  # (B, F*H*W, D)
        shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (hidden_states * (1 + scale) + shift).type_as(tokens[-1])
        hidden_states = self.proj_out(hidden_states)  # (B, F*H*W, p_t*p_h*p_w*C_out)

        post_f, post_h, post_w = video_grid
        hidden_states = hidden_states.reshape(batch_size, post_f, post_h, post_w, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)  # (B, C_out, F, H, W)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _check_inputs(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        references: list[torch.Tensor],
    ) -> torch.Tensor:
        """Validate shapes with actionable messages; return the timestep as (B,)."""
        in_channels = self.config.in_channels
        p_t, p_h, p_w = self.config.patch_size
        if hidden_states.ndim != 5:
            raise ValueError(f"hidden_states must be (B, C, F, H, W), got shape {tuple(hidden_states.shape)}")
        batch_size, channels, num_frames, height, width = hidden_states.shape
        if channels != in_channels:
            raise ValueError(
                f"hidden_states has {channels} channels but this model takes {in_channels} "
                "(config.in_channels); pass VAE latents, not pixels"
            )
        if num_frames % p_t or height % p_h or width % p_w:
            raise ValueError(
                f"latent size (F={num_frames}, H={height}, W={width}) is not divisible by the patch size "
                f"{tuple(self.config.patch_size)}"
            )
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch_size:
            raise ValueError(
                f"encoder_hidden_states must be (B={batch_size}, L, {self.config.text_dim}), "
                f"got {tuple(encoder_hidden_states.shape)}"
            )
        if encoder_hidden_states.shape[-1] != self.config.text_dim:
            raise ValueError(
                f"encoder_hidden_states has width {encoder_hidden_states.shape[-1]} but this model's "
                f"text_dim is {self.config.text_dim}"
            )
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch_size)
        if timestep.shape != (batch_size,):
            raise ValueError(
                f"timestep must be a scalar or shape ({batch_size},), got {tuple(timestep.shape)}; "
                "per-token timesteps are not supported with reference tokens"
            )
        for index, reference in enumerate(references):
            if reference.ndim != 5:
                raise ValueError(
                    f"reference {index} must be (B, C, 1, h, w) latents, got shape {tuple(reference.shape)}"
                )
            ref_batch, ref_channels, ref_frames, ref_h, ref_w = reference.shape
            if ref_batch != batch_size:
                raise ValueError(
                    f"reference {index} has batch {ref_batch} but hidden_states has batch {batch_size}; "
                    "give every sample the same number of references, one tensor per slot"
                )
            if ref_channels != in_channels:
                raise ValueError(
                    f"reference {index} has {ref_channels} channels but this model takes {in_channels}"
                )
            if ref_frames != 1:
                raise ValueError(
                    f"reference {index} has {ref_frames} latent frames; each reference is one "
                    "VAE-encoded image (1 latent frame)"
                )
            if ref_h % p_h or ref_w % p_w:
                raise ValueError(
                    f"reference {index} latent size {ref_h}x{ref_w} is not divisible by the patch size "
                    f"{p_h}x{p_w}"
                )
        return timestep

    def _warn_if_positions_overlap(
        self, video_grid: tuple[int, int, int], reference_grids: list[tuple[int, int]]
    ) -> None:
        """Warn when video and reference rotary positions overlap, which the release never saw."""
        if (
            self.config.rope_policy == "kaleido"
            and reference_grids
            and max(video_grid[1:]) > KALEIDO_REFERENCE_OFFSET
        ):
            warnings.warn(
                f"video patch grid {video_grid[1]}x{video_grid[2]} exceeds the R-RoPE offset "
                f"{KALEIDO_REFERENCE_OFFSET}: video and reference rotary positions overlap, which the "
                "released model never saw in training",
                stacklevel=3,
            )
