"""The ablation table: each cell's figures over its training seeds, from evaluated runs' summaries.

A cell is one recipe setting (e.g. naive pairing) trained with several seeds; each run was scored by
`kaleido-s2v demo eval`, which wrote `<run>/eval/summary.json` (see `kaleido_s2v.demo.evaluate`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

# (figure, its name in the table): identity, swaps and motion on the held-out cases (cut-out
# references); decoupling and copy-paste on the background-reference cases, the only ones with a
# background that can leak.
ABLATION_COLUMNS = (
    ("identity_accuracy", "identity_accuracy"),
    ("attribute_swap_rate", "attribute_swap_rate"),
    ("motion_accuracy", "motion_accuracy"),
    ("decoupling", "decoupling (background refs)"),
    ("copy_paste", "copy_paste (background refs)"),
)
LEAKAGE_FIGURES = ("decoupling", "copy_paste")


def _ablation_row(run: str | os.PathLike) -> dict:
    summary_file = Path(run) / "eval" / "summary.json"
    if not summary_file.is_file():
        raise FileNotFoundError(f"{summary_file} is missing; run `kaleido-s2v demo eval` for {run} first")
    summary = json.loads(summary_file.read_text())
    if "background_references" not in summary:
        raise ValueError(
            f"{summary_file} has no background-reference rows; rerun `kaleido-s2v demo eval` for {run} "
            "(finished generations are reused)"
        )
    leakage = summary["background_references"]["model"]
    return {f: (leakage if f in LEAKAGE_FIGURES else summary["model"])[f] for f, _ in ABLATION_COLUMNS}


def ablation_table(cells: dict[str, list[str | os.PathLike]]) -> dict:
    """Per cell, the mean, min and max over its runs (one per training seed) of each figure of
    `ABLATION_COLUMNS` (from the `model` rows of `<run>/eval/summary.json`), plus the seeds' count."""
    table = {}
    for cell, runs in cells.items():
        rows = [_ablation_row(run) for run in runs]
        table[cell] = {"runs": len(rows)}
        for figure, _ in ABLATION_COLUMNS:
            values = [row[figure] for row in rows if row[figure] is not None]
            table[cell][figure] = (
                {"mean": float(np.mean(values)), "min": float(min(values)), "max": float(max(values))}
                if values
                else None
            )
    return table


def format_ablation_table(table: dict) -> str:
    """Markdown: one row per cell, `mean (min–max)` per figure."""
    lines = [
        "| cell | runs | " + " | ".join(name for _, name in ABLATION_COLUMNS) + " |",
        "|" + "---|" * (len(ABLATION_COLUMNS) + 2),
    ]
    for cell, row in table.items():
        cells = [
            "–" if row[f] is None else f"{row[f]['mean']:.2f} ({row[f]['min']:.2f}–{row[f]['max']:.2f})"
            for f, _ in ABLATION_COLUMNS
        ]
        lines.append(f"| {cell} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
