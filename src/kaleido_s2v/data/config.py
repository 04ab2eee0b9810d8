"""The data pipeline's configuration: YAML -> frozen dataclasses, by the rules of `kaleido_s2v.common.config_files`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from kaleido_s2v.common.config_files import build_dataclass, load_dataclass
from kaleido_s2v.data.stages.caption import CaptionConfig
from kaleido_s2v.data.stages.detect import DetectConfig
from kaleido_s2v.data.stages.export import ExportConfig
from kaleido_s2v.data.stages.filter import FilterConfig
from kaleido_s2v.data.stages.probe import ProbeConfig
from kaleido_s2v.data.stages.references import ReferencesConfig
from kaleido_s2v.data.stages.segment import SegmentConfig
from kaleido_s2v.data.stages.split import SplitConfig

STAGE_NAMES = ("probe", "split", "caption", "detect", "segment", "filter", "references", "export")


@dataclass(frozen=True)
class PipelineConfig:
    """One `data run`: inputs, where to write, how to execute, and every stage's settings.

    inputs: video files, folders (every *.mp4/*.mov/*.mkv/*.avi/*.webm inside, recursively) or globs.
    run_dir: the run folder (manifest, artifacts, export, shards, funnel.json).
    """

    inputs: tuple[str, ...]
    run_dir: str
    seed: int = 0
    executor: str = "local"  # "local" (process pool) | "ray"
    workers: int = 2
    retry_failed: bool = False
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    references: ReferencesConfig = field(default_factory=ReferencesConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if self.executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {self.executor!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if not self.inputs:
            raise ValueError("inputs is empty; list video files, folders or globs")


def config_from_dict(values: dict, base_dir: str | os.PathLike | None = None) -> PipelineConfig:
    """Build a PipelineConfig by the config-file rules (unknown keys, types; an empty section means its
    defaults); relative inputs and run_dir are resolved against `base_dir`."""
    config = build_dataclass(PipelineConfig, values)
    if base_dir is not None:
        base = Path(base_dir)
        inputs = tuple(str(base / p) if not Path(p).is_absolute() else p for p in config.inputs)
        run_dir = config.run_dir if Path(config.run_dir).is_absolute() else str(base / config.run_dir)
        config = dataclasses.replace(config, inputs=inputs, run_dir=run_dir)
    return config


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> PipelineConfig:
    """Read a YAML config (the rules of `kaleido_s2v.common.config_files`; `overrides` merge section by
    section); `inputs` and `run_dir` are relative to the current directory."""
    return load_dataclass(PipelineConfig, path, overrides)
