"""The demo's data: procedural scenes, turned into S2V pairs by the project's data pipeline.

Training scenes use seeds `seed, seed + 1, …`; held-out scenes use seeds from `HELDOUT_SEED_OFFSET`
on, so no held-out clip is ever rendered for training. Scenes whose cast contains a reserved identity
(the subjects of `examples/`) are skipped for training, so the example references show subjects
the model never saw in that exact combination of shape, colour and texture.

Pairs come from `kaleido_s2v.data` with the `ground_truth` caption/detect/segment backends and the
offline references stage: `cross_shot` for the demo, `naive` (box crops with their background from
the target clip) for the ablation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.common.video_io import read_video, write_video
from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.samples import iter_folder
from kaleido_s2v.data.stages.references import ReferencesConfig, padded_box
from kaleido_s2v.data.synthetic import Identity, SceneConfig, render_scene, sprite

HELDOUT_SEED_OFFSET = 1_000_000
# The subjects of the shipped example references (`examples/*.png`); never in a training scene.
RESERVED_IDENTITIES = (Identity("star", "red", "striped"), Identity("circle", "blue", "dotted"))


@dataclass(frozen=True)
class DemoDataConfig:
    """How much procedural data to render and how to pair it.

    frames_per_shot: source frames per shot; the split stage drops 3 at each end and keeps
    `num_frames` at `fps`, so it must be at least num_frames + 6.
    """

    num_train_scenes: int = 600
    num_heldout_scenes: int = 24
    seed: int = 0
    size: int = 64
    num_shots: int = 3
    frames_per_shot: int = 16
    num_frames: int = 9
    fps: float = 8.0
    max_subjects: int = 2
    heldout_max_subjects: int = 3  # the held-out set covers 1, 2 and 3 subjects
    subject_scale: float = 0.32
    # Backgrounds the demo renders: "brick wall" is left out by default, its 1-px mortar lines are
    # beyond a 4x-compressing VAE at 64x64 (a 16x16 bicubic round trip keeps only 15.7 dB of it).
    backgrounds: tuple[str, ...] = ("grey grid", "sand gradient", "green noise", "blue stripes", "dark tiles")
    travel: float = 0.9
    variants: tuple[str, ...] = ("cutout", "pose")
    workers: int = 1

    def __post_init__(self) -> None:
        if self.frames_per_shot < self.num_frames + 6:
            raise ValueError(
                f"frames_per_shot {self.frames_per_shot} cannot fill a {self.num_frames}-frame clip after the "
                f"split stage drops 3 frames at each shot end; use at least {self.num_frames + 6}"
            )
        if self.num_train_scenes < 1 or self.num_heldout_scenes < 1:
            raise ValueError("need at least one training and one held-out scene")

    def scene_config(self, seed: int, heldout: bool = False) -> SceneConfig:
        return SceneConfig(
            width=self.size,
            height=self.size,
            fps=self.fps,
            num_shots=self.num_shots,
            frames_per_shot=self.frames_per_shot,
            min_subjects=1,
            max_subjects=self.heldout_max_subjects if heldout else self.max_subjects,
            subject_scale=self.subject_scale,
            backgrounds=self.backgrounds,
            travel=self.travel,
            seed=seed,
        )


def _reserved_labels() -> set[str]:
    return {identity.label for identity in RESERVED_IDENTITIES}


def render_scenes(
    folder: str | os.PathLike, config: DemoDataConfig, heldout: bool, progress: bool = True
) -> list[Path]:
    """Write `<folder>/scene<seed>.mp4` + `.json` (resumable: existing pairs are kept).

    Training: the first `num_train_scenes` seeds from `config.seed` whose cast has no reserved
    identity. Held-out: `num_heldout_scenes` seeds from `HELDOUT_SEED_OFFSET + config.seed`.
    Returns the video paths in seed order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = config.num_heldout_scenes if heldout else config.num_train_scenes
    seed = config.seed + (HELDOUT_SEED_OFFSET if heldout else 0)
    reserved = _reserved_labels()
    paths: list[Path] = []
    with tqdm(
        total=count, desc="held-out scenes" if heldout else "training scenes", disable=not progress
    ) as bar:
        while len(paths) < count:
            video, meta = folder / f"scene{seed:07d}.mp4", folder / f"scene{seed:07d}.json"
            seed += 1
            if video.is_file() and meta.is_file():
                paths.append(video)
                bar.update()
                continue
            frames, truth = render_scene(config.scene_config(seed - 1, heldout))
            if not heldout and {s["label"] for s in truth["subjects"]} & reserved:
                continue
            truth["name"] = video.stem
            write_video(video, frames, fps=config.fps)
            write_json_atomic(meta, truth)
            paths.append(video)
            bar.update()
    return paths


