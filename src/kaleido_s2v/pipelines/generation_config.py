"""The generation settings, one list with one resolution rule (docs/contracts.md#7-generation-defaults-live-with-the-model), and the sigma schedule.

`GenerationConfig` is the list: every setting a generation uses, with the release's values as defaults.
A model folder's `generation_config.json` holds that model's values. One rule resolves a setting, in
`GenerationConfig.override`: a call argument (or, for `kaleido-s2v generate`, a CLI flag, which the
command passes on as the call argument) > the model folder's `generation_config.json` > the defaults
below. A pipeline built from components, without a folder, takes its default shift and scheduler
preset from the scheduler it is given. The settings marked with a CLI flag make up
`GenerationSettings`, the per-call overrides; `kaleido-s2v generate` derives its flags from them.

The shift is applied at sampling time by `set_scheduler_sigmas`, so the resolved setting, not what a
scheduler was built with, decides the schedule. The schedule is passed to the scheduler explicitly:
`FlowMatchEulerDiscreteScheduler(shift=7).set_timesteps(50)` differs from docs/model.md#5-sampling-defaults by up to 0.078,
while the same scheduler given `sigmas=linspace(1, 0, 51)[:-1]` shifts them to docs/model.md#5-sampling-defaults's values.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaleido_s2v.common.atomic import write_json_atomic

if TYPE_CHECKING:
    import numpy as np

GENERATION_CONFIG_NAME = "generation_config.json"

# docs/model.md#5-sampling-defaults: Wan2.1's default negative prompt without the phrase for badly drawn faces.
KALEIDO_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# Each scheduler preset's own shift: Kaleido's release (docs/model.md#5-sampling-defaults) and Wan2.1 T2V's sampler.
PRESET_SHIFTS = {"kaleido_euler": 7.0, "wan_unipc": 5.0}
SCHEDULER_PRESETS = tuple(PRESET_SHIFTS)

# Field metadata of a setting that a call or a CLI flag may override.
FLAG = "flag"
HELP = "help"


def _overridable(default: Any, flag: str, help: str) -> Any:
    """A setting with a `kaleido-s2v generate` flag; the flag parses its value as the default's type."""
    return field(default=default, metadata={FLAG: flag, HELP: help})


@dataclass(frozen=True)
class GenerationConfig:
    """Every generation setting of one model (the module docstring gives the resolution rule).

    reference_size: (height, width) references are letterboxed to; None means the video size.
    max_sequence_length: text tokens per prompt, as the model was trained (umt5-xxl: 512).
    scheduler: "kaleido_euler" (docs/model.md#5-sampling-defaults, the release) or "wan_unipc" (Wan2.1 T2V's own sampler).
    """

    height: int = _overridable(512, "--height", "video height in pixels, a multiple of 16")
    width: int = _overridable(896, "--width", "video width in pixels, a multiple of 16")
    num_frames: int = _overridable(81, "--frames", "number of frames, 4k + 1")
    fps: int = _overridable(16, "--fps", "frame rate of the written video")
    num_inference_steps: int = _overridable(50, "--steps", "sampling steps")
    guidance_scale: float = _overridable(6.0, "--guidance", "text guidance scale (1 = no guidance)")
    shift: float = _overridable(PRESET_SHIFTS["kaleido_euler"], "--shift", "sigma shift of the schedule")
    negative_prompt: str = _overridable(KALEIDO_NEGATIVE_PROMPT, "--negative-prompt", "negative prompt")
    max_references: int = 3
    reference_size: tuple[int, int] | None = None
    scheduler: str = "kaleido_euler"
    max_sequence_length: int = 512

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULER_PRESETS:
            raise ValueError(f"scheduler {self.scheduler!r} is not a preset; use one of {SCHEDULER_PRESETS}")
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))
        object.__setattr__(self, "shift", float(self.shift))
        if self.reference_size is not None:
            object.__setattr__(self, "reference_size", tuple(int(v) for v in self.reference_size))

    @classmethod
    def from_dict(cls, payload: dict) -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(
                f"{GENERATION_CONFIG_NAME}: unknown field(s) {unknown}; allowed: {sorted(known)}"
            )
        return cls(**payload)

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> GenerationConfig:
        """Read `<path>/generation_config.json`; the release defaults when the folder has none."""
        file = Path(path) / GENERATION_CONFIG_NAME
        if not file.is_file():
            return cls()
        try:
            payload = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{file} is not valid JSON: {error}") from error
        return cls.from_dict(payload)

    def save(self, path: str | os.PathLike) -> Path:
        file = Path(path) / GENERATION_CONFIG_NAME
        write_json_atomic(file, self.to_dict())
        return file

    def to_dict(self) -> dict:
        payload = asdict(self)
        if self.reference_size is not None:
            payload["reference_size"] = list(self.reference_size)
        return payload

    def override(self, **values) -> GenerationConfig:
        """The resolution rule: a copy in which every value given that is not None (a call argument or
        a CLI flag) replaces this config's (the model's)."""
        return replace(self, **{key: value for key, value in values.items() if value is not None})

    @property
    def reference_hw(self) -> tuple[int, int]:
        """(height, width) the references are letterboxed to: reference_size, else the video's."""
        return self.reference_size or (self.height, self.width)


