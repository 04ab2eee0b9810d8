"""Config files: one set of rules for every YAML config (kaleido_s2v.common.config_files).

The rules themselves on small dataclasses, then each real config (training, data pipeline, demo
recipe) through its `load_config` and through the command line: exit code 2, one line on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from kaleido_s2v.cli import main
from kaleido_s2v.common.config_files import build_dataclass, load_dataclass, merge_settings


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass(frozen=True)
class Outer:
    name: str
    seed: int = 0
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    shift: float | Literal["auto"] = "auto"
    decay: float | None = None
    tags: tuple[str, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_of(call) -> str:
    with pytest.raises(ValueError) as caught:
        call()
    return str(caught.value)


# --- the rules ---------------------------------------------------------------------------------


def test_values_are_checked_and_converted_by_their_annotations():
    config = build_dataclass(
        Outer,
        {
            "name": "x",
            "shift": 3,
            "decay": "5e-6",
            "tags": "one",
            "sizes": [[64, 32]],
            "inner": {"betas": [1, 0.5]},
            "optional": {},
            "extra": {"a": [1]},
        },
    )
    assert config.shift == 3.0 and isinstance(config.shift, float) and config.decay == 5e-6
    assert config.tags == ("one",) and config.sizes == ((64, 32),) and config.inner.betas == (1.0, 0.5)
    assert config.optional == Inner() and config.extra == {"a": [1]}
    assert build_dataclass(Outer, {"name": "x", "inner": None, "shift": "auto"}).inner == Inner()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"seed": "abc"}, "seed must be an integer, got 'abc'"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
        ({"seed": True}, "seed must be an integer, got True"),
        ({"flag": "yes"}, "flag must be true or false, got 'yes'"),
        ({"mode": False}, "mode must be one of 'a', 'b', got False; quote it (YAML reads unquoted yes/no"),
        ({"shift": "fast"}, "shift must be a number or 'auto', got 'fast'"),
        ({"decay": "fast"}, "decay must be a number or null, got 'fast'"),
        ({"tags": [1]}, "tags[0] must be a string, got 1"),
        ({"sizes": "64x32"}, "sizes must be a list, got '64x32'"),
        ({"sizes": [[64]]}, "sizes[0] must be a list of 2 entries, got [64]"),
        ({"extra": [1]}, "extra must be a mapping, got [1]"),
        ({"inner": [1, 2]}, "inner must be a mapping of settings, got [1, 2]"),
        ({"inner": {"lr": "fast"}}, "inner.lr must be a number, got 'fast'"),
        ({"optional": {"lr": "fast"}}, "optional.lr must be a number, got 'fast'"),
        ({"optional": 5}, "optional must be a mapping or null, got 5"),
        ({"inner": {"lrr": 1}}, "unknown config key 'inner.lrr'; known keys of inner: betas, lr"),
    ],
)
def test_wrong_values_name_the_dotted_key_the_expected_type_and_the_value(values, message):
    assert error_of(lambda: build_dataclass(Outer, {"name": "x", **values})).startswith(message)


def test_missing_required_key_is_named():
    assert error_of(lambda: build_dataclass(Outer, {})) == "missing config key 'name'; add it"


def test_overrides_merge_sections_and_replace_other_values_whole():
    merged = merge_settings(
        Outer,
        {"inner": {"lr": 1.0, "betas": [0.1, 0.2]}, "extra": {"a": 1, "b": 2}, "tags": ["x", "y"]},
        {"inner": {"lr": 2.0}, "extra": {"a": 3}, "tags": ["z"], "optional": {"lr": 4.0}},
    )
    assert merged == {
        "inner": {"lr": 2.0, "betas": [0.1, 0.2]},
        "extra": {"a": 3},
        "tags": ["z"],
        "optional": {"lr": 4.0},
    }


def test_errors_name_the_file_and_the_line_of_the_key(tmp_path):
    path = write(tmp_path, "name: x\ninner:\n  betas: [1, 2]\n  lr: fast\n")
    assert error_of(lambda: load_dataclass(Outer, path)) == (
        f"{path}, line 4: inner.lr must be a number, got 'fast'"
    )
    # A value given by the overrides has no line in the file.
    assert error_of(lambda: load_dataclass(Outer, path, {"inner": {"lr": "slow", "betas": [1, 2]}})) == (
        f"{path}: inner.lr must be a number, got 'slow'"
    )
    assert load_dataclass(Outer, path, {"inner": {"lr": 0.5}}).inner == Inner(0.5, (1.0, 2.0))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", ": missing config key 'name'; add it"),
        ("a: 1\n---\nb: 2\n", ", line 2, column 1: expected a single document in the stream (line 1), "),
        ("name: \x01\n", ", line 1, column 7: character #x0001 is not allowed; remove it"),
        (
            "name: {[1]: 2}\n",
            ", line 1, column 8: while constructing a mapping (line 1), found unhashable key; ",
        ),
    ],
)
def test_empty_files_extra_documents_and_control_characters(tmp_path, text, message):
    path = write(tmp_path, text)
    assert error_of(lambda: load_dataclass(Outer, path)).startswith(f"{path}{message}")


# --- every config file, through its loader and its command ---------------------------------------


def _train_loader():
    from kaleido_s2v.training.config import load_config

    return load_config


def _data_loader():
    from kaleido_s2v.data.config import load_config

    return load_config


def _demo_loader():
    from kaleido_s2v.demo.recipe import load_demo_config

    return load_demo_config


# name: (loader, settings that make a valid file, command line, {case: (text before them, message)})
PARSERS = {
    "train": (
        _train_loader,
        "model:\n  config: {}\n",
        lambda path, tmp_path: ["train", str(path)],
        {
            "seed": ('seed: "abc"\n', "line 1: seed must be an integer, got 'abc'"),
            "nested": ('optimizer:\n  lr: "fast"\n', "line 2: optimizer.lr must be a number, got 'fast'"),
            "fraction": ("max_steps: 1.5\n", "line 1: max_steps must be an integer, got 1.5"),
            "section": ("optimizer: [1, 2]\n", "line 1: optimizer must be a mapping of settings, got [1, 2]"),
        },
    ),
    "data": (
        _data_loader,
        "inputs: [videos]\nrun_dir: run\n",
        lambda path, tmp_path: ["data", "run", str(path)],
        {
            "seed": ('seed: "abc"\n', "line 1: seed must be an integer, got 'abc'"),
            "nested": (
                'split:\n  threshold: "fast"\n',
                "line 2: split.threshold must be a number, got 'fast'",
            ),
            "fraction": ("workers: 1.5\n", "line 1: workers must be an integer, got 1.5"),
            "section": ("split: [1, 2]\n", "line 1: split must be a mapping of settings, got [1, 2]"),
        },
    ),
    "demo": (
        _demo_loader,
        "stage1: stage1.yaml\nstage2: stage2.yaml\n",
        lambda path, tmp_path: ["demo", "train", "--config", str(path), "--out", str(tmp_path / "run")],
        {
            "seed": ('data:\n  seed: "abc"\n', "line 2: data.seed must be an integer, got 'abc'"),
            "nested": ('vae:\n  lr: "fast"\n', "line 2: vae.lr must be a number, got 'fast'"),
            "fraction": ("data:\n  size: 1.5\n", "line 2: data.size must be an integer, got 1.5"),
            "section": ("vae: [1, 2]\n", "line 1: vae must be a mapping of settings, got [1, 2]"),
        },
    ),
}


def bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    """The bad files every parser gets: case -> (file text, message after the file name).

    The tag would create `tmp_path/X` if YAML tags were honoured; the tests check it never exists."""
    marker = tmp_path / "X"
    return {
        "syntax": (
            "seed: 1\n  extra: 2\n",
            ", line 2, column 8: mapping values are not allowed here; fix the",
        ),
        "tag": (
            f'seed: !!python/object/apply:os.system ["touch {marker}"]\n',
            ", line 1, column 7: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object/apply:os.system'; config files hold plain values only",
        ),
        "top-level list": (
            "- seed\n- 1\n",
            ": a config is a mapping of settings (key: value lines), got a list",
        ),
    }


CASES = [
    (parser, case)
    for parser, (_, _, _, typed) in PARSERS.items()
    for case in ["syntax", "tag", "top-level list", *typed]
]


def case_file(tmp_path, parser: str, case: str):
    """(path, expected error message) of one bad config file."""
    _, valid, _, typed = PARSERS[parser]
    text, message = bad_files(tmp_path).get(case) or (typed[case][0] + valid, ", " + typed[case][1])
    path = tmp_path / f"{parser}.yaml"
    path.write_text(text)
    return path, f"{path}{message}"


@pytest.mark.parametrize("parser, case", CASES)
def test_load_config_errors_name_the_file_the_line_and_the_problem(tmp_path, parser, case):
    path, message = case_file(tmp_path, parser, case)
    loader = PARSERS[parser][0]()
    assert error_of(lambda: loader(path)).startswith(message)
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize("parser, case", CASES)
def test_cli_reports_a_bad_config_in_one_line_with_exit_code_2(tmp_path, capsys, parser, case):
    path, message = case_file(tmp_path, parser, case)
    assert main(PARSERS[parser][2](path, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and message in err
    assert not (tmp_path / "X").exists()
