from pathlib import Path

import pytest
import yaml

from kaleido_s2v.training.config import TrainConfig, config_from_dict, config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def write(tmp_path, payload) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def test_shipped_configs_parse_and_stage2_starts_from_stage1():
    stage1 = load_config(CONFIGS / "stage1_pretrain.yaml")
    stage2 = load_config(CONFIGS / "stage2_sft.yaml")
    assert stage2.model.init_from == f"{stage1.output_dir}/final/transformer"
    assert stage2.optimizer.lr == 5e-6 and stage2.optimizer.betas == (0.9, 0.95)
    assert stage2.optimizer.weight_decay == 1e-4 and stage2.optimizer.max_grad_norm == 0.1
    assert stage1.data.num_frames == 81 and stage1.data.fps == 16 and stage1.data.max_references == 3
    assert stage1.data.caption_dropout == 0.1 and stage1.data.reference_dropout == 0.0
    assert load_config(CONFIGS / "lora_sft.yaml").lora.rank == 32


def test_unknown_top_level_key_is_named(tmp_path):
    path = write(tmp_path, {"model": {"config": {}}, "max_stepz": 3})
    with pytest.raises(ValueError, match=r"unknown config key 'max_stepz'.*known keys.*max_steps"):
        load_config(path)


def test_unknown_nested_key_is_named_with_its_section(tmp_path):
    path = write(tmp_path, {"model": {"config": {}}, "optimizer": {"learning_rate": 1e-4}})
    with pytest.raises(ValueError, match=r"unknown config key 'optimizer.learning_rate'.*lr"):
        load_config(path)


def test_wrong_types_and_values_say_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="max_steps must be an integer, got 'ten'"):
        config_from_dict(TrainConfig, {"model": {"config": {}}, "max_steps": "ten"})
    with pytest.raises(ValueError, match="mixed_precision must be one of 'no', 'bf16'"):
        config_from_dict(TrainConfig, {"model": {"config": {}}, "mixed_precision": "fp8"})
    with pytest.raises(ValueError, match="700x832 is not a multiple of 16; use 688x832"):
        config_from_dict(TrainConfig, {"model": {"config": {}}, "data": {"resolutions": [[700, 832]]}})
    with pytest.raises(ValueError, match="num_frames must be 4k\\+1, got 80"):
        config_from_dict(TrainConfig, {"model": {"config": {}}, "data": {"num_frames": 80}})
    with pytest.raises(ValueError, match="exactly one of model.pretrained"):
        config_from_dict(TrainConfig, {})


def test_yaml_strings_for_floats_and_round_trip(tmp_path):
    # PyYAML reads 5e-6 (no dot) as a string; the parser still takes it as a number.
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  config: {num_layers: 1}\noptimizer:\n  lr: 5e-6\nshift: 3\n")
    config = load_config(path)
    assert config.optimizer.lr == 5e-6 and config.shift == 3.0
    assert config_from_dict(TrainConfig, config_to_dict(config)) == config
    assert load_config(path, overrides={"optimizer": {"lr": 1e-3}}).optimizer.lr == 1e-3
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_merge_sections_and_replace_model_config_whole(tmp_path):
    path = write(tmp_path, {"model": {"config": {"num_layers": 1, "ffn_dim": 8}}, "optimizer": {"lr": 1e-3}})
    config = load_config(path, overrides={"model": {"config": {"num_layers": 2}}, "optimizer": {"eps": 1e-6}})
    assert config.model.config == {"num_layers": 2}  # one set of constructor arguments, never a mix
    assert config.optimizer.lr == 1e-3 and config.optimizer.eps == 1e-6


def test_yaml_errors_and_wrong_types_name_the_file_and_line(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  config: {}\noptimizer:\n  lr: fast\n")
    with pytest.raises(ValueError, match=r"train\.yaml, line 4: optimizer\.lr must be a number, got 'fast'$"):
        load_config(path)
    path.write_text("model:\n  config: {num_layers: 1\n")
    with pytest.raises(ValueError, match=r"train\.yaml, line 3, column 1: .*expected ',' or '}'"):
        load_config(path)


def test_rope_policy_has_one_key_and_a_second_one_in_model_config_is_refused(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  rope_policy: video\n  config:\n    num_layers: 1\n    rope_policy: none\n")
    with pytest.raises(
        ValueError,
        match=r"train\.yaml, line 5: model\.config\.rope_policy \('none'\) and model\.rope_policy "
        r"\('video'\) set the same thing; .*set by model\.rope_policy only",
    ):
        load_config(path)
    path.write_text("model:\n  rope_policy: video\n  config:\n    num_layers: 1\n")
    assert load_config(path).model.rope_policy == "video"


def test_demo_stage_overrides_merge_by_the_training_override_rule():
    from kaleido_s2v.demo.recipe import merge_overrides

    both = {"seed": 1, "model": {"config": {"num_layers": 2, "ffn_dim": 8}}, "optimizer": {"lr": 1e-3}}
    stage2 = {"seed": 2, "model": {"config": {"num_layers": 1}}, "optimizer": {"eps": 1e-6}}
    assert merge_overrides(both, stage2) == {
        "seed": 2,
        "model": {"config": {"num_layers": 1}},  # one set of constructor arguments, never a mix
        "optimizer": {"lr": 1e-3, "eps": 1e-6},
    }
