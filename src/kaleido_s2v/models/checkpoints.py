"""Reading, checking and writing transformer checkpoints in the three layouts (docs/model.md#7-checkpoint-layouts-and-conversions, docs/contracts.md#11-loading-and-converting-checkpoints).

Nothing here unpickles arbitrary objects: `.pt`/`.pth` files are read with
`torch.load(weights_only=True, mmap=True)` and an explicit allow-list for the numpy RNG state
that DeepSpeed/SAT training checkpoints store beside the weights.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from pathlib import Path

import torch

from kaleido_s2v.common.atomic import atomic_path, is_temporary, write_text_atomic
from kaleido_s2v.common.paths import inside_folder
from kaleido_s2v.models.key_mapping import SAT_PREFIX, StateDict, convert_state_dict, detect_layout
from kaleido_s2v.models.transformer import KaleidoTransformer3DModel

SAT_WEIGHT_FILES = ("mp_rank_00_model_states.pt", "fsdp2_rank_0000_checkpoint.pt")
SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
SAFETENSORS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}
DEFAULT_HEAD_DIM = 128


# --- reading files --------------------------------------------------------------------------


def _numpy_safe_globals() -> list:
    """The numpy pieces a pickled `np.random.get_state()` needs; nothing executable."""
    import numpy as np

    allowed = [np.ndarray, np.dtype, type(np.dtype("uint32"))]
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    allowed.append(_reconstruct)
    return allowed


def load_torch_file(path: str | os.PathLike) -> dict:
    """`torch.load` with weights_only=True, memory-mapped, numpy RNG states allowed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint file {path} is empty (0 bytes)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds objects that are not tensors or plain containers; refusing to unpickle "
            f"them (weights_only=True). Re-save the weights as a plain state dict. Details: {error}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"cannot read checkpoint {path}: truncated or corrupt ({error})") from error


def load_safetensors_file(path: str | os.PathLike) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read safetensors file {path}: truncated or corrupt ({error})") from error


def _safetensors_in_folder(folder: Path) -> StateDict:
    """One file, or the shards an index names (each inside `folder`)."""
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = [inside_folder(folder, shard, index) for shard in sorted(set(weight_map.values()))]
        state_dict: StateDict = {}
        for shard in shards:
            state_dict.update(load_safetensors_file(shard))
        missing = sorted(set(weight_map) - set(state_dict))
        if missing:
            raise ValueError(f"{index} names {len(missing)} tensor(s) absent from its shards: {missing[:10]}")
        return state_dict
    if (folder / SAFETENSORS_NAME).is_file():
        return load_safetensors_file(folder / SAFETENSORS_NAME)
    files = sorted(p for p in folder.glob("*.safetensors") if not is_temporary(p))
    if len(files) == 1:
        return load_safetensors_file(files[0])
    raise FileNotFoundError(
        f"{folder} has no {SAFETENSORS_NAME}, no {SAFETENSORS_INDEX} and not exactly one *.safetensors file"
    )


def sat_weight_file(folder: Path) -> Path:
    """`<folder>/latest` names an iteration; the weights are in `<folder>/<iteration>/`."""
    latest = folder / "latest"
    if not latest.is_file():
        raise FileNotFoundError(f"{folder} is not a SAT checkpoint folder: no 'latest' file")
    iteration = latest.read_text().strip()
    iteration_folder = inside_folder(folder, iteration, latest)
    for name in SAT_WEIGHT_FILES:
        candidate = iteration_folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{folder}/latest names iteration {iteration!r}, but {folder / iteration} holds none of {SAT_WEIGHT_FILES}"
    )


