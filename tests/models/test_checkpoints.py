"""Checkpoint layouts (docs/model.md#7-checkpoint-layouts-and-conversions, docs/contracts.md#11-loading-and-converting-checkpoints): exact round trips, loading from each layout, bad files."""

import collections
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kaleido_s2v import KaleidoTransformer3DModel
from kaleido_s2v.cli import main as cli_main
from kaleido_s2v.models.checkpoints import load_transformer, read_state_dict, save_sat_checkpoint
from kaleido_s2v.models.key_mapping import (
    SAT_PREFIX,
    UnexpectedKeysError,
    convert_state_dict,
    detect_layout,
    diffusers_to_wan,
    sat_to_wan,
    wan_to_diffusers,
    wan_to_sat,
)


@pytest.fixture(scope="module")
def diffusers_state_dict(wan_model):
    return {key: value.clone() for key, value in wan_model.state_dict().items()}


def _forward(model):
    generator = torch.Generator().manual_seed(3)
    video = torch.randn(1, 16, 2, 4, 4, generator=generator)
    reference = torch.randn(1, 16, 1, 4, 4, generator=generator)
    text = torch.randn(1, 5, 32, generator=generator)
    with torch.no_grad():
        return model(video, torch.tensor([700.0]), text, reference_latents=[reference]).sample


def _assert_same_model(model, reference):
    """Bit-identical weights and the same output. The output is compared to float32 rounding, not bit
    for bit: CPU kernels may round differently for memory-mapped tensors (alignment), measured 3.6e-7."""
    weights = reference.state_dict()
    state = model.state_dict()
    assert state.keys() == weights.keys()
    assert all(torch.equal(value, weights[key]) for key, value in state.items())
    torch.testing.assert_close(_forward(model), _forward(reference), rtol=0, atol=1e-6)


def test_round_trip_diffusers_wan_sat_is_exact(diffusers_state_dict):
    layers = 2
    wan = diffusers_to_wan(diffusers_state_dict)
    sat = wan_to_sat(wan)
    assert len(diffusers_state_dict) == len(wan) == 15 + 27 * layers
    assert len(sat) == 15 + 21 * layers
    back = wan_to_diffusers(sat_to_wan(sat))
    assert back.keys() == diffusers_state_dict.keys()
    assert all(torch.equal(back[key], diffusers_state_dict[key]) for key in back)
    assert wan_to_sat(sat_to_wan(sat)).keys() == sat.keys()


def test_sat_names_and_fusion_follow_the_spec_table(diffusers_state_dict):
    wan = diffusers_to_wan(diffusers_state_dict)
    sat = wan_to_sat(wan)
    qkv = sat["transformer.layers.1.attention.query_key_value.weight"]
    expected = torch.cat([wan[f"blocks.1.self_attn.{p}.weight"] for p in "qkv"], dim=0)
    assert torch.equal(qkv, expected)
    kv_bias = sat["transformer.layers.0.cross_attention.key_value.bias"]
    assert torch.equal(
        kv_bias, torch.cat([wan["blocks.0.cross_attn.k.bias"], wan["blocks.0.cross_attn.v.bias"]])
    )
    # Wan's norm3 (cross-attention norm) is diffusers' norm2 and SAT's post_cross_attention_layernorm.
    assert torch.equal(
        sat["transformer.layers.0.post_cross_attention_layernorm.weight"],
        diffusers_state_dict["blocks.0.norm2.weight"],
    )
    assert torch.equal(
        sat["mixins.adaln_layer.adaLN_modulations.1"], diffusers_state_dict["blocks.1.scale_shift_table"]
    )
    assert torch.equal(sat["mixins.final_layer.adaLN_modulation"], diffusers_state_dict["scale_shift_table"])
    assert torch.equal(
        sat["adaln_projection.1.weight"], diffusers_state_dict["condition_embedder.time_proj.weight"]
    )
    assert detect_layout(sat) == "sat" and detect_layout(wan) == "wan"
    assert detect_layout(diffusers_state_dict) == "diffusers"


@pytest.mark.parametrize(
    "dim, ffn, heads, layers, diffusers_keys, sat_keys",
    [(1536, 8960, 12, 30, 15 + 27 * 30, 15 + 21 * 30), (5120, 13824, 40, 40, 1095, 855)],
)
def test_released_configs_key_counts_and_shapes_on_meta(dim, ffn, heads, layers, diffusers_keys, sat_keys):
    with torch.device("meta"):
        model = KaleidoTransformer3DModel(
            num_attention_heads=heads, attention_head_dim=128, ffn_dim=ffn, num_layers=layers, text_dim=4096
        )
    state_dict = model.state_dict()
    sat = convert_state_dict(state_dict, "diffusers", "sat")
    assert (len(state_dict), len(sat)) == (diffusers_keys, sat_keys)
    assert sat["transformer.layers.0.attention.query_key_value.weight"].shape == (3 * dim, dim)
    assert sat["transformer.layers.0.cross_attention.key_value.weight"].shape == (2 * dim, dim)
    assert sat["mixins.adaln_layer.adaLN_modulations.0"].shape == (1, 6, dim)
    back = convert_state_dict(sat, "sat", "diffusers")
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in state_dict.items()}


