"""`data report`: the funnel of a run as text and a contact sheet (PNG) of sampled training pairs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.data.config import STAGE_NAMES
from kaleido_s2v.data.samples import iter_samples


def latest_run(directory: str | os.PathLike = ".", max_depth: int = 3) -> Path:
    """The most recently finished run folder (one holding run.json) under `directory`."""
    root = Path(directory)
    found = []
    for depth in range(max_depth + 1):
        found.extend(root.glob("/".join(["*"] * depth + ["run.json"])))
    if not found:
        raise FileNotFoundError(
            f"no run folder (with run.json) under {root.resolve()}; run `kaleido-s2v data run CONFIG` first"
        )
    return max(found, key=lambda p: p.stat().st_mtime).parent


def format_funnel(funnel: dict) -> str:
    lines = [f"{'stage':<11} {'in':>6} {'kept':>6}  dropped (reason: count)"]
    order = [s for s in STAGE_NAMES if s in funnel] + [s for s in funnel if s not in STAGE_NAMES]
    for stage in order:
        entry = funnel[stage]
        dropped = ", ".join(f"{k}: {v}" for k, v in entry["dropped"].items()) or "-"
        lines.append(f"{stage:<11} {entry['in']:>6} {entry['kept']:>6}  {dropped}")
        if "shots" in entry:
            shots = entry["shots"]
            reasons = ", ".join(f"{k}: {v}" for k, v in shots["dropped"].items()) or "-"
            lines.append(
                f"{'  shots':<11} {shots['total']:>6} {shots['clipped']:>6}  {reasons}  ({entry['clips']} clips)"
            )
        if entry.get("subjects_dropped"):
            reasons = ", ".join(f"{k}: {v}" for k, v in entry["subjects_dropped"].items())
            lines.append(f"{'  subjects':<11} {'':>6} {'':>6}  {reasons}")
    return "\n".join(lines)


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def contact_sheet(
    export_dir: str | os.PathLike,
    out: str | os.PathLike,
    samples: int = 8,
    seed: int = 0,
    row_height: int = 96,
) -> Path:
    """Rows of [target keyframe | reference 1 | … ] for up to `samples` exported pairs, sampled by `seed`."""
    from PIL import Image, ImageDraw

    pairs = list(iter_samples(export_dir))
    if not pairs:
        raise ValueError(f"{export_dir} holds no exported sample to show")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(pairs), size=min(samples, len(pairs)), replace=False).tolist())
    rows = []
    for index in chosen:
        sample = pairs[index]
        frames, _ = sample.read_video()
        tiles = [_fit(frames[len(frames) // 2], row_height)]
        gap = np.full((row_height, 6, 3), 255, np.uint8)
        for ref in sample.reference_images():
            tiles += [gap, _fit(np.asarray(ref), row_height)]
        row = np.concatenate(tiles, axis=1)
        label = np.full((14, row.shape[1], 3), 255, np.uint8)
        rows.append(np.concatenate([label, row], axis=0))
    width = max(r.shape[1] for r in rows)
    sheet = np.full((sum(r.shape[0] + 4 for r in rows), width, 3), 230, np.uint8)
    y = 0
    captions = []
    for index, row in zip(chosen, rows, strict=True):
        sheet[y : y + row.shape[0], : row.shape[1]] = row
        captions.append((y, pairs[index]))
        y += row.shape[0] + 4
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for y, sample in captions:
        variants = ",".join(s.get("variant", "?") for s in sample.subjects) or "-"
        draw.text((2, y + 1), f"{sample.id} [{variants}] {sample.caption}"[:160], fill=(0, 0, 0))
    out = Path(out)
    with atomic_path(out) as temporary:
        image.save(temporary)
    return out


def report(
    run_dir: str | os.PathLike, samples: int = 8, out: str | os.PathLike | None = None
) -> tuple[str, Path | None]:
    """(funnel text, contact sheet path or None when nothing was exported)."""
    run_dir = Path(run_dir)
    funnel_path = run_dir / "funnel.json"
    if not funnel_path.is_file():
        raise FileNotFoundError(f"{funnel_path} does not exist; is {run_dir} a `data run` folder?")
    text = format_funnel(json.loads(funnel_path.read_text(encoding="utf-8")))
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    if not run["exported"]:
        return text, None
    return text, contact_sheet(run_dir / "export", out or run_dir / "report" / "contact_sheet.png", samples)