def pipeline_config(scenes: str | os.PathLike, run_dir: str | os.PathLike, config: DemoDataConfig, mode: str):
    """The data pipeline's config for the demo: ground-truth backends, `mode` pairing, folder export."""
    if mode not in ("cross_shot", "naive"):
        raise ValueError(f"pairing mode {mode!r} is not used by the demo; use 'cross_shot' or 'naive'")
    return config_from_dict(
        {
            "inputs": [str(scenes)],
            "run_dir": str(run_dir),
            "seed": config.seed,
            "executor": "local",
            "workers": config.workers,
            "split": {"num_frames": config.num_frames, "fps": config.fps, "min_scene_len": 5},
            "caption": {"backend": "ground_truth"},
            "detect": {"backend": "ground_truth"},
            "segment": {"backend": "ground_truth"},
            "filter": {"backend": "offline"},
            "references": {
                "mode": mode,
                "match": "label",
                "variants": list(config.variants) if mode == "cross_shot" else ["cutout"],
            },
            "export": {"shards": None},
        }
    )


def build_pairs(
    scenes: str | os.PathLike,
    run_dir: str | os.PathLike,
    config: DemoDataConfig,
    mode: str = "cross_shot",
    progress: bool = True,
) -> Path:
    """Run the data pipeline over rendered scenes; returns the export folder (docs/contracts.md#2-training-samples folder form).

    Resumable: the pipeline's manifest skips finished work.
    """
    pipeline = pipeline_config(scenes, run_dir, config, mode)
    summary = run_pipeline(pipeline, progress=progress)
    if not summary.exported:
        raise RuntimeError(f"the data pipeline exported no pairs from {scenes}; see {run_dir}/funnel.json")
    return Path(summary.run_dir) / pipeline.export.folder


def select_clean_pairs(export: str | os.PathLike, out: str | os.PathLike, variant: str = "cutout") -> Path:
    """Copy the cleanest pairs (every reference of `variant`: `cutout` for cross-shot pairs, docs/contracts.md#2-training-samples;
    the naive ablation's pairs are all `naive`) to a folder for stage 2.

    Resumable and idempotent: the folder is rebuilt under a temporary name and renamed.
    """
    export, out = Path(export), Path(out)
    chosen = [
        sample
        for sample in iter_folder(export)
        if sample.subjects and all(s.get("variant") == variant for s in sample.subjects)
    ]
    if not chosen:
        raise RuntimeError(f"no pair in {export} has only {variant!r} references; stage 2 would have no data")
    with atomic_path(out, directory=True, replace_folder=True) as temporary:
        for sample in chosen:
            for part in ("videos", "labels", "meta"):
                suffix = {"videos": ".mp4", "labels": ".txt", "meta": ".json"}[part]
                (temporary / part).mkdir(parents=True, exist_ok=True)
                shutil.copy2(
                    export / part / f"{sample.id}{suffix}", temporary / part / f"{sample.id}{suffix}"
                )
            shutil.copytree(export / "references" / sample.id, temporary / "references" / sample.id)
    return out


