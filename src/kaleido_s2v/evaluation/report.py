"""The HTML report: a summary table with the controls, matplotlib plots of the metric
distributions, and per case a thumbnail strip (references, then sampled frames with the subject
boxes found). `write_compare` puts two runs side by side."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic, write_text_atomic
from kaleido_s2v.common.video_io import read_video
from kaleido_s2v.evaluation.references import load_reference
from kaleido_s2v.evaluation.summary import CASE_COLUMNS, HIGHER_IS_BETTER

ASSETS = "report_assets"
STRIP_HEIGHT = 72
STRIP_FRAMES = 8
BOX_COLOURS = [(255, 64, 64), (64, 160, 255), (255, 200, 0), (64, 220, 120), (220, 90, 255)]
PLOTTED = (
    "consistency",
    "decoupling",
    "presence",
    "identity_accuracy",
    "copy_paste",
    "motion_amplitude",
    "motion_smoothness",
    "text_alignment",
    "aesthetics",
)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('the report plots need matplotlib: pip install "kaleido-s2v[eval]"') from error
    return plt


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary)


def _resize_to_height(image: np.ndarray, height: int) -> np.ndarray:
    import cv2

    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def thumbnail_strip(
    reference_images: list[np.ndarray],
    frames: np.ndarray,
    boxes: list[list[list[float] | None]],
    height: int = STRIP_HEIGHT,
) -> np.ndarray:
    """(height, total width, 3) uint8: references, a gap, then frames with each subject's box.

    frames: (N, H, W, 3) sampled frames; boxes: [subject][frame] (x0, y0, x1, y1) in frame pixels or None.
    """
    import cv2

    tiles = [_resize_to_height(image, height) for image in reference_images]
    tiles.append(np.full((height, 8, 3), 255, np.uint8))
    for f, frame in enumerate(frames):
        scale = height / frame.shape[0]
        tile = _resize_to_height(frame, height).copy()
        for s, subject_boxes in enumerate(boxes):
            box = subject_boxes[f] if f < len(subject_boxes) else None
            if box is not None:
                x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
                cv2.rectangle(
                    tile, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), BOX_COLOURS[s % len(BOX_COLOURS)], 2
                )
        tiles.append(tile)
        tiles.append(np.full((height, 2, 3), 255, np.uint8))
    return np.concatenate(tiles, axis=1)


def _case_strip(case: dict, video: Path, reference_paths: list[str]) -> np.ndarray | None:
    try:
        frames, _ = read_video(video)
        references = [load_reference(path, "reference").image for path in reference_paths]
    except (FileNotFoundError, ValueError):
        return None
    sampled = case["sampled_frames"]
    keep = sorted(
        set(np.linspace(0, len(sampled) - 1, min(STRIP_FRAMES, len(sampled))).round().astype(int).tolist())
    )
    chosen = frames[[sampled[k] for k in keep if sampled[k] < len(frames)]]
    boxes = [[subject["boxes"][k] for k in keep] for subject in case["subjects"]]
    return thumbnail_strip(references, chosen, boxes)


def plot_distributions(path: Path, payload: dict) -> list[str]:
    """One histogram per metric that has values, in a grid; returns the metrics plotted."""
    plt = _pyplot()
    cases = payload["cases"].values()
    series = {}
    for name in PLOTTED:
        if name == "decoupling":
            values = [s["decoupling"] for c in cases for s in c["subjects"] if s["decoupling"] is not None]
        elif name == "identity_accuracy":
            values = [float(s["identity_correct"]) for c in cases for s in c["subjects"]]
        else:
            values = [c[name] for c in cases if c.get(name) is not None]
        if values:
            series[name] = values
    if not series:
        return []
    columns = 3
    rows = int(np.ceil(len(series) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, (name, values) in zip(axes.flat, series.items(), strict=False):
        axis.hist(values, bins=min(20, max(5, len(values))), color="#4a7fb5")
        axis.set_title(f"{name} (n={len(values)})", fontsize=9)
    for axis in list(axes.flat)[len(series) :]:
        axis.axis("off")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
    return list(series)


def plot_means(path: Path, labels: list[str], runs: list[dict], names: list[str]) -> None:
    """Grouped bars of the summary means of several runs (or a run and its chance control)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 3.2))
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(labels))
    for index, (summary, name) in enumerate(zip(runs, names, strict=True)):
        values = [(summary or {}).get(label, {}).get("mean") for label in labels]
        axis.bar(x + index * width, [0 if v is None else v for v in values], width, label=name)
    axis.set_xticks(x + width * (len(runs) - 1) / 2, labels, rotation=30, ha="right", fontsize=8)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)


