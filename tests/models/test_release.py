"""The release folder: Wan's T5 naming -> UMT5EncoderModel, Wan2.1_VAE.pth -> AutoencoderKLWan, whole pipeline."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from kaleido_s2v.models.checkpoints import save_sat_checkpoint
from kaleido_s2v.models.key_mapping import convert_state_dict
from kaleido_s2v.models.release import (
    load_release_components,
    load_umt5_encoder,
    load_wan_vae,
    transformers_t5_to_wan,
    wan_t5_to_transformers,
)
from tiny_components import TINY_TRANSFORMER_CONFIG, tiny_tokenizer, tiny_transformer, tiny_vae

# ---------------------------------------------------------------------------------------------
# A T5 encoder in Wan2.1's structure and naming, written for this test from the description of
# Wan's module (no code copied): token_embedding, blocks.i.{norm1, attn.{q,k,v,o}, norm2,
# ffn.{gate.0, fc1, fc2}, pos_embedding.embedding}, norm; RMS norms, unscaled attention with a
# per-layer bidirectional relative-position bias (max distance 128), tanh-GELU gated FFN.


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps))


def _relative_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    far = (
        exact
        + (
            torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
        ).long()
    )
    far = far.clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class _PositionBias(nn.Module):
    def __init__(self, num_buckets: int, num_heads: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int):
        position = torch.arange(length)
        relative = position[None, :] - position[:, None]  # key - query
        bias = self.embedding(_relative_bucket(relative, self.num_buckets, 128))  # (Lq, Lk, heads)
        return bias.permute(2, 0, 1)[None]  # (1, heads, Lq, Lk)


class _Attention(nn.Module):
    def __init__(self, dim: int, inner: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(dim, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, dim, bias=False)

    def forward(self, x, mask, bias):
        b, length, _ = x.shape
        q, k, v = (layer(x).view(b, length, self.heads, -1) for layer in (self.q, self.k, self.v))
        logits = torch.einsum("bqhd,bkhd->bhqk", q, k) + bias
        logits = logits.masked_fill(mask[:, None, None, :] == 0, torch.finfo(logits.dtype).min)
        weights = logits.float().softmax(-1)
        return self.o(torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, length, -1))


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.fc2(self.fc1(x) * self.gate(x))


class _Block(nn.Module):
    def __init__(self, dim, inner, hidden, heads, buckets) -> None:
        super().__init__()
        self.norm1, self.norm2 = _RMSNorm(dim), _RMSNorm(dim)
        self.attn = _Attention(dim, inner, heads)
        self.ffn = _FeedForward(dim, hidden)
        self.pos_embedding = _PositionBias(buckets, heads)

    def forward(self, x, mask):
        x = x + self.attn(self.norm1(x), mask, self.pos_embedding(x.shape[1]))
        return x + self.ffn(self.norm2(x))


class WanStyleT5Encoder(nn.Module):
    def __init__(self, vocab=40, dim=32, inner=32, hidden=64, heads=4, layers=2, buckets=8) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(_Block(dim, inner, hidden, heads, buckets) for _ in range(layers))
        self.norm = _RMSNorm(dim)

    def forward(self, ids, mask):
        x = self.token_embedding(ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def _randomised_wan_t5(seed: int = 0, vocab: int = 40) -> WanStyleT5Encoder:
    torch.manual_seed(seed)
    model = WanStyleT5Encoder(vocab=vocab).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                parameter.uniform_(0.5, 1.5)  # non-trivial norm weights catch a swapped norm
    return model


# ---------------------------------------------------------------------------------------------
# diffusers AutoencoderKLWan names -> Wan's original names (the inverse of diffusers' converter),
# to write a `Wan2.1_VAE.pth` from a tiny diffusers VAE.


def _diffusers_vae_to_wan(state_dict: dict) -> dict:
    fixed = {
        "encoder.conv_in.": "encoder.conv1.",
        "decoder.conv_in.": "decoder.conv1.",
        "quant_conv.": "conv1.",
        "post_quant_conv.": "conv2.",
        "encoder.norm_out.": "encoder.head.0.",
        "encoder.conv_out.": "encoder.head.2.",
        "decoder.norm_out.": "decoder.head.0.",
        "decoder.conv_out.": "decoder.head.2.",
        "encoder.mid_block.attentions.0.": "encoder.middle.1.",
        "decoder.mid_block.attentions.0.": "decoder.middle.1.",
    }
    resnet = {
        "norm1.": "residual.0.",
        "conv1.": "residual.2.",
        "norm2.": "residual.3.",
        "conv2.": "residual.6.",
    }
    converted = {}
    for key, value in state_dict.items():
        new = key
        for prefix, replacement in fixed.items():
            if key.startswith(prefix):
                new = replacement + key[len(prefix) :]
                break
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(\w+\.)(\w+)", key):
            part, index, layer, leaf = m.groups()
            new = f"{part}.middle.{2 * int(index)}.{resnet[layer]}{leaf}"
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
            index, rest = m.groups()
            for old, replacement in {**resnet, "conv_shortcut.": "shortcut."}.items():
                if rest.startswith(old):
                    rest = replacement + rest[len(old) :]
            new = f"encoder.downsamples.{index}.{rest}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.+)", key):
            block, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            for old, replacement in {**resnet, "conv_shortcut.": "shortcut."}.items():
                if rest.startswith(old):
                    rest = replacement + rest[len(old) :]
            new = f"decoder.upsamples.{4 * block + index}.{rest}"
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.(.+)", key):
            new = f"decoder.upsamples.{4 * int(m.group(1)) + 3}.{m.group(2)}"
        converted[new] = value
    return converted


# ---------------------------------------------------------------------------------------------


def test_t5_mapping_is_a_bijection_on_names_and_round_trips():
    wan_state = _randomised_wan_t5().state_dict()
    mapped = wan_t5_to_transformers(wan_state)
    assert mapped["encoder.embed_tokens.weight"] is mapped["shared.weight"]
    back = transformers_t5_to_wan(mapped)
    assert set(back) == set(wan_state)
    assert all(torch.equal(back[key], wan_state[key]) for key in wan_state)


def test_umt5_loaded_from_wan_t5_weights_computes_the_same_states(tmp_path):
    wan_model = _randomised_wan_t5(seed=1)
    torch.save(wan_model.state_dict(), tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    encoder = load_umt5_encoder(tmp_path, torch_dtype=torch.float32)
    assert encoder.config.num_layers == 2 and encoder.config.num_heads == 4 and encoder.config.d_kv == 8
    ids = torch.randint(3, 40, (2, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0  # the second prompt is padded
    ids[1, 13:] = 0
    with torch.no_grad():
        expected = wan_model(ids, mask)
        actual = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=2e-5)


def test_t5_file_with_foreign_keys_is_refused(tmp_path):
    state = _randomised_wan_t5().state_dict()
    state["decoder.blocks.0.attn.q.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "t5.pth")
    with pytest.raises(ValueError, match=r"not part of Wan's T5 encoder layout.*decoder\.blocks\.0"):
        load_umt5_encoder(tmp_path / "t5.pth")


def test_wan_vae_file_loads_into_autoencoder_kl_wan_exactly(tmp_path):
    vae = tiny_vae(seed=2, wan_structure=True)  # diffusers' converter is hard-wired to Wan2.1's blocks
    original = _diffusers_vae_to_wan(vae.state_dict())
    torch.save(original, tmp_path / "Wan2.1_VAE.pth")
    loaded = load_wan_vae(tmp_path / "Wan2.1_VAE.pth", vae_config=dict(vae.config))
    reference = vae.state_dict()
    assert set(loaded.state_dict()) == set(reference)
    assert all(torch.equal(loaded.state_dict()[key], reference[key]) for key in reference)


def test_wan_vae_with_missing_keys_names_them(tmp_path):
    vae = tiny_vae(seed=2, wan_structure=True)
    original = _diffusers_vae_to_wan(vae.state_dict())
    del original["decoder.head.2.weight"]
    torch.save(original, tmp_path / "Wan2.1_VAE.pth")
    with pytest.raises(ValueError, match=r"1 missing: decoder\.conv_out\.weight"):
        load_wan_vae(tmp_path / "Wan2.1_VAE.pth", vae_config=dict(vae.config))


def _write_release(folder, transformer, vae, wan_t5, tokenizer, numpy_rng_state: bool = True):
    diffusers_state = transformer.state_dict()
    weights = save_sat_checkpoint(convert_state_dict(diffusers_state, "diffusers", "sat"), folder / "model")
    if numpy_rng_state:
        # Mimic a DeepSpeed/SAT training checkpoint: numpy RNG state, a config dict and param shapes.
        checkpoint = torch.load(weights, weights_only=True)
        checkpoint["np_rng_state"] = np.random.get_state()
        checkpoint["args"] = {"lr": 5e-6, "mode": "finetune"}
        checkpoint["param_shapes"] = [{key: tuple(v.shape) for key, v in diffusers_state.items()}]
        torch.save(checkpoint, weights)
    torch.save(_diffusers_vae_to_wan(vae.state_dict()), folder / "Wan2.1_VAE.pth")
    (folder / "umt5-xxl").mkdir()
    torch.save(wan_t5.state_dict(), folder / "umt5-xxl" / "models_t5_umt5-xxl-enc-bf16.pth")
    tokenizer.save_pretrained(folder / "umt5-xxl")


def test_release_folder_loads_every_component(tmp_path):
    tokenizer = tiny_tokenizer()
    transformer, vae = tiny_transformer(3), tiny_vae(3, wan_structure=True)
    _write_release(tmp_path, transformer, vae, _randomised_wan_t5(3, vocab=len(tokenizer)), tokenizer)
    components = load_release_components(
        tmp_path,
        torch_dtype=torch.float32,
        vae_config=dict(vae.config),
        transformer_config=dict(TINY_TRANSFORMER_CONFIG),
    )
    for key, value in transformer.state_dict().items():
        assert torch.equal(components.transformer.state_dict()[key], value), key
    assert components.text_encoder.config.d_model == 32
    assert components.tokenizer("a cat").input_ids[-1] == components.tokenizer.eos_token_id


def test_release_folder_missing_parts_are_named(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing \['Wan2.1_VAE.pth', 'umt5-xxl'\]"):
        load_release_components(tmp_path)


def test_pipeline_from_kaleido_release_generates(tmp_path):
    from kaleido_s2v.pipelines.generation_config import scheduler_preset, scheduler_shift
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
    from tiny_components import tiny_generation_config

    tokenizer = tiny_tokenizer()
    transformer, vae = tiny_transformer(4), tiny_vae(4, wan_structure=True)
    _write_release(tmp_path, transformer, vae, _randomised_wan_t5(4, vocab=len(tokenizer)), tokenizer)
    pipe = KaleidoPipeline.from_kaleido_release(
        tmp_path,
        torch_dtype=torch.float32,
        generation_config=tiny_generation_config(),
        vae_config=dict(vae.config),
        transformer_config=dict(TINY_TRANSFORMER_CONFIG),
    )
    pipe.set_progress_bar_config(disable=True)
    reference = np.full((16, 24, 3), 90, np.uint8)
    first = pipe("a cat", reference_images=[reference], generator=torch.Generator().manual_seed(0)).frames
    second = pipe("a cat", reference_images=[reference], generator=torch.Generator().manual_seed(0)).frames
    assert first.shape == (1, 5, 64, 64, 3) and np.array_equal(first, second)
    assert scheduler_preset(pipe.scheduler) == "kaleido_euler" and scheduler_shift(pipe.scheduler) == 7.0
