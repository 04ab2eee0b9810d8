"""The ablation table over evaluated runs: mean and spread per cell, and its command's strips."""

from __future__ import annotations

import json

import pytest

from kaleido_s2v.demo.ablation import ABLATION_COLUMNS, ablation_table, format_ablation_table

FIGURE_NAMES = [figure for figure, _ in ABLATION_COLUMNS]


def test_ablation_table_gives_mean_and_spread_over_seeds(tmp_path):
    def run(name, identity, motion, leakage_decoupling, background_references=True):
        folder = tmp_path / name
        (folder / "eval").mkdir(parents=True)
        row = dict.fromkeys(FIGURE_NAMES, 0.0) | {"identity_accuracy": identity, "motion_accuracy": motion}
        summary = {"model": row | {"decoupling": 0.99}}
        if background_references:
            summary["background_references"] = {"model": row | {"decoupling": leakage_decoupling}}
        (folder / "eval" / "summary.json").write_text(json.dumps(summary))
        return folder

    table = ablation_table(
        {"kaleido": [run("a", 0.5, 0.2, 0.8), run("b", 0.7, 0.4, 0.6)], "none": [run("c", 0.1, 0.3, None)]}
    )
    assert table["kaleido"]["runs"] == 2
    assert table["kaleido"]["identity_accuracy"] == pytest.approx({"mean": 0.6, "min": 0.5, "max": 0.7})
    assert table["none"]["motion_accuracy"] == {"mean": 0.3, "min": 0.3, "max": 0.3}
    # decoupling comes from the background-reference cases, not the cut-out ones
    assert table["kaleido"]["decoupling"] == pytest.approx({"mean": 0.7, "min": 0.6, "max": 0.8})
    assert table["none"]["decoupling"] is None
    text = format_ablation_table(table)
    assert "| kaleido | 2 | 0.60 (0.50–0.70)" in text and "decoupling (background refs)" in text
    with pytest.raises(FileNotFoundError, match="demo eval"):
        ablation_table({"missing": [tmp_path / "nowhere"]})
    with pytest.raises(ValueError, match="rerun `kaleido-s2v demo eval`"):
        ablation_table({"old": [run("d", 0.1, 0.1, 0.5, background_references=False)]})


def test_ablation_table_cli_stacks_each_cells_strips(tmp_path, capsys):
    from PIL import Image

    from kaleido_s2v.cli import main
    from kaleido_s2v.demo.strip import GAP, LABEL_HEIGHT

    cells = []
    for name, (width, height) in {"kaleido": (40, 20), "naive": (60, 24)}.items():
        run = tmp_path / name
        (run / "eval").mkdir(parents=True)
        row = dict.fromkeys(FIGURE_NAMES, 0.5)
        summary = {"model": row, "background_references": {"model": row}}
        (run / "eval" / "summary.json").write_text(json.dumps(summary))
        for strip in ("strip.png", "strip_background.png"):
            Image.new("RGB", (width, height), "red").save(run / "eval" / strip)
        cells += ["--cell", f"{name}={run}"]
    out, background = tmp_path / "strips.png", tmp_path / "leakage.png"
    assert (
        main(["demo", "ablation-table", *cells, "--strips", str(out), "--background-strips", str(background)])
        == 0
    )
    for picture in (out, background):
        with Image.open(picture) as image:
            # each strip shrunk by 2 under its label bar, a gap between cells, as wide as the widest
            assert image.size == (30, 2 * LABEL_HEIGHT + 10 + 12 + 2 * GAP)
            assert image.getpixel((0, LABEL_HEIGHT + 1)) == (255, 0, 0)
    assert "| kaleido | 1 |" in capsys.readouterr().out
