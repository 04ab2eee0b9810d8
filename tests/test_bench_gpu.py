"""benchmarks/bench_gpu.py on the CPU (`--tiny`): every configuration gives a row, the FLOPs formula is right.

The script itself runs once, as a subprocess, exactly as the test command in its docstring; the FLOPs
checks import it and recompute by hand.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_components import TINY_TRANSFORMER_CONFIG

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"

pytestmark = pytest.mark.slow  # one ~40 s subprocess on two cores, shared by the tests below


def load_bench():
    """The benchmark script as a module (it is no package module: benchmarks/ is not importable)."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("bench_gpu") / "tiny.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--budget-s", "60", "--json", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(output.read_text())


def _rows(report: dict, part: str) -> list[dict]:
    return [row for row in report["rows"] if row["part"].startswith(part)]


def _assert_ran_or_says_why(row: dict) -> None:
    """Measured, or skipped because the budget ran out (MagCache also when its calibration was skipped);
    an error or OOM on the tiny model is a bug."""
    if row["status"] == "skipped":
        assert row["reason"].startswith(("time budget", "no calibration ratios")), row
    else:
        assert row["status"] == "measured", row


def test_every_dense_configuration_has_a_row_in_order(tiny_report):
    bench = load_bench()
    rows = _rows(tiny_report, "dense")
    assert [row["name"] for row in rows] == [config.name for config in bench.DENSE_CONFIGS]
    for row in rows:
        if row["name"] == "cuDNN attention":
            # cuDNN attention is CUDA-only: the row records the error instead of crashing the run.
            assert row["status"] == "unsupported on cpu"
            assert row["reason"]
        else:
            _assert_ran_or_says_why(row)
    assert rows[0]["status"] == "measured"  # the first row starts before any budget is spent
    for row in rows[2:]:  # the later rows fall back to the attention backend that worked
        if row["status"] == "measured":
            assert "attention native" in row["notes"]
    offload = [row for row in rows if "group offload" in row["name"] and row["status"] == "measured"]
    assert all("cpu: without streams (CUDA only)" in row["notes"] for row in offload)


def test_tiny_flops_match_a_hand_computation_and_mfu_is_positive(tiny_report):
    info = tiny_report["scenarios"]["dense"]
    layers, dim = TINY_TRANSFORMER_CONFIG["num_layers"], 2 * 12  # 2 heads x 12
    ffn = TINY_TRANSFORMER_CONFIG["ffn_dim"]
    # Per block: self-attention q, k, v, o (4 D^2), cross-attention q, o (2 D^2), FFN in and out (2 D F).
    linear_params = layers * (6 * dim**2 + 2 * dim * ffn)
    tokens = 3 * 4 * 4 + 3 * 4 * 4  # video latents 3x8x8 and three 8x8 references, patches 1x2x2
    text = 16
    flops = 2 * tokens * linear_params + 4 * layers * tokens**2 * dim + 4 * layers * tokens * text * dim
    assert (info["linear_params"], info["tokens"], info["text_length"]) == (linear_params, tokens, text)
    assert info["forward_flops"] == flops

    measured = [row for row in _rows(tiny_report, "dense") if row["status"] == "measured"]
    assert measured
    for row in measured:
        assert row["flops"] == 2 * flops  # a CFG step is two samples' worth
        assert row["seconds"] > 0 and row["tflops_per_s"] > 0 and row["mfu"] > 0
        assert row["mfu"] == pytest.approx(row["flops"] / (row["seconds"] * tiny_report["peak_flops"]))
        assert row["video_seconds"] == pytest.approx(50 * row["seconds"])


def test_cache_rows_count_computed_and_skipped_calls(tiny_report):
    rows = {row["name"]: row for row in _rows(tiny_report, "caches")}
    names = list(rows)
    assert len(names) == 6, names
    assert names[0].startswith("no cache") and names[-1].startswith("4-step preset")
    assert any(name.startswith("FirstBlockCache") for name in names)
    assert any(name.startswith("TaylorSeer") for name in names)
    assert any(name.startswith("MagCache calibration") for name in names)
    for row in rows.values():
        _assert_ran_or_says_why(row)
        if row["status"] == "measured":
            assert row["computed"] + row["skipped"] == row["calls"]
            # Set explicitly: the failed cuDNN row left diffusers' process-wide backend on cuDNN.
            assert "attention native" in row["notes"]
    baseline = rows[names[0]]
    assert baseline["status"] == "measured" and baseline["skipped"] == 0
    assert baseline["calls"] == 2 * 20  # 20 steps, two guidance branches
    taylor = next(row for name, row in rows.items() if name.startswith("TaylorSeer"))
    if taylor["status"] == "measured":
        assert taylor["skipped"] > 0  # it predicts between refreshes: skipping is its whole point
    preset = rows[names[-1]]
    if preset["status"] == "measured":
        assert preset["calls"] == 4


def test_multi_gpu_rows_say_what_they_need(tiny_report):
    bench = load_bench()
    rows = _rows(tiny_report, "multi-GPU")
    assert [row["name"] for row in rows] == [name for name, _ in bench.MULTI_GPU_ROWS]
    for row, (_, gpus) in zip(rows, bench.MULTI_GPU_ROWS, strict=True):
        assert row["status"] == "not measured"
        assert f"needs {gpus} GPUs" in row["reason"]


def test_report_names_its_environment(tiny_report):
    for key in ("device", "torch", "diffusers", "date"):
        assert tiny_report[key]
    assert tiny_report["mode"] == "tiny"


def test_14b_self_check_is_2_56_pf_per_43008_token_forward():
    bench = load_bench()
    check = bench.flops_self_check()  # builds the 14B model on the meta device: nothing is allocated
    layers, dim, ffn = 40, 5120, 13824
    assert check["linear_params"] == layers * (6 * dim**2 + 2 * dim * ffn)
    by_hand = bench.forward_flops(check["linear_params"], layers, dim, 43_008, 512)
    assert check["flops"] == by_hand
    assert by_hand == pytest.approx(2.56e15, rel=0.05)
