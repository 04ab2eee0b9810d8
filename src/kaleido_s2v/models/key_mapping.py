"""Pure conversions between the three transformer weight layouts (docs/model.md#7-checkpoint-layouts-and-conversions).

- "wan":       Wan2.1's original names (`blocks.i.self_attn.q.weight`, `head.modulation`, ...)
- "diffusers": diffusers' `WanTransformer3DModel` names (`blocks.i.attn1.to_q.weight`, ...)
- "sat":       the Kaleido SAT release (`transformer.layers.i.attention.query_key_value.weight`,
               fused q/k/v and k/v), after stripping `model.diffusion_model.`

Wan -> diffusers is diffusers' own converter; the other directions are written here so that
wan <-> diffusers <-> sat round-trips exactly. Functions never modify their argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

StateDict = dict[str, torch.Tensor]

LAYOUTS = ("diffusers", "wan", "sat")
SAT_PREFIX = "model.diffusion_model."

# --- Wan original <-> diffusers (per block i, the suffix after `blocks.i.`) -------------------
_WAN_BLOCK_TO_DIFFUSERS = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "norm3": "norm2",  # Wan's cross-attention norm (affine) is diffusers' norm2
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "modulation": "scale_shift_table",
}
_WAN_TOP_TO_DIFFUSERS = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",
}

# --- Wan original <-> SAT, unfused parts (docs/model.md#7-checkpoint-layouts-and-conversions table); {i} is the block index -------------
_WAN_BLOCK_TO_SAT = {
    "self_attn.o": "transformer.layers.{i}.attention.dense",
    "self_attn.norm_q": "mixins.adaln_layer.query_layernorm_list.{i}",
    "self_attn.norm_k": "mixins.adaln_layer.key_layernorm_list.{i}",
    "cross_attn.q": "transformer.layers.{i}.cross_attention.query",
    "cross_attn.o": "transformer.layers.{i}.cross_attention.dense",
    "cross_attn.norm_q": "mixins.adaln_layer.cross_query_layernorm_list.{i}",
    "cross_attn.norm_k": "mixins.adaln_layer.cross_key_layernorm_list.{i}",
    "norm3": "transformer.layers.{i}.post_cross_attention_layernorm",
    "ffn.0": "transformer.layers.{i}.mlp.dense_h_to_4h",
    "ffn.2": "transformer.layers.{i}.mlp.dense_4h_to_h",
    "modulation": "mixins.adaln_layer.adaLN_modulations.{i}",
}
# Fused in SAT: concatenated on dim 0, in this order.
_WAN_BLOCK_FUSED_TO_SAT = {
    ("self_attn.q", "self_attn.k", "self_attn.v"): "transformer.layers.{i}.attention.query_key_value",
    ("cross_attn.k", "cross_attn.v"): "transformer.layers.{i}.cross_attention.key_value",
}
_WAN_TOP_TO_SAT = {
    "patch_embedding": "mixins.patch_embed.proj",
    "text_embedding.0": "text_embedding.0",
    "text_embedding.2": "text_embedding.2",
    "time_embedding.0": "time_embed.0",
    "time_embedding.2": "time_embed.2",
    "time_projection.1": "adaln_projection.1",
    "head.head": "mixins.final_layer.linear",
    "head.modulation": "mixins.final_layer.adaLN_modulation",
}

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+?)(\.weight|\.bias)?$")
_TOP_KEY = re.compile(r"^(.+?)(\.weight|\.bias)?$")


class UnexpectedKeysError(ValueError):
    """A state dict has keys that no rule of the target layout knows."""


def _raise_unknown(keys: Iterable[str], source: str) -> None:
    keys = sorted(keys)
    if keys:
        shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
        raise UnexpectedKeysError(f"{len(keys)} key(s) unknown to the {source} layout: {shown}")


def _rename(
    state_dict: StateDict, block_map: dict[str, str], top_map: dict[str, str], source: str
) -> StateDict:
    """Rename `blocks.i.<part><suffix>` and `<part><suffix>` keys through the two tables."""
    out: StateDict = {}
    unknown = []
    for key, tensor in state_dict.items():
        block = _BLOCK_KEY.match(key)
        if block and block.group(2) in block_map:
            index, part, suffix = block.group(1), block.group(2), block.group(3) or ""
            out[f"blocks.{index}.{block_map[part]}{suffix}"] = tensor
            continue
        top = _TOP_KEY.match(key)
        if top and top.group(1) in top_map:
            out[top_map[top.group(1)] + (top.group(2) or "")] = tensor
            continue
        unknown.append(key)
    _raise_unknown(unknown, source)
    return out


def wan_to_diffusers(state_dict: StateDict) -> StateDict:
    """Wan original names -> diffusers names, through diffusers' own converter."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    # diffusers' converter passes unknown keys through unchanged: name them first.
    _rename(state_dict, _WAN_BLOCK_TO_DIFFUSERS, _WAN_TOP_TO_DIFFUSERS, "Wan original (T2V)")
    # It also empties the dict it is given, hence the shallow copy.
    return convert_wan_transformer_to_diffusers(dict(state_dict))


