"""Fixtures for the demo tests: the reduced recipe run once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REDUCED_CONFIG = REPO / "configs" / "demo" / "reduced.yaml"


@pytest.fixture(scope="session")
def reduced_config():
    from kaleido_s2v.demo.recipe import load_demo_config

    return load_demo_config(REDUCED_CONFIG)


@pytest.fixture(scope="session")
def reduced_run(tmp_path_factory, reduced_config):
    """(run folder, assembled pipeline folder) of `configs/demo/reduced.yaml`, end to end."""
    from kaleido_s2v.demo.recipe import run_demo

    run_dir = tmp_path_factory.mktemp("demo") / "run"
    pipeline = run_demo(reduced_config, run_dir, progress=False)
    return run_dir, pipeline
