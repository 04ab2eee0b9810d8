"""Tiny real components for fast CPU tests: the real classes, built from small configs, random weights.

Shared by the pipeline, training and evaluation tests (`from tiny_components import ...`; pytest
puts `tests/` on the import path). Nothing here downloads anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# The transformer config the whole project tests with (see the model API in docs/model.md#1-the-network).
TINY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=32,
    ffn_dim=48,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=128,
)

# Wan2.1's VAE (4 levels, temporal down-sampling in the last two) with 8 channels and one residual
# block per level: one image encodes to one latent frame, 8x smaller.
TINY_VAE_CONFIG = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
# The release VAE's exact block structure (channel multipliers 1, 2, 4, 4; 2 residual blocks),
# 24x narrower: what diffusers' `convert_wan_vae_to_diffusers` (hard-wired to it) can convert.
TINY_WAN_STRUCTURE_VAE_CONFIG = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)

TINY_TEXT_ENCODER_CONFIG = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=1,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    feed_forward_proj="gated-gelu",
    dropout_rate=0.0,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

# Words the tiny tokenizer knows; anything else becomes <unk>.
_TINY_CORPUS = (
    "a the cat dog man woman girl boy walks runs jumps sits on in at beach street park room red blue "
    "green yellow ball hat with and of to from is are video shot camera slowly quickly left right up "
    "down 色调艳丽 过曝 静态 细节模糊不清 字幕 低质量"
)


def tiny_transformer(seed: int = 0, rope_policy: str = "kaleido"):
    """KaleidoTransformer3DModel on the tiny test config, weights drawn from `seed`."""
    from kaleido_s2v.models.transformer import KaleidoTransformer3DModel

    torch.manual_seed(seed)
    return KaleidoTransformer3DModel(**TINY_TRANSFORMER_CONFIG, rope_policy=rope_policy).eval()


def tiny_vae(seed: int = 0, wan_structure: bool = False):
    """AutoencoderKLWan with 8 base channels (Wan2.1's latent statistics in its config).

    wan_structure: the release VAE's block structure instead (for Wan-layout conversion tests).
    """
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    config = TINY_WAN_STRUCTURE_VAE_CONFIG if wan_structure else TINY_VAE_CONFIG
    return AutoencoderKLWan(**config).eval()


def tiny_tokenizer():
    """A word-level tokenizer trained in-process, wrapped like umt5's: pad 0, </s> 1, <unk> 2, EOS appended."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer.train_from_iterator([_TINY_CORPUS], trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def tiny_text_encoder_and_tokenizer(seed: int = 0):
    """(UMT5EncoderModel with d_model 32, its tokenizer); the vocabulary size matches the tokenizer."""
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=len(tokenizer), **TINY_TEXT_ENCODER_CONFIG)
    return UMT5EncoderModel(config).eval(), tokenizer


def tiny_pipeline(seed: int = 0, scheduler: str = "kaleido_euler"):
    """A KaleidoPipeline from the tiny components (transformer, VAE, UMT5, tokenizer, scheduler preset)."""
    from kaleido_s2v.pipelines.generation_config import make_scheduler
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

    text_encoder, tokenizer = tiny_text_encoder_and_tokenizer(seed)
    return KaleidoPipeline(
        transformer=tiny_transformer(seed),
        vae=tiny_vae(seed),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=make_scheduler(scheduler),
    )


def save_tiny_pipeline(path: str | os.PathLike, seed: int = 0, scheduler: str = "kaleido_euler") -> Path:
    """Save a tiny pipeline in diffusers' format (with a small `generation_config.json`) and return the path."""

    path = Path(path)
    pipeline = tiny_pipeline(seed, scheduler=scheduler)
    pipeline.save_pretrained(path)
    tiny_generation_config().save(path)
    return path


def tiny_generation_config():
    """Generation defaults sized for the tiny components: 64x64, 5 frames, 2 steps."""
    from kaleido_s2v.pipelines.generation_config import GenerationConfig

    return GenerationConfig(
        height=64,
        width=64,
        num_frames=5,
        fps=8,
        num_inference_steps=2,
        guidance_scale=3.0,
        shift=7.0,
        negative_prompt="低质量",
        max_references=3,
    )