def _cell(value) -> str:
    if value is None:
        return "<td class='na'>–</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, float):
        return f"<td>{value:.4f}</td>"
    return f"<td>{html.escape(str(value))}</td>"


_STYLE = (
    "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}td.na{color:#999}.note{background:#fff3cd;"
    "padding:.5em}img.strip{max-width:100%}</style>"
)


def write_report(
    out: str | os.PathLike, payload: dict, videos: Path, references: dict[str, list[str]]
) -> Path:
    """`<out>/report.html` with its PNGs under `<out>/report_assets/`."""
    out = Path(out)
    assets = out / ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    summary, chance = payload["summary"], payload["controls"]["chance"]
    labels = [name for name in summary if summary[name]["mean"] is not None]
    plotted = plot_distributions(assets / "distributions.png", payload)
    plot_means(assets / "means.png", labels, [summary, chance], ["this run", "chance control"])

    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>kaleido-s2v eval</title>{_STYLE}</head><body>"
    ]
    parts.append("<h1>kaleido-s2v evaluation</h1>")
    parts.append(f"<p class='note'>{html.escape(payload['comparability'])}</p>")
    parts.append(
        f"<p>{payload['num_scored']} of {payload['num_cases']} cases scored; {payload['num_errors']} errors. "
        f"Config fingerprint <code>{payload['config_fingerprint']}</code>.</p>"
    )
    parts.append(
        "<h2>Summary</h2><table><tr><th>metric</th><th>mean</th><th>n</th><th>chance control</th><th>better</th></tr>"
    )
    for name, figure in summary.items():
        better = {True: "higher", False: "lower", None: "–"}[HIGHER_IS_BETTER.get(name)]
        chance_value = chance[name]["mean"] if chance else None
        extra = ""
        if name == "decoupling":
            extra = f" ({figure['no_background_references']} references without background left out)"
        parts.append(
            f"<tr><td>{name}{html.escape(extra)}</td>{_cell(figure['mean'])}<td>{figure['n']}</td>"
            f"{_cell(chance_value)}<td>{better}</td></tr>"
        )
    parts.append(
        f"<tr><td>motion_accuracy, uniform chance</td>{_cell(payload['controls']['motion_accuracy_uniform'])}"
        "<td></td><td></td><td></td></tr></table>"
    )
    for name, reason in payload["unavailable"].items():
        parts.append(f"<p class='note'>{html.escape(name)}: {html.escape(reason)}</p>")
    parts.append(f"<p>{html.escape(payload['controls']['other_controls'])}</p>")
    if plotted:
        parts.append(
            f"<h2>Distributions</h2><img src='{ASSETS}/distributions.png' alt='metric distributions'>"
        )
    parts.append(f"<h2>Means against the chance control</h2><img src='{ASSETS}/means.png' alt='means'>")
    if payload["errors"]:
        parts.append("<h2>Errors</h2><table><tr><th>case</th><th>line</th><th>stage</th><th>error</th></tr>")
        for error in payload["errors"]:
            parts.append(
                f"<tr>{_cell(error['case'])}{_cell(error['line'])}{_cell(error['stage'])}{_cell(error['error'])}</tr>"
            )
        parts.append("</table>")
    parts.append("<h2>Cases</h2>")
    for index, (case_id, case) in enumerate(payload["cases"].items()):
        strip = _case_strip(case, videos / f"{case_id}.mp4", references.get(case_id, []))
        parts.append(f"<h3>{html.escape(case_id)}</h3>")
        if strip is not None:
            name = f"strip_{index:05d}.png"
            _save_png(assets / name, strip)
            parts.append(
                f"<img class='strip' src='{ASSETS}/{name}' alt='references and frames of {html.escape(case_id)}'>"
            )
        header = "".join(f"<th>{c}</th>" for c in CASE_COLUMNS)
        parts.append(
            f"<table><tr>{header}</tr><tr>{''.join(_cell(case[c]) for c in CASE_COLUMNS)}</tr></table>"
        )
        subjects = "".join(
            f"<li>{html.escape(s['label'])}: consistency {s['consistency']:.3f}, presence {s['presence']:.2f}, "
            f"direction expected {s['expected_direction']} / observed {s['observed_direction']}</li>"
            for s in case["subjects"]
        )
        parts.append(f"<ul>{subjects}</ul>")
    parts.append("</body></html>")
    path = out / "report.html"
    write_text_atomic(path, "\n".join(parts))
    return path