def diffusers_to_wan(state_dict: StateDict) -> StateDict:
    """diffusers names -> Wan original names (the inverse rename)."""
    inverse_block = {v: k for k, v in _WAN_BLOCK_TO_DIFFUSERS.items()}
    inverse_top = {v: k for k, v in _WAN_TOP_TO_DIFFUSERS.items()}
    return _rename(state_dict, inverse_block, inverse_top, "diffusers")


def wan_to_sat(state_dict: StateDict) -> StateDict:
    """Wan original -> Kaleido SAT (without the `model.diffusion_model.` prefix); fuses q/k/v and k/v."""
    out: StateDict = {}
    remaining = dict(state_dict)
    indices = sorted({int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.match(key))})
    for i in indices:
        for parts, sat_name in _WAN_BLOCK_FUSED_TO_SAT.items():
            for suffix in (".weight", ".bias"):
                keys = [f"blocks.{i}.{part}{suffix}" for part in parts]
                present = [key in remaining for key in keys]
                if not any(present):
                    continue
                if not all(present):
                    missing = [key for key, here in zip(keys, present, strict=True) if not here]
                    raise ValueError(f"cannot fuse into {sat_name.format(i=i)}{suffix}: missing {missing}")
                out[sat_name.format(i=i) + suffix] = torch.cat([remaining.pop(key) for key in keys], dim=0)
    for key in list(remaining):
        block = _BLOCK_KEY.match(key)
        if block and block.group(2) in _WAN_BLOCK_TO_SAT:
            suffix = block.group(3) or ""
            out[_WAN_BLOCK_TO_SAT[block.group(2)].format(i=block.group(1)) + suffix] = remaining.pop(key)
            continue
        top = _TOP_KEY.match(key)
        if top and top.group(1) in _WAN_TOP_TO_SAT:
            out[_WAN_TOP_TO_SAT[top.group(1)] + (top.group(2) or "")] = remaining.pop(key)
    _raise_unknown(remaining, "Wan original")
    return out


def sat_to_wan(state_dict: StateDict) -> StateDict:
    """Kaleido SAT (prefix already stripped) -> Wan original; splits fused q/k/v and k/v on dim 0."""
    patterns: list[tuple[re.Pattern, tuple[str, ...]]] = []
    for wan_part, sat_name in _WAN_BLOCK_TO_SAT.items():
        patterns.append(
            (re.compile("^" + re.escape(sat_name).replace(r"\{i\}", r"(\d+)") + "$"), (wan_part,))
        )
    for wan_parts, sat_name in _WAN_BLOCK_FUSED_TO_SAT.items():
        patterns.append((re.compile("^" + re.escape(sat_name).replace(r"\{i\}", r"(\d+)") + "$"), wan_parts))
    inverse_top = {v: k for k, v in _WAN_TOP_TO_SAT.items()}

    out: StateDict = {}
    unknown = []
    for key, tensor in state_dict.items():
        stem, suffix = _TOP_KEY.match(key).groups("")
        if stem in inverse_top:
            out[inverse_top[stem] + suffix] = tensor
            continue
        for pattern, wan_parts in patterns:
            match = pattern.match(stem)
            if not match:
                continue
            if tensor.shape[0] % len(wan_parts):
                raise ValueError(
                    f"{key} has {tensor.shape[0]} rows, not divisible into {len(wan_parts)} parts"
                )
            for part, piece in zip(wan_parts, tensor.chunk(len(wan_parts), dim=0), strict=True):
                out[f"blocks.{match.group(1)}.{part}{suffix}"] = piece
            break
        else:
            unknown.append(key)
    _raise_unknown(unknown, "Kaleido SAT")
    return out


def convert_state_dict(state_dict: StateDict, source: str, target: str) -> StateDict:
    """Convert between any two of LAYOUTS, through the Wan original names."""
    for layout in (source, target):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if source == target:
        return dict(state_dict)
    to_wan = {"wan": dict, "diffusers": diffusers_to_wan, "sat": sat_to_wan}[source]
    from_wan = {"wan": dict, "diffusers": wan_to_diffusers, "sat": wan_to_sat}[target]
    return from_wan(to_wan(state_dict))


def detect_layout(keys: Iterable[str]) -> str:
    """Name the layout from key names (file names do not tell: both Wan layouts use the same)."""
    keys = list(keys)
    if any(".attention.query_key_value" in key or key.startswith("mixins.") for key in keys):
        return "sat"
    if any(".attn1.to_q." in key for key in keys):
        return "diffusers"
    if any(".self_attn.q." in key for key in keys):
        return "wan"
    sample = ", ".join(sorted(keys)[:8])
    raise ValueError(
        "not a Wan / Kaleido transformer checkpoint: found none of the self-attention keys of the "
        f"diffusers, Wan original or Kaleido SAT layouts (first keys: {sample})"
    )