def _write_sat_like_release(state_dict, folder):
    """A SAT folder as the release ships it: numpy RNG state, config and param_shapes beside `module`."""
    sat = convert_state_dict(state_dict, "diffusers", "sat")
    module = {SAT_PREFIX + key: value for key, value in sat.items()}
    module["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2)  # non-DiT keys are ignored
    checkpoint = {
        "module": module,
        "rng_state": np.random.RandomState(0).get_state(),
        "config": {"lr": 5e-6, "name": "kaleido"},
        "param_shapes": [collections.OrderedDict((k, v.shape) for k, v in sat.items())],
        "iteration": 4000,
    }
    (folder / "4000").mkdir(parents=True)
    torch.save(checkpoint, folder / "4000" / "mp_rank_00_model_states.pt")
    (folder / "latest").write_text("4000\n")


def test_model_from_each_layout_gives_identical_outputs(
    kaleido_factory, diffusers_state_dict, tiny_config, tmp_path
):
    reference_model = kaleido_factory()

    reference_model.save_pretrained(tmp_path / "diffusers")
    wan = diffusers_to_wan(diffusers_state_dict)
    save_file(wan, tmp_path / "wan.safetensors")
    # Sharded Wan original folder with an index, and Wan's own config.json (dim / num_heads).
    sharded = tmp_path / "wan_sharded"
    sharded.mkdir()
    keys = sorted(wan)
    halves = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2]}
    halves["diffusion_pytorch_model-00002-of-00002.safetensors"] = keys[1::2]
    for name, part in halves.items():
        save_file({key: wan[key] for key in part}, sharded / name)
    index = {"weight_map": {key: name for name, part in halves.items() for key in part}}
    (sharded / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 24, "num_heads": 2}))
    _write_sat_like_release(diffusers_state_dict, tmp_path / "sat")

    head = dict(tiny_config)
    loaded = {
        "diffusers": load_transformer(tmp_path / "diffusers"),
        "wan file": load_transformer(tmp_path / "wan.safetensors", config=head),
        "wan sharded": load_transformer(sharded),
        "sat": load_transformer(tmp_path / "sat", config=head),
    }
    for name, model in loaded.items():
        assert isinstance(model, KaleidoTransformer3DModel), name
        _assert_same_model(model, reference_model)
    assert read_state_dict(tmp_path / "sat")[1] == "sat"


def test_sat_loading_adopts_the_loaded_tensors_without_copying(
    diffusers_state_dict, tiny_config, tmp_path, monkeypatch
):
    from kaleido_s2v.models import checkpoints

    _write_sat_like_release(diffusers_state_dict, tmp_path / "sat")
    seen = {}

    def recording_read(path):
        state_dict, layout = read_state_dict(path)
        seen.update(state_dict)
        return state_dict, layout

    monkeypatch.setattr(checkpoints, "read_state_dict", recording_read)
    model = load_transformer(tmp_path / "sat", config=tiny_config)
    # The (memory-mapped) tensors become the parameters: no second copy of the weights in RAM.
    loaded = seen["transformer.layers.0.mlp.dense_h_to_4h.weight"]
    assert model.blocks[0].ffn.net[0].proj.weight.data_ptr() == loaded.data_ptr()
    fused = seen["transformer.layers.0.attention.query_key_value.weight"]
    assert (
        model.blocks[0].attn1.to_k.weight.data_ptr()
        == fused[tiny_config["attention_head_dim"] * 2 :].data_ptr()
    )


def test_convert_cli_sat_to_diffusers_and_back(kaleido_factory, diffusers_state_dict, tmp_path, capsys):
    _write_sat_like_release(diffusers_state_dict, tmp_path / "sat")
    assert (
        cli_main(["convert", str(tmp_path / "sat"), str(tmp_path / "out"), "--attention-head-dim", "12"]) == 0
    )
    converted = KaleidoTransformer3DModel.from_pretrained(tmp_path / "out")
    _assert_same_model(converted, kaleido_factory())
    assert cli_main(["convert", str(tmp_path / "out"), str(tmp_path / "again_sat"), "--to", "sat"]) == 0
    assert cli_main(["convert", str(tmp_path / "out"), str(tmp_path / "wan"), "--to", "wan"]) == 0
    # The Wan folder carries Wan's own config.json, so the head count needs no flag.
    _assert_same_model(load_transformer(tmp_path / "wan"), converted)
    again = read_state_dict(tmp_path / "again_sat")[0]
    original = convert_state_dict(diffusers_state_dict, "diffusers", "sat")
    assert again.keys() == original.keys() and all(torch.equal(again[k], original[k]) for k in again)
    # An existing output folder is refused, and nothing is overwritten.
    assert cli_main(["convert", str(tmp_path / "sat"), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated zip"), "truncated or corrupt"),
        (lambda p: torch.save({"module": {"x": _Payload()}}, p), "refusing to unpickle"),
    ],
)
def test_bad_pt_files_raise_clear_errors(tmp_path, write, message):
    path = tmp_path / "model.pt"
    write(path)
    with pytest.raises(ValueError, match=message):
        read_state_dict(path)


