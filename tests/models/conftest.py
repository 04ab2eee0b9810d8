import pytest
import torch
from diffusers import WanTransformer3DModel

TINY_CONFIG = dict(
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


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    return dict(TINY_CONFIG)


@pytest.fixture(scope="module")
def wan_model() -> WanTransformer3DModel:
    """diffusers' own Wan transformer, tiny, random but non-trivial weights."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY_CONFIG).eval()
    with torch.no_grad():
        # Zero-initialised pieces would hide wiring bugs; give every parameter a random value.
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.fixture(scope="module")
def kaleido_factory(wan_model):
    """Build a KaleidoTransformer3DModel with the Wan model's weights under a given policy."""
    from kaleido_s2v import KaleidoTransformer3DModel

    def build(rope_policy: str = "kaleido", **overrides) -> KaleidoTransformer3DModel:
        model = KaleidoTransformer3DModel(**{**TINY_CONFIG, **overrides}, rope_policy=rope_policy).eval()
        model.load_state_dict(wan_model.state_dict())
        return model

    return build
