"""`kaleido-s2v convert SRC DST --dtype bf16|fp16` end to end: the written weights are the source's, cast."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from kaleido_s2v import KaleidoTransformer3DModel
from kaleido_s2v.cli import main
from kaleido_s2v.models.checkpoints import read_state_dict, save_sat_checkpoint
from kaleido_s2v.models.key_mapping import convert_state_dict
from tiny_components import TINY_TRANSFORMER_CONFIG

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
HEAD_DIM = str(TINY_TRANSFORMER_CONFIG["attention_head_dim"])


@pytest.fixture(scope="module")
def sources(wan_model, tmp_path_factory):
    """(fp32 state dict in diffusers naming, {layout: checkpoint path}) of one tiny random model."""
    state_dict = {key: value.detach().clone() for key, value in wan_model.state_dict().items()}
    assert {value.dtype for value in state_dict.values()} == {torch.float32}
    root = tmp_path_factory.mktemp("convert_sources")
    model = KaleidoTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    model.load_state_dict(state_dict)
    model.save_pretrained(root / "diffusers")
    save_sat_checkpoint(convert_state_dict(state_dict, "diffusers", "sat"), root / "sat")
    save_file(convert_state_dict(state_dict, "diffusers", "wan"), root / "wan.safetensors")
    return state_dict, {"diffusers": root / "diffusers", "sat": root / "sat", "wan": root / "wan.safetensors"}


def _written(dst) -> dict[str, torch.Tensor]:
    """DST's tensors in diffusers naming (SAT's fused q/k/v split back)."""
    state_dict, layout = read_state_dict(dst)
    return convert_state_dict(state_dict, layout, "diffusers")


CASES = [
    (source, target, dtype)
    for source in ("sat", "wan", "diffusers")
    for target in ("wan", "sat", "diffusers")
    for dtype in sorted(DTYPES)
]


@pytest.mark.parametrize("source, target, dtype", CASES)
def test_convert_dtype_writes_the_source_weights_cast(sources, source, target, dtype, tmp_path, capsys):
    state_dict, paths = sources
    dst = tmp_path / "out"
    argv = ["convert", str(paths[source]), str(dst), "--to", target, "--dtype", dtype]
    if source != "diffusers":  # no config.json beside the weights: name the head size
        argv += ["--attention-head-dim", HEAD_DIM]
    assert main(argv) == 0
    assert f"wrote {target} checkpoint to {dst}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    written = _written(dst)
    assert written.keys() == state_dict.keys()
    cast = DTYPES[dtype]
    assert {key: value.dtype for key, value in written.items() if value.dtype != cast} == {}
    for key, value in written.items():
        assert torch.equal(value, state_dict[key].to(cast)), key
    if target == "diffusers":
        assert json.loads((dst / "config.json").read_text())["num_attention_heads"] == 2
    if target == "wan":
        wan_config = json.loads((dst / "config.json").read_text())
        assert (wan_config["num_heads"], wan_config["dim"]) == (2, 2 * int(HEAD_DIM))


def test_convert_without_dtype_keeps_a_bf16_diffusers_folder_in_bf16(sources, tmp_path):
    _, paths = sources
    assert main(["convert", str(paths["diffusers"]), str(tmp_path / "bf16"), "--dtype", "bf16"]) == 0
    assert main(["convert", str(tmp_path / "bf16"), str(tmp_path / "again")]) == 0
    stored, again = _written(tmp_path / "bf16"), _written(tmp_path / "again")
    assert {key: value.dtype for key, value in again.items()} == {
        key: value.dtype for key, value in stored.items()
    }