# The per-call overrides: one optional field (None keeps the model's value) per setting with a flag.
GenerationSettings = make_dataclass(
    "GenerationSettings",
    [
        (setting.name, f"{setting.type} | None", field(default=None, metadata=setting.metadata))
        for setting in fields(GenerationConfig)
        if FLAG in setting.metadata
    ],
    frozen=True,
    namespace={
        "__doc__": "Call-level overrides of a model's GenerationConfig (None keeps its value).",
        "__module__": __name__,
    },
)


def base_sigmas(num_inference_steps: int, scheduler: str = "kaleido_euler") -> np.ndarray:
    """Unshifted sigmas, one per step (the terminal 0 excluded), float64.

    kaleido_euler: linspace(1, 0, N + 1)[:-1] (docs/model.md#5-sampling-defaults); wan_unipc: linspace(1, 1/1000, N + 1)[:-1]
    (Wan2.1's sampler).
    """
    import numpy as np  # here, not at the top: the CLI reads this module's settings at start-up

    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
    end = 0.0 if scheduler == "kaleido_euler" else 1.0 / 1000
    return np.linspace(1.0, end, num_inference_steps + 1)[:-1]


def shifted_sigmas(num_inference_steps: int, shift: float) -> np.ndarray:
    """docs/model.md#5-sampling-defaults exactly: sigma_i = s*u / (1 + (s - 1)*u), u = linspace(1, 0, N + 1); length N + 1, ends at 0."""
    import numpy as np  # here, not at the top: the CLI reads this module's settings at start-up

    u = np.linspace(1.0, 0.0, num_inference_steps + 1)
    return shift * u / (1.0 + (shift - 1.0) * u)


def make_scheduler(preset: str = "kaleido_euler", shift: float | None = None):
    """A diffusers scheduler for a preset; `shift` defaults to the preset's (PRESET_SHIFTS)."""
    if preset not in PRESET_SHIFTS:
        raise ValueError(f"scheduler preset {preset!r} is unknown; use one of {SCHEDULER_PRESETS}")
    shift = PRESET_SHIFTS[preset] if shift is None else shift
    if preset == "kaleido_euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_order=2,
        final_sigmas_type="zero",
    )


def scheduler_preset(scheduler) -> str:
    """The preset a scheduler instance belongs to (by class), for choosing its base sigmas."""
    name = type(scheduler).__name__
    if name == "FlowMatchEulerDiscreteScheduler":
        return "kaleido_euler"
    if name == "UniPCMultistepScheduler":
        if not scheduler.config.use_flow_sigmas:
            raise ValueError(
                "a UniPC scheduler must be built with use_flow_sigmas=True; use make_scheduler('wan_unipc')"
            )
        return "wan_unipc"
    raise ValueError(
        f"scheduler {name} is not supported; use make_scheduler('kaleido_euler') or make_scheduler('wan_unipc')"
    )


def scheduler_shift(scheduler) -> float:
    """The shift a flow scheduler applies to the sigmas it is given."""
    if scheduler_preset(scheduler) == "kaleido_euler":
        return float(scheduler.shift)
    return float(scheduler.config.flow_shift)


def set_scheduler_sigmas(scheduler, num_inference_steps: int, shift: float, device=None) -> None:
    """Make `scheduler` sample with `shift` (the resolved setting, whatever it was built with) over its
    preset's explicit base sigmas, which it shifts: sigma = s*u / (1 + (s - 1)*u)."""
    preset = scheduler_preset(scheduler)
    if preset == "kaleido_euler":
        scheduler.set_shift(shift)
    else:
        scheduler.register_to_config(flow_shift=shift)
    scheduler.set_timesteps(sigmas=base_sigmas(num_inference_steps, preset), device=device)
