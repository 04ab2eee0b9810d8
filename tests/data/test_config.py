"""The data pipeline's YAML config (`kaleido_s2v.data.config`); the shared rules are tested in
tests/test_config_files.py."""

import pytest

from kaleido_s2v.data.config import load_config


def write(tmp_path, text: str):
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return path


def test_values_get_their_field_types_and_empty_sections_their_defaults(tmp_path):
    config = load_config(
        write(tmp_path, "inputs: videos\nrun_dir: run\nsplit:\n  fps: 8\n  num_frames: 9\nprobe:\n")
    )
    assert config.inputs == ("videos",) and config.probe.backend == "pyav"
    assert config.split.fps == 8.0 and isinstance(config.split.fps, float)


def test_overrides_merge_section_by_section(tmp_path):
    path = write(tmp_path, "inputs: [videos]\nrun_dir: run\nsplit:\n  num_frames: 9\n  fps: 8.0\n")
    config = load_config(path, {"workers": 1, "split": {"fps": 4.0}})
    assert config.workers == 1 and config.split.fps == 4.0 and config.split.num_frames == 9


def test_missing_required_key_and_wrong_type_are_named(tmp_path):
    path = write(tmp_path, "inputs: [videos]\n")
    with pytest.raises(ValueError, match=r"data\.yaml: missing config key 'run_dir'; add it$"):
        load_config(path)
    path = write(tmp_path, "inputs: [videos]\nrun_dir: run\nexport:\n  shard_size: many\n")
    with pytest.raises(
        ValueError, match=r"data\.yaml, line 4: export\.shard_size must be an integer, got 'many'$"
    ):
        load_config(path)
