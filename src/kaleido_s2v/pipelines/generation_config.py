"""Generation defaults that live with a model (`generation_config.json`, SPEC §10.1) and the sigma schedule.

The schedule is passed to the scheduler explicitly: `FlowMatchEulerDiscreteScheduler(shift=7)
.set_timesteps(50)` differs from SPEC §5 by up to 0.078, while the same scheduler given
`sigmas=linspace(1, 0, 51)[:-1]` shifts them to SPEC §5's values.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import write_json_atomic

GENERATION_CONFIG_NAME = "generation_config.json"

# SPEC §5: Wan2.1's default negative prompt without the phrase for badly drawn faces.
KALEIDO_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

SCHEDULER_PRESETS = ("kaleido_euler", "wan_unipc")


@dataclass(frozen=True)
class GenerationConfig:
    """Defaults for one model; CLI flags and call arguments override them.

    reference_size: (height, width) references are letterboxed to; None means the video size.
    max_sequence_length: text tokens per prompt, as the model was trained.
    scheduler: "kaleido_euler" (SPEC §5, the release) or "wan_unipc" (Wan2.1 T2V's own sampler).
    """

    height: int = 512
    width: int = 896
    num_frames: int = 81
    fps: int = 16
    num_inference_steps: int = 50
    guidance_scale: float = 6.0
    shift: float = 7.0
    negative_prompt: str = KALEIDO_NEGATIVE_PROMPT
    max_references: int = 3
    reference_size: tuple[int, int] | None = None
    scheduler: str = "kaleido_euler"
    # Text tokens the prompt is padded to (umt5-xxl: 512); a model trained with shorter text sets it.
    max_sequence_length: int = 512

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULER_PRESETS:
            raise ValueError(f"scheduler {self.scheduler!r} is not a preset; use one of {SCHEDULER_PRESETS}")
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
        """A copy with every value that is not None replaced."""
        return replace(self, **{key: value for key, value in values.items() if value is not None})


WAN_UNIPC_DEFAULTS = dict(num_inference_steps=50, guidance_scale=5.0, shift=5.0, scheduler="wan_unipc")


def base_sigmas(num_inference_steps: int, scheduler: str = "kaleido_euler") -> np.ndarray:
    """Unshifted sigmas, one per step (the terminal 0 excluded), float64.

    kaleido_euler: linspace(1, 0, N + 1)[:-1] (SPEC §5); wan_unipc: linspace(1, 1/1000, N + 1)[:-1]
    (Wan2.1's sampler).
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
    end = 0.0 if scheduler == "kaleido_euler" else 1.0 / 1000
    return np.linspace(1.0, end, num_inference_steps + 1)[:-1]


def shifted_sigmas(num_inference_steps: int, shift: float) -> np.ndarray:
    """SPEC §5 exactly: sigma_i = s*u / (1 + (s - 1)*u), u = linspace(1, 0, N + 1); length N + 1, ends at 0."""
    u = np.linspace(1.0, 0.0, num_inference_steps + 1)
    return shift * u / (1.0 + (shift - 1.0) * u)


def make_scheduler(preset: str = "kaleido_euler", shift: float | None = None):
    """A diffusers scheduler for a preset; `shift` defaults to the preset's (7 Kaleido, 5 Wan)."""
    if preset == "kaleido_euler":
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=7.0 if shift is None else shift
        )
    if preset == "wan_unipc":
        from diffusers import UniPCMultistepScheduler

        return UniPCMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=5.0 if shift is None else shift,
            solver_order=2,
            final_sigmas_type="zero",
        )
    raise ValueError(f"scheduler preset {preset!r} is unknown; use one of {SCHEDULER_PRESETS}")


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


def set_scheduler_sigmas(scheduler, num_inference_steps: int, device=None) -> None:
    """Give `scheduler` the preset's explicit base sigmas (it applies its own shift)."""
    sigmas = base_sigmas(num_inference_steps, scheduler_preset(scheduler))
    scheduler.set_timesteps(sigmas=sigmas, device=device)