def write_heldout_cases(export: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A case file (docs/contracts.md#1-case-files) over held-out pairs: prompt, references with labels, seed; one line each.

    One case per held-out scene (its first exported clip), so the chance control, which scores a
    case on another case's clip, never sees the same cast. Reference paths are relative to the case
    file; ground-truth clips stay in the export folder as `videos/<id>.mp4`.
    """
    out = Path(out)
    lines = []
    first_per_scene: dict[str, object] = {}
    for sample in sorted(iter_folder(export), key=lambda s: s.id):
        first_per_scene.setdefault(sample.meta["source"]["video"], sample)
    for index, sample in enumerate(first_per_scene.values()):
        references = [
            {"path": os.path.relpath(path, out.parent), "label": subject.get("label", "")}
            for path, subject in zip(sample.references, sample.subjects, strict=False)
        ]
        lines.append(
            json.dumps({"id": sample.id, "prompt": sample.caption, "references": references, "seed": index})
        )
    with atomic_path(out) as temporary:
        temporary.write_text("".join(line + "\n" for line in lines))
    return out


def write_background_cases(
    cases_file: str | os.PathLike,
    export: str | os.PathLike,
    scenes: str | os.PathLike,
    out: str | os.PathLike,
) -> Path:
    """The held-out cases again, each reference now a box crop *with its background* from another
    shot whose background differs from the target shot's (the leakage test set).

    Same ids, prompts and seeds as `cases_file`; crops use the references stage's padding, so a
    naive-pairs model sees references shaped like its training ones, only with a background the
    prompt does not ask for. A model that copies the reference's background scores low decoupling.
    Cases with a subject that never appears on another background are left out. The sibling
    `<out>.json` lists the left-out cases and, per case, each reference's source shot, frame and
    background. References go to `<out dir>/background_references/<case id>/refN.png`.
    """
    cases_file, export, scenes, out = Path(cases_file), Path(export), Path(scenes), Path(out)
    padding = ReferencesConfig().padding
    cases = [json.loads(line) for line in cases_file.read_text().splitlines() if line.strip()]
    references_dir = out.parent / "background_references"
    lines, left_out, sources = [], [], {}
    for case in cases:
        meta = json.loads((export / "meta" / f"{case['id']}.json").read_text())
        scene_name = meta["source"]["video"].rsplit("-", 1)[0]
        scene = json.loads((scenes / f"{scene_name}.json").read_text())
        target = scene["shots"][meta["source"]["shot"]]
        crops = []
        for reference in case["references"]:
            crop = _crop_on_other_background(scene, target, reference["label"])
            if crop is None:
                break
            crops.append(crop)
        if len(crops) != len(case["references"]):
            left_out.append(case["id"])
            continue
        frames, _ = read_video(scenes / f"{scene_name}.mp4")  # (F, H, W, 3)
        references, sources[case["id"]] = [], []
        for index, ((shot, frame, box), reference) in enumerate(
            zip(crops, case["references"], strict=True), 1
        ):
            x0, y0, x1, y1 = padded_box(box, padding, *frames.shape[1:3])
            path = references_dir / case["id"] / f"ref{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as temporary:
                Image.fromarray(np.ascontiguousarray(frames[frame, y0:y1, x0:x1])).save(
                    temporary, format="PNG"
                )
            references.append({"path": os.path.relpath(path, out.parent), "label": reference["label"]})
            sources[case["id"]].append(
                {"shot": shot["index"], "frame": frame, "background": shot["background"]}
            )
        lines.append(json.dumps({**case, "references": references}))
    if not lines:
        raise RuntimeError(f"no case of {cases_file} has every subject on another background in {scenes}")
    with atomic_path(out) as temporary:
        temporary.write_text("".join(line + "\n" for line in lines))
    write_json_atomic(
        out.with_suffix(".json"), {"cases": len(lines), "left_out": left_out, "sources": sources}
    )
    return out


def _crop_on_other_background(scene: dict, target: dict, label: str) -> tuple[dict, int, list[float]] | None:
    """(shot, absolute frame index, subject box) of `label` mid-shot in the first other shot of
    `scene` whose background differs from `target`'s; None when there is none."""
    for shot in scene["shots"]:
        if shot["index"] == target["index"] or shot["background"] == target["background"]:
            continue
        for subject in shot["subjects"]:
            if subject["label"] == label:
                middle = len(subject["boxes"]) // 2
                return shot, shot["start"] + middle, subject["boxes"][middle]
    return None


# ------------------------------------------------------------------------------------------------ examples


def example_reference(identity: Identity, size: int = 40, margin: int = 4) -> np.ndarray:
    """(size + 2 margin)^2 x 3 uint8: a reserved subject on white, as the README's examples show it."""
    pixels, mask = sprite(identity, size)
    image = np.full((size + 2 * margin, size + 2 * margin, 3), 255, np.uint8)
    region = image[margin : margin + size, margin : margin + size]
    region[mask] = pixels[mask]
    return image


def example_name(identity: Identity) -> str:
    return identity.label.replace(" ", "_") + ".png"


def image_digest(path: str | os.PathLike) -> str:
    """sha256 of an image's decoded RGB pixels and size (independent of PNG encoding)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"))
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()


def training_overlap(
    export: str | os.PathLike, images: list[Path], scene_folder: str | os.PathLike
) -> list[str]:
    """Reasons why `images` are not disjoint from the training data (empty when they are).

    Checks that no training reference has the same pixels as one of `images`, and that no training
    scene's cast contains a reserved identity.
    """
    digests = {image_digest(path): path for path in images}
    problems = []
    for sample in iter_folder(export):
        for ref in sample.references:
            if image_digest(ref) in digests:
                problems.append(f"{ref} has the same pixels as {digests[image_digest(ref)]}")
    reserved = _reserved_labels()
    for meta in sorted(Path(scene_folder).glob("*.json")):
        labels = {s["label"] for s in json.loads(meta.read_text())["subjects"]}
        if labels & reserved:
            problems.append(
                f"training scene {meta.stem} contains reserved subject(s) {sorted(labels & reserved)}"
            )
    return problems
