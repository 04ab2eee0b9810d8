"""Parity of KaleidoTransformer3DModel with diffusers' Wan (S = 0) and with docs/model.md#1-the-network, docs/model.md#2-r-rope-positions (S > 0)."""

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from kaleido_s2v import KaleidoTransformer3DModel


def _inputs(batch, frames, height, width, seed=0, text_len=7):
    generator = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 16, frames, height, width, generator=generator)
    timestep = torch.rand(batch, generator=generator) * 1000
    text = torch.randn(batch, text_len, 32, generator=generator)
    return video, timestep, text


def _references(batch, sizes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 16, 1, h, w, generator=generator) for h, w in sizes]


# ---------------------------------------------------------------------------------------------
# An independent formulation of docs/model.md#1-the-network, docs/model.md#2-r-rope-positions, written from the text: explicit per-token positions,
# complex rotation of channel pairs (2k, 2k+1), references first, head on video tokens only.
# ---------------------------------------------------------------------------------------------


def _complex_rotary(positions: list[tuple[int, int, int]], head_dim: int) -> torch.Tensor:
    """(N, head_dim // 2) complex: exp(i * p_axis * 10000^(-2j / d_axis)) per axis block."""
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim
    columns = []
    for axis, d_axis in enumerate((t_dim, h_dim, w_dim)):
        frequencies = 10000.0 ** (-torch.arange(0, d_axis, 2, dtype=torch.float64) / d_axis)
        p = torch.tensor([pos[axis] for pos in positions], dtype=torch.float64)
        columns.append(
            torch.polar(torch.ones(len(p), len(frequencies), dtype=torch.float64), p[:, None] * frequencies)
        )
    return torch.cat(columns, dim=1)


class _ComplexRopeSelfAttention:
    """Self-attention with complex-number RoPE; `rotary_emb` is the (N, head_dim/2) complex table."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))

        def rotate(x):  # (B, N, heads, head_dim)
            pairs = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
            return torch.view_as_real(pairs * rotary_emb[None, :, None, :]).flatten(-2).to(x.dtype)

        query, key = rotate(query), rotate(key)
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        )
        return attn.to_out[0](out.transpose(1, 2).flatten(2))


def spec_forward(wan, video, timestep, text, references, offset):
    """Kaleido forward from docs/model.md#1-the-network, docs/model.md#2-r-rope-positions using the Wan model's parameters."""
    offset_h, offset_w = offset
    positions, tokens = [], []
    for index, reference in enumerate(references):
        h, w = reference.shape[3] // 2, reference.shape[4] // 2
        positions += [(index, offset_h + y, offset_w + x) for y in range(h) for x in range(w)]
        tokens.append(rearrange(wan.patch_embedding(reference), "b d 1 h w -> b (h w) d"))
    frames, height, width = video.shape[2], video.shape[3] // 2, video.shape[4] // 2
    positions += [(f, y, x) for f in range(frames) for y in range(height) for x in range(width)]
    tokens.append(rearrange(wan.patch_embedding(video), "b d f h w -> b (f h w) d"))
    x = torch.cat(tokens, dim=1)
    num_reference_tokens = x.shape[1] - tokens[-1].shape[1]

    rotary = _complex_rotary(positions, wan.config.attention_head_dim)
    temb, timestep_proj, text_states, _ = wan.condition_embedder(timestep, text, None)
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    original = [block.attn1.processor for block in wan.blocks]
    try:
        for block in wan.blocks:
            block.attn1.processor = _ComplexRopeSelfAttention()
            x = block(x, text_states, timestep_proj, rotary)
    finally:
        for block, processor in zip(wan.blocks, original, strict=True):
            block.attn1.processor = processor

    x = x[:, num_reference_tokens:]
    shift, scale = (wan.scale_shift_table + temb[:, None]).chunk(2, dim=1)
    x = wan.proj_out(wan.norm_out(x) * (1 + scale) + shift)
    return rearrange(
        x, "b (f h w) (pt ph pw c) -> b c (f pt) (h ph) (w pw)", f=frames, h=height, w=width, pt=1, ph=2, pw=2
    )


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (2, 3, 8, 12), (1, 5, 6, 10)])
def test_without_references_equals_diffusers_wan(wan_model, kaleido_factory, shape):
    model = kaleido_factory()
    video, timestep, text = _inputs(*shape)
    with torch.no_grad():
        expected = wan_model(video, timestep, text).sample
        for references in (None, []):
            out = model(video, timestep, text, reference_latents=references).sample
            assert (out - expected).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "policy, reference_sizes",
    [
        ("kaleido", [(8, 12)]),
        ("kaleido", [(8, 12), (8, 12)]),
        ("kaleido", [(8, 12), (4, 6), (6, 4)]),  # three references of different sizes
        ("video", [(8, 12), (4, 4)]),
        ("none", [(8, 12), (6, 6)]),
    ],
)
def test_with_references_equals_spec_formulation(wan_model, kaleido_factory, policy, reference_sizes):
    model = kaleido_factory(policy)
    video, timestep, text = _inputs(2, 3, 8, 12)
    references = _references(2, reference_sizes)  # batch 2: different references per sample
    offset = {"kaleido": (80, 80), "video": (4, 6), "none": (0, 0)}[policy]
    with torch.no_grad():
        out = model(video, timestep, text, reference_latents=references).sample
        expected = spec_forward(wan_model, video, timestep, text, references, offset)
    assert out.shape == video.shape
    relative = (out - expected).abs().max() / expected.abs().max()
    assert relative <= 1e-5, f"relative error {relative:.2e}"