def test_truncated_safetensors_and_missing_files(diffusers_state_dict, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(diffusers_state_dict, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope")
    (tmp_path / "sat").mkdir()
    (tmp_path / "sat" / "latest").write_text("12\n")
    with pytest.raises(FileNotFoundError, match="names iteration '12'"):
        read_state_dict(tmp_path / "sat")


def test_checkpoint_of_another_architecture(tmp_path):
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(3, 3)}, tmp_path / "flux.safetensors")
    with pytest.raises(ValueError, match="not a Wan / Kaleido transformer checkpoint"):
        load_transformer(tmp_path / "flux.safetensors")


def test_wrong_config_names_each_mismatched_key(diffusers_state_dict, tiny_config, tmp_path):
    save_file(diffusers_to_wan(diffusers_state_dict), tmp_path / "wan.safetensors")
    with pytest.raises(ValueError, match=r"wrong shape: blocks\.0\.ffn\.net\.0\.proj\.bias"):
        load_transformer(tmp_path / "wan.safetensors", config={**tiny_config, "ffn_dim": 64})
    with pytest.raises(ValueError, match=r"missing: blocks\.2\."):
        load_transformer(tmp_path / "wan.safetensors", config={**tiny_config, "num_layers": 3})


def test_unknown_keys_are_named(diffusers_state_dict):
    wan = diffusers_to_wan(diffusers_state_dict)
    wan["blocks.0.self_attn.extra_gate.weight"] = torch.zeros(1)
    with pytest.raises(UnexpectedKeysError, match="blocks.0.self_attn.extra_gate.weight"):
        wan_to_diffusers(wan)
    with pytest.raises(UnexpectedKeysError, match="blocks.0.self_attn.extra_gate.weight"):
        wan_to_sat(wan)


def test_sat_weights_roundtrip_through_saver(diffusers_state_dict, tmp_path):
    sat = convert_state_dict(diffusers_state_dict, "diffusers", "sat")
    save_sat_checkpoint(sat, tmp_path / "ckpt", iteration="7")
    loaded, layout = read_state_dict(tmp_path / "ckpt")
    assert layout == "sat" and all(torch.equal(loaded[k], sat[k]) for k in sat)


@pytest.mark.parametrize("latest", ["../outside", "/abs/outside", "4000/../../outside"])
def test_sat_latest_naming_a_folder_outside_the_checkpoint_is_refused(diffusers_state_dict, tmp_path, latest):
    _write_sat_like_release(diffusers_state_dict, tmp_path / "outside")  # loadable weights out there
    (tmp_path / "sat").mkdir()
    (tmp_path / "sat" / "latest").write_text(latest.replace("/abs", str(tmp_path)) + "\n")
    with pytest.raises(ValueError, match="which is outside"):
        read_state_dict(tmp_path / "sat")


@pytest.mark.parametrize("shard", ["/etc/passwd", "../elsewhere/weights.safetensors"])
def test_a_safetensors_index_naming_a_shard_outside_the_folder_is_refused(
    diffusers_state_dict, tmp_path, shard
):
    wan = diffusers_to_wan(diffusers_state_dict)
    (tmp_path / "elsewhere").mkdir()
    save_file(wan, tmp_path / "elsewhere" / "weights.safetensors")
    folder = tmp_path / "wan"
    folder.mkdir()
    index = {"weight_map": {key: shard for key in wan}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="which is outside"):
        read_state_dict(folder)


def test_a_shard_that_is_a_symlink_inside_the_folder_still_loads(diffusers_state_dict, tmp_path):
    """Hub cache snapshots are symlinks into a blob store: the name is checked, not the link target."""
    wan = diffusers_to_wan(diffusers_state_dict)
    save_file(wan, tmp_path / "blob")
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "diffusion_pytorch_model-00001-of-00001.safetensors").symlink_to(tmp_path / "blob")
    index = {"weight_map": {key: "diffusion_pytorch_model-00001-of-00001.safetensors" for key in wan}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    loaded, layout = read_state_dict(folder)
    assert layout == "wan" and all(torch.equal(loaded[k], wan[k]) for k in wan)


def test_convert_never_moves_files_of_a_same_named_staging_folder(diffusers_state_dict, tmp_path, capsys):
    _write_sat_like_release(diffusers_state_dict, tmp_path / "sat")
    old_staging = tmp_path / "out.tmp"  # the name the old staging folder used
    old_staging.mkdir()
    (old_staging / "notes.txt").write_text("the user's")
    assert (
        cli_main(
            [
                "convert",
                str(tmp_path / "sat"),
                str(tmp_path / "out"),
                "--to",
                "wan",
                "--attention-head-dim",
                "12",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert "notes.txt" not in {p.name for p in (tmp_path / "out").iterdir()}
    assert (old_staging / "notes.txt").read_text() == "the user's"
