"""Procedural scenes with exact ground truth (docs/contracts.md#3-cross-pairing-and-procedural-scenes): test data and the demo model's data.

A scene is a multi-shot video with hard cuts. Its cast of 1–3 subjects, each a distinct identity
(shape x colour x texture, e.g. "striped red star"), appears in every shot over a different
background and moves as the shot's caption says ("moves left/right/up/down", "stays").
`write_scene` writes `<name>.mp4` and `<name>.json`; the JSON lists each shot's frame range
(end exclusive, in source frames), caption and per subject the label, motion and per-frame
boxes (x0, y0, x1, y1; x1/y1 exclusive) and visible masks (RLE, see `masks.py`).
Everything is deterministic from the seed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.common.video_io import write_video
from kaleido_s2v.data.masks import mask_box, rle_decode, rle_encode

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
}
TEXTURES = ("plain", "striped", "dotted", "checked")
BACKGROUNDS = ("grey grid", "sand gradient", "green noise", "blue stripes", "brick wall", "dark tiles")
MOTIONS = ("left", "right", "up", "down", "stays")


@dataclass(frozen=True)
class SceneConfig:
    """How to draw one scene. Sizes must be even (H.264)."""

    width: int = 64
    height: int = 64
    fps: float = 8.0
    num_shots: int = 3
    frames_per_shot: int = 24
    min_subjects: int = 1
    max_subjects: int = 3
    subject_scale: float = 0.25  # sprite side as a fraction of min(width, height)
    travel: float = 0.6  # distance a moving subject covers in a shot, as a fraction of the frame
    motions: tuple[str, ...] = MOTIONS
    camera_pan: float = 0.0  # background scroll in pixels per frame (a panning camera); 0 = static camera
    backgrounds: tuple[str, ...] = BACKGROUNDS  # consecutive shots never share one
    seed: int = 0

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"scene size {self.width}x{self.height} must be even (H.264)")
        if not 1 <= self.min_subjects <= self.max_subjects <= 3:
            raise ValueError(
                f"need 1 <= min_subjects <= max_subjects <= 3, got {self.min_subjects}, {self.max_subjects}"
            )
        unknown = set(self.motions) - set(MOTIONS)
        if unknown or not self.motions:
            raise ValueError(f"motions must be a non-empty subset of {MOTIONS}, got {self.motions}")
        unknown = set(self.backgrounds) - set(BACKGROUNDS)
        if unknown or len(set(self.backgrounds)) < 2:
            raise ValueError(f"backgrounds must be at least two of {BACKGROUNDS}, got {self.backgrounds}")
        if self.num_shots < 1 or self.frames_per_shot < 2:
            raise ValueError("need num_shots >= 1 and frames_per_shot >= 2")


@dataclass(frozen=True)
class Identity:
    shape: str
    colour: str
    texture: str

    @property
    def label(self) -> str:
        return f"{self.texture} {self.colour} {self.shape}"


def shape_mask(shape: str, size: int) -> np.ndarray:
    """(size, size) bool silhouette of a named shape."""
    coords = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    if shape == "circle":
        return x**2 + y**2 <= 0.92
    if shape == "square":
        return np.maximum(abs(x), abs(y)) <= 0.8
    if shape == "diamond":
        return abs(x) + abs(y) <= 0.95
    if shape == "triangle":
        return (y <= 0.85) & (abs(x) <= (y + 0.95) / 1.8 * 0.95)
    if shape == "cross":
        return ((abs(x) <= 0.32) & (abs(y) <= 0.95)) | ((abs(y) <= 0.32) & (abs(x) <= 0.95))
    if shape == "star":
        r, theta = np.hypot(x, y), np.arctan2(y, x) + np.pi / 2
        return r <= 0.45 + 0.5 * np.abs(np.cos(2.5 * theta)) ** 3
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def sprite(identity: Identity, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (pixels (size, size, 3) uint8, mask (size, size) bool) of a textured subject."""
    mask = shape_mask(identity.shape, size)
    base = np.array(COLOURS[identity.colour], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 5)
    if identity.texture == "plain":
        pattern = np.zeros((size, size), bool)
    elif identity.texture == "striped":
        pattern = ((xx + yy) // (period // 2)) % 2 == 1
    elif identity.texture == "dotted":
        pattern = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) <= (period / 3.5) ** 2
    elif identity.texture == "checked":
        pattern = ((xx // (period // 2)) + (yy // (period // 2))) % 2 == 1
    else:
        raise ValueError(f"unknown texture {identity.texture!r}; choose one of {TEXTURES}")
    pixels = np.broadcast_to(base, (size, size, 3)).copy()
    pixels[pattern] = base * 0.35 + 255 * 0.1  # a dark pattern keeps the hue and stays distinct
    return pixels.clip(0, 255).astype(np.uint8), mask


def background(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 low-contrast textured background."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if name == "grey grid":
        image = np.full((height, width, 3), 150.0)
        image[(yy % 8 == 0) | (xx % 8 == 0)] = 120
    elif name == "sand gradient":
        t = (yy / height)[..., None]
        image = (1 - t) * np.array([230, 210, 160]) + t * np.array([190, 160, 110])
    elif name == "green noise":
        image = np.array([90, 140, 80]) + rng.normal(0, 10, (height, width, 1))
    elif name == "blue stripes":
        image = np.where(((yy // 6) % 2 == 0)[..., None], [140, 170, 210], [120, 150, 190])
    elif name == "brick wall":
        row = yy // 6
        offset = (row % 2) * 6
        mortar = (yy % 6 == 0) | ((xx + offset) % 12 == 0)
        image = np.where(mortar[..., None], [200, 190, 180], [150, 80, 60])
    elif name == "dark tiles":
        image = np.where((((yy // 10) + (xx // 10)) % 2 == 0)[..., None], [60, 60, 70], [80, 80, 90])
    else:
        raise ValueError(f"unknown background {name!r}; choose one of {BACKGROUNDS}")
    return np.broadcast_to(image, (height, width, 3)).clip(0, 255).astype(np.uint8)


def _caption(parts: list[tuple[str, str]], background_name: str) -> str:
    phrases = [
        f"a {label} " + ("stays" if motion == "stays" else f"moves {motion}") for label, motion in parts
    ]
    return " and ".join(phrases) + f", on a {background_name} background"


def _path(start: tuple[float, float], motion: str, distance: float, n: int) -> np.ndarray:
    """(n, 2) top-left corners (x, y) along a straight motion."""
    dx, dy = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "stays": (0, 0)}[motion]
    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.asarray(start)[None] + t * np.array([dx, dy]) * distance


def render_scene(config: SceneConfig) -> tuple[np.ndarray, dict]:
    """Draw a scene. Returns (frames (F, H, W, 3) uint8, ground truth dict as written to JSON)."""
    rng = np.random.default_rng(config.seed)
    height, width = config.height, config.width
    size = max(6, int(round(config.subject_scale * min(height, width))))
    count = int(rng.integers(config.min_subjects, config.max_subjects + 1))
    # distinct shapes and colours, so every label names one subject
    shapes = rng.choice(SHAPES, size=count, replace=False)
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    textures = rng.choice(TEXTURES, size=count, replace=True)
    cast = [Identity(str(s), str(c), str(t)) for s, c, t in zip(shapes, colours, textures, strict=True)]
    sprites = [sprite(identity, size) for identity in cast]

    frames: list[np.ndarray] = []
    shots = []
    previous_bg = None
    for shot_index in range(config.num_shots):
        bg_name = str(rng.choice([b for b in config.backgrounds if b != previous_bg]))
        previous_bg = bg_name
        scroll = int(np.ceil(abs(config.camera_pan) * config.frames_per_shot))
        plate = background(bg_name, height, width + scroll, rng)
        n = config.frames_per_shot
        start_frame = shot_index * n
        # lanes keep subjects apart: subject k starts in its own horizontal band
        order = rng.permutation(count)
        paths, motions = [], []
        for k in range(count):
            motion = str(rng.choice(config.motions))
            lane = (order[k] + 0.5) / count
            distance = config.travel * (width if motion in ("left", "right") else height)
            span_x, span_y = width - size, height - size
            if motion in ("left", "right"):
                x0 = span_x * (0.75 if motion == "left" else 0.25) + (
                    distance / 2 if motion == "left" else -distance / 2
                )
                x0 = np.clip(x0, 0, span_x - (0 if motion == "left" else distance))
                y0 = np.clip(lane * height - size / 2, 0, span_y)
            elif motion in ("up", "down"):
                x0 = np.clip(lane * width - size / 2, 0, span_x)
                y0 = span_y * (0.75 if motion == "up" else 0.25) + (
                    distance / 2 if motion == "up" else -distance / 2
                )
                y0 = np.clip(y0, 0, span_y - (0 if motion == "up" else distance))
            else:
                x0 = np.clip(lane * width - size / 2 + rng.uniform(-2, 2), 0, span_x)
                y0 = np.clip(rng.uniform(0.2, 0.8) * span_y, 0, span_y)
            path = _path((float(x0), float(y0)), motion, distance, n)
            path[:, 0] = path[:, 0].clip(0, span_x)
            path[:, 1] = path[:, 1].clip(0, span_y)
            paths.append(np.round(path).astype(int))
            motions.append(motion)
        subject_gt = [
            {"id": k, "label": cast[k].label, "motion": motions[k], "boxes": [], "masks": []}
            for k in range(count)
        ]
        for f in range(n):
            offset = (
                int(round(config.camera_pan * f))
                if config.camera_pan >= 0
                else scroll + int(round(config.camera_pan * f))
            )
            frame = plate[:, offset : offset + width].copy()
            visible = np.zeros((count, height, width), bool)
            for k in range(count):  # later subjects are drawn on top
                pixels, mask = sprites[k]
                x, y = paths[k][f]
                region = frame[y : y + size, x : x + size]
                region[mask] = pixels[mask]
                full = np.zeros((height, width), bool)
                full[y : y + size, x : x + size] = mask
                visible[:k] &= ~full
                visible[k] = full
            for k in range(count):
                box = mask_box(visible[k])
                subject_gt[k]["boxes"].append(list(box) if box is not None else None)
                subject_gt[k]["masks"].append(rle_encode(visible[k]))
            frames.append(frame)
        shots.append(
            {
                "index": shot_index,
                "start": start_frame,
                "end": start_frame + n,
                "background": bg_name,
                "caption": _caption([(cast[k].label, motions[k]) for k in range(count)], bg_name),
                "subjects": subject_gt,
            }
        )
    truth = {
        "config": {**asdict(config), "motions": list(config.motions)},
        "fps": config.fps,
        "width": width,
        "height": height,
        "num_frames": len(frames),
        "subjects": [{"id": k, "label": cast[k].label, **asdict(cast[k])} for k in range(count)],
        "shots": shots,
    }
    return np.stack(frames), truth


def write_scene(path: str | os.PathLike, config: SceneConfig) -> tuple[Path, Path]:
    """Write `<path>.mp4` and `<path>.json` (atomically). Returns both paths."""
    base = Path(path)
    base = base.with_suffix("") if base.suffix == ".mp4" else base
    frames, truth = render_scene(config)
    truth["name"] = base.name
    video = write_video(base.with_name(base.name + ".mp4"), frames, fps=config.fps)
    meta = base.with_name(base.name + ".json")
    write_json_atomic(meta, truth)
    return video, meta


def write_scenes(
    directory: str | os.PathLike, count: int, config: SceneConfig, prefix: str = "scene"
) -> list[Path]:
    """Write `count` scenes with seeds config.seed, config.seed+1, …; returns the video paths."""
    from dataclasses import replace

    directory = Path(directory)
    return [
        write_scene(directory / f"{prefix}{i:03d}", replace(config, seed=config.seed + i))[0]
        for i in range(count)
    ]


class GroundTruth:
    """Ground truth of one procedural scene, looked up by source frame index."""

    def __init__(self, truth: dict):
        self.truth = truth

    @classmethod
    def for_video(cls, video: str | os.PathLike) -> GroundTruth | None:
        """The scene's ground truth from the `<name>.json` beside `<name>.mp4`, or None when absent."""
        meta = Path(video).with_suffix(".json")
        if not meta.is_file():
            return None
        truth = json.loads(meta.read_text(encoding="utf-8"))
        return cls(truth) if "shots" in truth else None

    def shot_of(self, frame: int) -> dict:
        for shot in self.truth["shots"]:
            if shot["start"] <= frame < shot["end"]:
                return shot
        raise IndexError(f"frame {frame} is outside the scene's {self.truth['num_frames']} frames")

    def subjects_at(self, frame: int) -> list[dict]:
        """[{label, motion, box, mask (H, W) bool}] of the subjects visible in a source frame."""
        shot = self.shot_of(frame)
        out = []
        for subject in shot["subjects"]:
            box = subject["boxes"][frame - shot["start"]]
            if box is None:
                continue
            mask = rle_decode(subject["masks"][frame - shot["start"]])
            out.append(
                {
                    "id": subject["id"],
                    "label": subject["label"],
                    "motion": subject["motion"],
                    "box": box,
                    "mask": mask,
                }
            )
        return out