def test_reference_tokens_change_the_prediction_per_sample(kaleido_factory):
    model = kaleido_factory()
    video, timestep, text = _inputs(2, 2, 4, 4)
    references = _references(2, [(4, 4)])
    with torch.no_grad():
        both = model(video, timestep, text, reference_latents=references).sample
        first_alone = model(video[:1], timestep[:1], text[:1], reference_latents=[references[0][:1]]).sample
        other = [references[0].flip(0)]
        swapped = model(video, timestep, text, reference_latents=other).sample
        plain = model(video, timestep, text).sample
    assert torch.allclose(both[:1], first_alone, atol=1e-5)  # samples do not leak into each other
    assert (both - swapped).abs().max() > 1e-3
    assert (both - plain).abs().max() > 1e-3


def test_policies_differ_and_none_is_not_kaleido(kaleido_factory):
    video, timestep, text = _inputs(1, 2, 4, 4)
    references = _references(1, [(4, 4)])
    with torch.no_grad():
        outs = {
            policy: kaleido_factory(policy)(video, timestep, text, reference_latents=references).sample
            for policy in ("kaleido", "video", "none")
        }
    assert (outs["kaleido"] - outs["none"]).abs().max() > 1e-4
    assert (outs["kaleido"] - outs["video"]).abs().max() > 1e-4


def test_save_and_load_round_trip_keeps_policy_and_output(kaleido_factory, wan_model, tmp_path):
    model = kaleido_factory("video")
    model.save_pretrained(tmp_path / "kaleido")
    loaded = KaleidoTransformer3DModel.from_pretrained(tmp_path / "kaleido").eval()
    assert loaded.config.rope_policy == "video"
    # A diffusers Wan folder loads into our class with the released policy by default.
    wan_model.save_pretrained(tmp_path / "wan")
    from_wan = KaleidoTransformer3DModel.from_pretrained(tmp_path / "wan")
    assert from_wan.config.rope_policy == "kaleido"
    video, timestep, text = _inputs(1, 2, 4, 4)
    references = _references(1, [(4, 4)])
    weights = model.state_dict()
    assert all(torch.equal(value, weights[key]) for key, value in loaded.state_dict().items())
    with torch.no_grad():
        # Equal weights; CPU kernels may round memory-mapped tensors differently (3.6e-7 measured).
        torch.testing.assert_close(
            model(video, timestep, text, reference_latents=references).sample,
            loaded(video, timestep, text, reference_latents=references).sample,
            rtol=0,
            atol=1e-6,
        )


def test_gradient_checkpointing_gives_the_same_gradients(kaleido_factory):
    video, timestep, text = _inputs(1, 2, 4, 4)
    references = _references(1, [(4, 4)])
    gradients = []
    for checkpointing in (False, True):
        model = kaleido_factory().train()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(video, timestep, text, reference_latents=references).sample.square().mean().backward()
        gradients.append(model.blocks[0].attn1.to_q.weight.grad.clone())
    assert gradients[0].abs().max() > 0
    assert torch.allclose(gradients[0], gradients[1], atol=1e-6)


def test_lora_adapter_trains_only_adapter_weights_and_changes_output(kaleido_factory):
    from peft import LoraConfig

    model = kaleido_factory()
    video, timestep, text = _inputs(1, 2, 4, 4)
    references = _references(1, [(4, 4)])
    with torch.no_grad():
        before = model(video, timestep, text, reference_latents=references).sample
    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
        after = model(video, timestep, text, reference_latents=references).sample
    assert (after - before).abs().max() > 1e-4


def test_attention_backend_switch_keeps_the_output(kaleido_factory):
    model = kaleido_factory()
    video, timestep, text = _inputs(1, 2, 4, 4)
    references = _references(1, [(4, 4)])
    with torch.no_grad():
        native = model(video, timestep, text, reference_latents=references).sample
        model.set_attention_backend("_native_math")
        math = model(video, timestep, text, reference_latents=references).sample
    assert torch.allclose(native, math, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(video_channels=4), "has 4 channels but this model takes 16"),
        (dict(reference_batch=1), "reference 0 has batch 1 but hidden_states has batch 2"),
        (dict(reference_channels=8), "reference 0 has 8 channels"),
        (dict(reference_frames=2), "reference 0 has 2 latent frames"),
        (dict(reference_size=(8, 60)), "reaches rotary position 109, but the table holds 100"),
        (dict(text_width=16), "text_dim is 32"),
        (dict(odd_video=True), "not divisible by the patch size"),
    ],
)
def test_bad_inputs_raise_clear_errors(kaleido_factory, change, message):
    model = kaleido_factory(rope_max_seq_len=100)
    batch = 2
    video = torch.randn(batch, change.get("video_channels", 16), 1, 5 if change.get("odd_video") else 4, 4)
    text = torch.randn(batch, 3, change.get("text_width", 32))
    ref_h, ref_w = change.get("reference_size", (4, 4))
    reference = torch.randn(
        change.get("reference_batch", batch),
        change.get("reference_channels", 16),
        change.get("reference_frames", 1),
        ref_h,
        ref_w,
    )
    with pytest.raises(ValueError, match=message):
        model(video, torch.zeros(batch), text, reference_latents=[reference])


def test_unknown_policy_at_construction(kaleido_factory):
    with pytest.raises(ValueError, match="unknown rope_policy 'sideways'"):
        kaleido_factory("sideways")


def test_warns_when_video_grid_reaches_the_kaleido_offset(kaleido_factory):
    model = kaleido_factory(rope_max_seq_len=256)
    video = torch.randn(1, 16, 1, 2, 164)  # patch grid 1 x 82: beyond the offset of 80
    with pytest.warns(UserWarning, match="overlap"), torch.no_grad():
        model(video, torch.zeros(1), torch.randn(1, 3, 32), reference_latents=_references(1, [(2, 2)]))