def strip_sat_prefix(checkpoint: dict) -> StateDict:
    """Accept `{'module': ...}` or a flat dict; keep the DiT's keys without the SAT prefix.

    Keys under other prefixes (VAE `first_stage_model.`, `conditioner.`) are ignored; so are
    non-tensor entries (RNG state, config, `param_shapes`) next to `module`.
    """
    module = checkpoint.get("module", checkpoint)
    if not isinstance(module, dict):
        raise ValueError(f"checkpoint 'module' entry is a {type(module).__name__}, not a state dict")
    tensors = {key: value for key, value in module.items() if isinstance(value, torch.Tensor)}
    if any(key.startswith(SAT_PREFIX) for key in tensors):
        return {key[len(SAT_PREFIX) :]: value for key, value in tensors.items() if key.startswith(SAT_PREFIX)}
    return tensors


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, str]:
    """Read a transformer checkpoint in any layout; returns (state dict, detected layout)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir() and (path / "latest").is_file():
        state_dict = strip_sat_prefix(load_torch_file(sat_weight_file(path)))
    elif path.is_dir():
        state_dict = _safetensors_in_folder(path)
    elif path.suffix == ".safetensors":
        state_dict = load_safetensors_file(path)
    elif path.suffix in (".pt", ".pth", ".bin"):
        state_dict = strip_sat_prefix(load_torch_file(path))
    else:
        raise ValueError(f"unrecognised checkpoint {path}: expected a folder, *.safetensors or *.pt/*.pth")
    if not state_dict:
        raise ValueError(f"checkpoint {path} holds no tensors")
    return state_dict, detect_layout(state_dict)


# --- configs and checks ---------------------------------------------------------------------


def infer_config(state_dict: StateDict, attention_head_dim: int = DEFAULT_HEAD_DIM) -> dict:
    """Constructor arguments of the T2V transformer a diffusers-layout state dict belongs to.

    The head count is not visible in the weights; it follows from `attention_head_dim` (128 for
    every released Wan2.1 model).
    """
    if any(
        key.startswith("condition_embedder.image_embedder") or ".add_k_proj." in key for key in state_dict
    ):
        raise ValueError(
            "this is a Wan image-to-video checkpoint (image embedder / added k,v projections); "
            "Kaleido is built on Wan2.1-T2V"
        )
    patch = state_dict["patch_embedding.weight"]
    dim, in_channels, *patch_size = patch.shape
    if dim % attention_head_dim:
        raise ValueError(f"model width {dim} is not a multiple of attention_head_dim {attention_head_dim}")
    num_layers = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(r"blocks\.(\d+)\.", key)))
    return dict(
        patch_size=tuple(patch_size),
        num_attention_heads=dim // attention_head_dim,
        attention_head_dim=attention_head_dim,
        in_channels=in_channels,
        out_channels=state_dict["proj_out.weight"].shape[0] // math.prod(patch_size),
        text_dim=state_dict["condition_embedder.text_embedder.linear_1.weight"].shape[1],
        freq_dim=state_dict["condition_embedder.time_embedder.linear_1.weight"].shape[1],
        ffn_dim=state_dict["blocks.0.ffn.net.0.proj.weight"].shape[0],
        num_layers=num_layers,
        cross_attn_norm="blocks.0.norm2.weight" in state_dict,
        qk_norm="rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in state_dict else None,
    )


def wan_original_config(folder: Path) -> dict | None:
    """Read the head dim from a Wan original `config.json` (`dim`, `num_heads`) when present."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    if "dim" in config and "num_heads" in config:
        return {"attention_head_dim": config["dim"] // config["num_heads"]}
    return None


def check_state_dict(state_dict: StateDict, expected: dict[str, torch.Size], source: str) -> None:
    """Raise naming every missing, unexpected and wrongly shaped key."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(expected[key])}"
        for key in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[key].shape) != tuple(expected[key])
    ]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {source} does not match the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                lines.append(
                    f"  {len(items)} {title}: " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else "")
                )
        raise ValueError("\n".join(lines))


# --- loading a model ------------------------------------------------------------------------


def load_transformer(
    path: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    config: dict | None = None,
    rope_policy: str | None = None,
) -> KaleidoTransformer3DModel:
    """Load a KaleidoTransformer3DModel from a diffusers folder, Wan original weights or a SAT checkpoint.

    Args:
        config: constructor arguments; default: the folder's diffusers `config.json`, else
            inferred from the weights (head dim from a Wan `config.json`, else 128).
        rope_policy: override the config's R-RoPE policy.
    """
    path = Path(path)
    if path.is_dir() and _is_diffusers_folder(path) and config is None:
        overrides = {} if rope_policy is None else {"rope_policy": rope_policy}
        dtype = torch_dtype or stored_dtype(path)
        return KaleidoTransformer3DModel.from_pretrained(path, torch_dtype=dtype, **overrides)

    state_dict, layout = read_state_dict(path)
    state_dict = convert_state_dict(state_dict, layout, "diffusers")
    if config is None:
        head = (wan_original_config(path) if path.is_dir() else None) or {}
        config = infer_config(state_dict, **head)
    if rope_policy is not None:
        config = {**config, "rope_policy": rope_policy}
    with torch.device("meta"):
        model = KaleidoTransformer3DModel(**config)
    expected = {key: value.shape for key, value in model.state_dict().items()}
    check_state_dict(state_dict, expected, f"{path} ({layout} layout)")
    dtype = torch_dtype or next(iter(state_dict.values())).dtype
    # assign=True adopts the (memory-mapped) tensors instead of copying them into new storage.
    model.load_state_dict({key: value.to(dtype) for key, value in state_dict.items()}, assign=True)
    # Non-persistent buffers (the rotary tables) were created on meta: rebuild them for real.
    model.rope = type(model.rope)(
        model.config.attention_head_dim, model.config.patch_size, model.config.rope_max_seq_len
    )
    return model.eval()


def stored_dtype(folder: Path) -> torch.dtype:
    """The dtype a diffusers folder's weights are stored in (its first tensor's), read from a header."""
    from safetensors import safe_open

    files = sorted(p for p in folder.glob("*.safetensors") if not is_temporary(p))
    if not files:
        raise FileNotFoundError(f"{folder} has no .safetensors weights")
    with safe_open(str(files[0]), framework="pt") as handle:
        name = handle.get_slice(next(iter(handle.keys()))).get_dtype()  # e.g. "BF16"
    return SAFETENSORS_DTYPES[name]


def _is_diffusers_folder(folder: Path) -> bool:
    config_file = folder / "config.json"
    if not config_file.is_file():
        return False
    class_name = json.loads(config_file.read_text()).get("_class_name", "")
    return class_name in ("WanTransformer3DModel", KaleidoTransformer3DModel.__name__)


# --- writing --------------------------------------------------------------------------------


def save_sat_checkpoint(state_dict: StateDict, folder: str | os.PathLike, iteration: str = "1") -> Path:
    """Write `<folder>/latest` and `<folder>/<iteration>/mp_rank_00_model_states.pt` (`module`, prefixed)."""
    folder = Path(folder)
    weights = folder / iteration / SAT_WEIGHT_FILES[0]
    with atomic_path(weights) as temporary:
        module = {SAT_PREFIX + key: value.contiguous() for key, value in state_dict.items()}
        torch.save({"module": module}, temporary)
    write_text_atomic(folder / "latest", iteration + "\n")
    return weights


def save_wan_checkpoint(state_dict: StateDict, folder: str | os.PathLike) -> Path:
    """Write Wan original names as one `diffusion_pytorch_model.safetensors`."""
    from safetensors.torch import save_file

    target = Path(folder) / SAFETENSORS_NAME
    with atomic_path(target) as temporary:
        save_file({key: value.contiguous() for key, value in state_dict.items()}, temporary)
    return target
