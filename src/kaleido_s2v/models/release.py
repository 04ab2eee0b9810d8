"""Loading the Kaleido release folder (docs/contracts.md#11-loading-and-converting-checkpoints) into diffusers / transformers components.

    <release>/model/            Kaleido SAT transformer checkpoint (`latest`, `<iter>/mp_rank_00_model_states.pt`)
    <release>/Wan2.1_VAE.pth    Wan's VAE in Wan's original naming
    <release>/umt5-xxl/         `models_t5_umt5-xxl-enc-bf16.pth` (Wan's own T5 naming) + tokenizer files

The VAE goes through diffusers' `convert_wan_vae_to_diffusers`; the T5 encoder through the key
mapping below into transformers' `UMT5EncoderModel`. Files are read with `weights_only=True`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from kaleido_s2v.models.checkpoints import check_state_dict, load_torch_file, load_transformer

StateDict = dict[str, torch.Tensor]

RELEASE_VAE_NAME = "Wan2.1_VAE.pth"
RELEASE_T5_FOLDER = "umt5-xxl"
RELEASE_T5_NAME = "models_t5_umt5-xxl-enc-bf16.pth"
RELEASE_MODEL_FOLDER = "model"

# Wan's T5 computes relative-position buckets with max_dist = 128 (not stored in the weights).
WAN_T5_MAX_DISTANCE = 128

# Per-block renames, Wan T5 -> transformers UMT5 (block index i is kept).
# Wan's FFN is fc2(fc1(x) * gelu(gate(x))); UMT5's gated FFN is wo(wi_1(x) * gelu(wi_0(x))).
_T5_BLOCK_RENAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_T5_GLOBAL_RENAMES = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}


@dataclass
class ReleaseComponents:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object


# --- T5 ---------------------------------------------------------------------------------------


def wan_t5_to_transformers(state_dict: StateDict) -> StateDict:
    """Rename a Wan T5 encoder state dict to `UMT5EncoderModel`'s names. Raises on unknown keys."""
    converted: StateDict = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _T5_GLOBAL_RENAMES:
            converted[_T5_GLOBAL_RENAMES[key]] = value
            continue
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if match and match.group(2) in _T5_BLOCK_RENAMES:
            converted[f"encoder.block.{match.group(1)}.{_T5_BLOCK_RENAMES[match.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) are not part of Wan's T5 encoder layout: {unknown[:10]}; "
            "is this the umt5-xxl encoder file (models_t5_umt5-xxl-enc-bf16.pth)?"
        )
    # transformers ties the encoder's embedding to `shared`; give both names the same tensor.
    if "shared.weight" in converted:
        converted["encoder.embed_tokens.weight"] = converted["shared.weight"]
    return converted


def transformers_t5_to_wan(state_dict: StateDict) -> StateDict:
    """The inverse of `wan_t5_to_transformers` (the tied `encoder.embed_tokens` copy is dropped)."""
    inverse_global = {value: key for key, value in _T5_GLOBAL_RENAMES.items()}
    inverse_block = {value: key for key, value in _T5_BLOCK_RENAMES.items()}
    converted: StateDict = {}
    for key, value in state_dict.items():
        if key == "encoder.embed_tokens.weight":
            continue
        if key in inverse_global:
            converted[inverse_global[key]] = value
            continue
        match = re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", key)
        if not match or match.group(2) not in inverse_block:
            raise ValueError(f"{key} has no counterpart in Wan's T5 encoder layout")
        converted[f"blocks.{match.group(1)}.{inverse_block[match.group(2)]}"] = value
    return converted


def umt5_config_from_wan_t5(state_dict: StateDict):
    """The `UMT5Config` a Wan T5 encoder state dict describes (umt5-xxl: 4096 wide, 24 layers, 64 heads)."""
    from transformers import UMT5Config

    vocab_size, d_model = state_dict["token_embedding.weight"].shape
    num_layers = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key)))
    num_buckets, num_heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
    inner_dim = state_dict["blocks.0.attn.q.weight"].shape[0]
    return UMT5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=inner_dim // num_heads,
        d_ff=state_dict["blocks.0.ffn.fc1.weight"].shape[0],
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=WAN_T5_MAX_DISTANCE,
        feed_forward_proj="gated-gelu",  # Wan's GELU is the tanh approximation, transformers' gelu_new
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )


def load_umt5_encoder(path: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """UMT5EncoderModel from Wan's T5 `.pth` (a file, or a folder holding one) or a transformers folder."""
    from transformers import UMT5EncoderModel

    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return UMT5EncoderModel.from_pretrained(path, dtype=torch_dtype).eval()
    weights = _find_t5_weights(path)
    wan_state = load_torch_file(weights)
    if "token_embedding.weight" not in wan_state:
        raise ValueError(f"{weights} is not a Wan T5 encoder (no token_embedding.weight)")
    config = umt5_config_from_wan_t5(wan_state)
    state = wan_t5_to_transformers(wan_state)
    with torch.device("meta"):
        model = UMT5EncoderModel(config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    check_state_dict(state, expected, f"{weights} (Wan T5 layout)")
    dtype = torch_dtype or next(iter(wan_state.values())).dtype
    model.load_state_dict({key: value.to(dtype) for key, value in state.items()}, assign=True)
    model.tie_weights()
    return model.eval()


def _find_t5_weights(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder {path} does not exist")
    if (path / RELEASE_T5_NAME).is_file():
        return path / RELEASE_T5_NAME
    candidates = sorted(path.glob("*.pth"))
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{path} should hold {RELEASE_T5_NAME} (Wan's umt5-xxl encoder) or a transformers config.json; "
            f"found {[c.name for c in candidates] or 'no .pth file'}"
        )
    return candidates[0]


# --- VAE --------------------------------------------------------------------------------------


def load_wan_vae(
    path: str | os.PathLike, vae_config: dict | None = None, torch_dtype: torch.dtype = torch.float32
):
    """AutoencoderKLWan from Wan's original `Wan2.1_VAE.pth`.

    vae_config: AutoencoderKLWan arguments (default: diffusers' defaults, which are Wan2.1's VAE).
    diffusers' converter assumes Wan2.1's block structure (2 residual blocks per level).
    """
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    original = load_torch_file(path)
    if "state_dict" in original and isinstance(original["state_dict"], dict):
        original = original["state_dict"]
    # diffusers' converters may consume their argument: hand them a shallow copy.
    converted = convert_wan_vae_to_diffusers(dict(original))
    with torch.device("meta"):
        model = AutoencoderKLWan(**(vae_config or {}))
    expected = {key: value.shape for key, value in model.state_dict().items()}
    check_state_dict(converted, expected, f"{path} (Wan original VAE layout)")
    model.load_state_dict({key: value.to(torch_dtype) for key, value in converted.items()}, assign=True)
    return model.eval()


# --- the whole release ------------------------------------------------------------------------


def is_release_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / RELEASE_MODEL_FOLDER).is_dir() and (path / RELEASE_VAE_NAME).is_file()


def load_release_components(
    path: str | os.PathLike,
    torch_dtype: torch.dtype | None = torch.bfloat16,
    vae_dtype: torch.dtype = torch.float32,
    vae_config: dict | None = None,
    transformer_config: dict | None = None,
) -> ReleaseComponents:
    """Transformer, VAE, UMT5 encoder and tokenizer from a release folder.

    transformer_config: constructor arguments when they cannot be inferred from the weights (the
        head dimension is assumed 128, as in every released Wan2.1 model).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    missing = [
        name
        for name in (RELEASE_MODEL_FOLDER, RELEASE_VAE_NAME, RELEASE_T5_FOLDER)
        if not (path / name).exists()
    ]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a Kaleido release folder: missing {missing} "
            f"(expected {RELEASE_MODEL_FOLDER}/, {RELEASE_VAE_NAME}, {RELEASE_T5_FOLDER}/)"
        )
    text_folder = path / RELEASE_T5_FOLDER
    return ReleaseComponents(
        transformer=load_transformer(
            path / RELEASE_MODEL_FOLDER, torch_dtype=torch_dtype, config=transformer_config
        ),
        vae=load_wan_vae(path / RELEASE_VAE_NAME, vae_config=vae_config, torch_dtype=vae_dtype),
        text_encoder=load_umt5_encoder(text_folder, torch_dtype=torch_dtype),
        tokenizer=AutoTokenizer.from_pretrained(text_folder),
    )
