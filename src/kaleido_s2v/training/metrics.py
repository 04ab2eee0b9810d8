"""Training metrics: one JSON record per logged step in `<output_dir>/metrics.jsonl`, mirrored to TensorBoard.

A record holds the step, loss, learning rate, gradient norm, the throughput since the previous record
(`ThroughputWindow.rates`) and the sampler's epoch. A resumed run first drops the records past its
checkpoint (`MetricsLog.trim`), so the file never holds a step twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kaleido_s2v.common.atomic import atomic_path

METRICS_FILE = "metrics.jsonl"


@dataclass
class ThroughputWindow:
    """Time and work since the last logged step; `tokens` counts this process's micro-batches only."""

    data_seconds: float = 0.0
    total_seconds: float = 0.0
    samples: int = 0
    tokens: int = 0

    def rates(self, world_size: int) -> dict[str, float]:
        """samples_per_s, tokens_per_s (every rank's, each rank taking an equal share of the batch) and
        data_time_share (the part of the time spent reading and encoding examples)."""
        total = max(self.total_seconds, 1e-9)
        return {
            "samples_per_s": self.samples / total,
            "tokens_per_s": self.tokens * world_size / total,
            "data_time_share": self.data_seconds / total,
        }


class MetricsLog:
    """The metrics of one run folder: `metrics.jsonl`, and TensorBoard scalars in `tensorboard/` if asked."""

    def __init__(self, output_dir: Path, tensorboard: bool) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / METRICS_FILE
        self.tensorboard = tensorboard
        self._writer = None

    def write(self, record: dict[str, float]) -> None:
        """Append `record`; its "step" is the TensorBoard step of every other value."""
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard:
            scalars = {name: value for name, value in record.items() if name != "step"}
            self._tensorboard_writer().add_scalars("train", scalars, record["step"])

    def trim(self, step: int) -> None:
        """Drop records past `step` (written before an interruption that a resume repeats)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] <= step]
        with atomic_path(self.path) as temporary:
            temporary.write_text("".join(line + "\n" for line in kept))

    def _tensorboard_writer(self):
        if self._writer is None:
            try:  # an optional backend: only runs with `tensorboard: true` need it
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "tensorboard: true needs the tensorboard package (pip install tensorboard)"
                ) from error
            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        return self._writer