def compare_runs(a: dict, b: dict) -> dict:
    """Side-by-side means and per-case deltas (b − a) of two metrics.json documents."""
    summary = {}
    for name in a["summary"]:
        mean_a = a["summary"][name]["mean"]
        mean_b = b["summary"].get(name, {}).get("mean")
        delta = None if mean_a is None or mean_b is None else mean_b - mean_a
        summary[name] = {"a": mean_a, "b": mean_b, "delta": delta}
    shared = sorted(set(a["cases"]) & set(b["cases"]))
    per_case = {
        case_id: {
            name: (
                None
                if a["cases"][case_id].get(name) is None or b["cases"][case_id].get(name) is None
                else b["cases"][case_id][name] - a["cases"][case_id][name]
            )
            for name in ("consistency", "decoupling", "presence", "copy_paste", "motion_amplitude")
        }
        for case_id in shared
    }
    warnings = []
    if a["config_fingerprint"] != b["config_fingerprint"]:
        warnings.append("the two runs used different metric configs; their figures are not comparable")
    if a["backend"] != b["backend"]:
        warnings.append(f"backends differ ({a['backend']} vs {b['backend']})")
    return {
        "summary": summary,
        "cases_in_both": len(shared),
        "only_in_a": sorted(set(a["cases"]) - set(b["cases"])),
        "only_in_b": sorted(set(b["cases"]) - set(a["cases"])),
        "per_case_delta": per_case,
        "warnings": warnings,
    }


def write_compare(run_a: str | os.PathLike, run_b: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Read two report folders' metrics.json; write `<out>/compare.json`, `compare.html` and a plot."""
    documents = []
    for run in (run_a, run_b):
        path = Path(run) / "metrics.json" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; pass a folder written by `kaleido-s2v eval --out`"
            )
        documents.append(json.loads(path.read_text()))
    a, b = documents
    comparison = compare_runs(a, b)
    comparison["a"], comparison["b"] = str(run_a), str(run_b)
    out = Path(out)
    (out / ASSETS).mkdir(parents=True, exist_ok=True)
    labels = [name for name, v in comparison["summary"].items() if v["a"] is not None or v["b"] is not None]
    plot_means(out / ASSETS / "compare.png", labels, [a["summary"], b["summary"]], ["A", "B"])
    write_json_atomic(out / "compare.json", comparison)
    rows = "".join(
        f"<tr><td>{name}</td>{_cell(v['a'])}{_cell(v['b'])}{_cell(v['delta'])}</tr>"
        for name, v in comparison["summary"].items()
    )
    notes = "".join(f"<p class='note'>{html.escape(w)}</p>" for w in comparison["warnings"])
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>compare</title>{_STYLE}</head><body>"
        f"<h1>A: {html.escape(str(run_a))}<br>B: {html.escape(str(run_b))}</h1>{notes}"
        f"<p class='note'>A: {html.escape(a['comparability'])}<br>B: {html.escape(b['comparability'])}</p>"
        f"<table><tr><th>metric</th><th>A</th><th>B</th><th>B − A</th></tr>{rows}</table>"
        f"<p>{comparison['cases_in_both']} cases in both runs.</p><img src='{ASSETS}/compare.png' alt='means'></body></html>"
    )
    write_text_atomic(out / "compare.html", page)
    return comparison
