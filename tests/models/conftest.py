import pytest
import torch
from diffusers import WanTransformer3DModel

from tiny_components import TINY_TRANSFORMER_CONFIG

TINY_CONFIG = TINY_TRANSFORMER_CONFIG  # the project's shared tiny transformer


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
