"""The metrics file: throughput rates, and trimming the records a resume repeats."""

import json

import pytest

from kaleido_s2v.training.metrics import MetricsLog, ThroughputWindow


def test_rates_count_every_ranks_tokens_and_the_data_share():
    window = ThroughputWindow(data_seconds=1.0, total_seconds=4.0, samples=8, tokens=100)
    assert window.rates(world_size=2) == {"samples_per_s": 2.0, "tokens_per_s": 50.0, "data_time_share": 0.25}
    assert ThroughputWindow().rates(world_size=1)["samples_per_s"] == 0.0  # no step timed yet


def test_trim_drops_the_records_past_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    log.trim(0)  # no file yet: nothing to do
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step})
    log.trim(2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert records[1]["loss"] == pytest.approx(0.5)
