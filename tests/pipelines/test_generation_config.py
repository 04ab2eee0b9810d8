"""Sigma schedule (docs/model.md#5-sampling-defaults, docs/contracts.md#7-generation-defaults-live-with-the-model) and generation_config.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kaleido_s2v.pipelines.generation_config import (
    KALEIDO_NEGATIVE_PROMPT,
    GenerationConfig,
    make_scheduler,
    scheduler_shift,
    set_scheduler_sigmas,
    shifted_sigmas,
)


def _spec_sigmas(steps: int, shift: float) -> np.ndarray:
    u = np.linspace(1, 0, steps + 1)
    return shift * u / (1 + (shift - 1) * u)


def test_release_schedule_equals_the_spec_formula():
    scheduler = make_scheduler("kaleido_euler")
    set_scheduler_sigmas(scheduler, 50, shift=7.0)
    expected = _spec_sigmas(50, 7.0)
    assert len(scheduler.sigmas) == 51
    np.testing.assert_allclose(scheduler.sigmas.double().numpy(), expected, atol=1e-7)
    assert scheduler.sigmas[0] == 1.0 and scheduler.sigmas[-1] == 0.0
    # The model sees sigma * 1000 at each of the 50 steps.
    np.testing.assert_allclose(scheduler.timesteps.double().numpy(), expected[:-1] * 1000, atol=1e-4)


def test_default_set_timesteps_would_not_match_so_explicit_sigmas_matter():
    scheduler = make_scheduler("kaleido_euler")
    scheduler.set_timesteps(50)
    assert np.abs(scheduler.sigmas.double().numpy() - _spec_sigmas(50, 7.0)).max() > 0.05


def test_shifted_sigmas_helper_is_the_formula():
    np.testing.assert_allclose(shifted_sigmas(4, 3.0), _spec_sigmas(4, 3.0))


def test_one_euler_step_is_the_spec_update():
    scheduler = make_scheduler("kaleido_euler")
    set_scheduler_sigmas(scheduler, 50, shift=7.0)
    scheduler.set_begin_index(0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 4, generator=generator)
    v = torch.randn(1, 16, 2, 4, 4, generator=generator)
    stepped = scheduler.step(v, scheduler.timesteps[0], x, return_dict=False)[0]
    sigmas = _spec_sigmas(50, 7.0)
    torch.testing.assert_close(stepped, x + float(sigmas[1] - sigmas[0]) * v, atol=1e-6, rtol=0)


def test_wan_unipc_preset_uses_wan_sigmas_with_shift_5():
    scheduler = make_scheduler("wan_unipc")
    assert scheduler_shift(scheduler) == 5.0
    set_scheduler_sigmas(scheduler, 10, shift=scheduler_shift(scheduler))
    u = np.linspace(1, 1 / 1000, 11)[:-1]
    expected = 5 * u / (1 + 4 * u)
    expected[0] -= 1e-6  # diffusers nudges sigma 1 to keep log(alpha) finite
    np.testing.assert_allclose(scheduler.sigmas[:-1].double().numpy(), expected, atol=1e-6)
    assert scheduler.sigmas[-1] == 0.0


@pytest.mark.parametrize("preset", ["kaleido_euler", "wan_unipc"])
def test_the_resolved_shift_wins_over_the_one_the_scheduler_was_built_with(preset):
    scheduler = make_scheduler(preset, shift=2.0)
    set_scheduler_sigmas(scheduler, 8, shift=3.0)
    assert scheduler_shift(scheduler) == 3.0
    u = np.linspace(1, 0 if preset == "kaleido_euler" else 1 / 1000, 9)[:-1]
    expected = 3.0 * u / (1 + 2.0 * u)
    # diffusers' UniPC nudges sigma 1 by 1e-6 (see the Wan test above); Euler keeps it.
    np.testing.assert_allclose(scheduler.sigmas[:-1].double().numpy(), expected, atol=2e-6)
    assert scheduler.sigmas[-1] == 0.0


def test_release_defaults():
    config = GenerationConfig()
    assert (config.height, config.width, config.num_frames, config.fps) == (512, 896, 81, 16)
    assert (config.num_inference_steps, config.guidance_scale, config.shift) == (50, 6.0, 7.0)
    assert config.max_references == 3 and config.negative_prompt == KALEIDO_NEGATIVE_PROMPT
    assert "画得不好的脸部" not in KALEIDO_NEGATIVE_PROMPT and KALEIDO_NEGATIVE_PROMPT.endswith("倒着走")


def test_generation_config_round_trip_and_override(tmp_path):
    config = GenerationConfig(height=64, width=96, reference_size=(32, 48), scheduler="wan_unipc")
    config.save(tmp_path)
    loaded = GenerationConfig.from_dir(tmp_path)
    assert loaded == config and loaded.reference_size == (32, 48)
    assert loaded.override(height=128, width=None).height == 128
    assert loaded.override(height=128, width=None).width == 96
    assert GenerationConfig.from_dir(tmp_path / "missing") == GenerationConfig()


def test_generation_config_rejects_unknown_fields(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"heigth": 64}))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['heigth'\]"):
        GenerationConfig.from_dir(tmp_path)


def test_unknown_scheduler_preset_is_rejected():
    with pytest.raises(ValueError, match="not a preset"):
        GenerationConfig(scheduler="ddim")
    with pytest.raises(ValueError, match="unknown"):
        make_scheduler("ddim")


def test_overrides_and_cli_flags_are_derived_from_the_one_list_of_settings():
    from dataclasses import fields

    from kaleido_s2v.cli import build_parser
    from kaleido_s2v.pipelines.generation_config import GenerationSettings

    overridable = [f.name for f in fields(GenerationSettings)]
    assert overridable == [
        "height",
        "width",
        "num_frames",
        "fps",
        "num_inference_steps",
        "guidance_scale",
        "shift",
        "negative_prompt",
    ]
    assert all(f.name in {g.name for g in fields(GenerationConfig)} for f in fields(GenerationSettings))
    args = build_parser().parse_args(
        ["generate", "--frames", "9", "--steps", "3", "--guidance", "2", "--shift", "3"]
    )
    settings = GenerationSettings(**{name: getattr(args, name) for name in overridable})
    resolved = GenerationConfig(height=64).override(**vars(settings))
    assert (resolved.height, resolved.num_frames, resolved.num_inference_steps) == (64, 9, 3)
    assert (resolved.guidance_scale, resolved.shift) == (2.0, 3.0)
