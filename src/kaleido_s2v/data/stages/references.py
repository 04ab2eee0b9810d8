"""Stage `references`: pick each subject's reference image from another shot and build its variant.

Pairing modes (docs/contracts.md#3-cross-pairing-and-procedural-scenes):
- `cross_shot` (default): the reference comes from a clip of a different shot of the same source video.
- `same_shot`: from another clip of the same shot whose keyframe lies at least `min_gap_frames`
  source frames outside the target clip.
- `naive`: the ablation's leaky baseline. It promises exactly this: each reference is a box crop *with
  its background* from the target clip's own keyframe (`source.background` names the target clip).
In `cross_shot` and `same_shot` mode a reference never carries the target clip's background: a
`cutout` or `pose` is on white, and an `opencv` `inpainted` one sits on a clean plate from a shot
other than the target's (`ReferencesStage._plate`), never from the target's own shot, whose frames all
show its background; where the video has no such clip (`same_shot` on a single shot), `inpainted` is
not offered. Each reference's `source.background` names the clip frame its background comes from
(null: white or repainted).
Subjects are matched by label (`match: label`) or by colour-histogram similarity (`match: appearance`,
for offline detections that carry no class names).

Each subject gets one variant, drawn from `variants` with the item's seed:
- `cutout`: the subject cut out on white;
- `inpainted`: the subject kept pixel for pixel, everything else replaced: `opencv` composites it on a
  clean plate (another shot's keyframe with its subjects removed by `cv2.inpaint`, see above); `flux_fill`
  repaints the rest with the FluxFill wrapper;
- `pose`: `geometric` flips/rotates/scales the cut-out; `model` calls the pose wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.data.masks import mask_box, rle_decode
from kaleido_s2v.data.stages.base import (
    Context,
    Stage,
    StageResult,
    choose_backend,
    config_dict,
    model_class,
    model_files_fingerprint,
    require,
    require_model_path,
)
from kaleido_s2v.data.stages.frames import read_keyframe

MODES = ("cross_shot", "same_shot", "naive")
VARIANTS = ("cutout", "inpainted", "pose")


@dataclass(frozen=True)
class ReferencesConfig:
    mode: str = "cross_shot"  # "cross_shot" | "same_shot" | "naive" (the leaky baseline)
    match: str = "label"  # "label" | "appearance"
    min_similarity: float = 0.5  # histogram intersection, appearance matching
    min_gap_frames: int = 8  # same_shot mode
    max_references: int = 3
    variants: tuple[str, ...] = ("cutout", "inpainted", "pose")
    padding: float = 0.1  # crop margin around the box, fraction of the box size
    inpaint_backend: str = "opencv"  # "opencv" | "flux_fill"
    inpaint_model_path: str | None = None
    inpaint_prompt: str = "a plain, softly lit background"
    inpaint_steps: int = 50  # FluxFill denoising steps (flux_fill and model pose backends)
    pose_backend: str = "geometric"  # "geometric" | "model"
    pose_model_path: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"references.mode must be one of {MODES}, got {self.mode!r}")
        if self.match not in ("label", "appearance"):
            raise ValueError(f"references.match must be 'label' or 'appearance', got {self.match!r}")
        if not self.variants or set(self.variants) - set(VARIANTS):
            raise ValueError(
                f"references.variants must be a non-empty subset of {VARIANTS}, got {self.variants}"
            )


def histogram_similarity(a: list[float], b: list[float]) -> float:
    return float(np.minimum(np.asarray(a), np.asarray(b)).sum())


def padded_box(box: list[float], padding: float, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    px, py = (x1 - x0) * padding, (y1 - y0) * padding
    return (
        max(0, int(x0 - px)),
        max(0, int(y0 - py)),
        min(width, int(np.ceil(x1 + px))),
        min(height, int(np.ceil(y1 + py))),
    )


def cutout_on_white(image: np.ndarray, mask: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = crop
    return np.where(mask[y0:y1, x0:x1, None], image[y0:y1, x0:x1], 255).astype(np.uint8)


def geometric_pose(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Flip, rotate (±20°) and scale (0.8–1.0) a subject about its centre; the new background is white."""
    import cv2

    height, width = mask.shape
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    ys, xs = np.nonzero(mask)
    centre = (float(xs.mean()), float(ys.mean())) if len(xs) else (width / 2, height / 2)
    matrix = cv2.getRotationMatrix2D(centre, float(rng.uniform(-20, 20)), float(rng.uniform(0.8, 1.0)))
    warped = cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(255, 255, 255),
    )
    warped_mask = cv2.warpAffine(
        np.ascontiguousarray(mask).astype(np.uint8), matrix, (width, height), flags=cv2.INTER_NEAREST
    ).astype(bool)
    return warped, warped_mask


def clean_plate(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """The frame with its subjects removed: cv2.inpaint (Telea) over the dilated union of their masks."""
    import cv2

    if not masks:
        return image.copy()
    union = np.any(masks, axis=0).astype(np.uint8)
    union = cv2.dilate(union, np.ones((5, 5), np.uint8))
    return cv2.inpaint(np.ascontiguousarray(image), union, 5, cv2.INPAINT_TELEA)


PlateSource = tuple[dict, dict]  # (a clip item, its filter data): whose keyframe gives the clean plate
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends, pixels
Reference = tuple[np.ndarray, dict]  # (picture (h, w, 3) uint8, its entry in meta's `subjects`)


def frame_source(clip: dict, frame: int) -> dict:
    """Where pixels come from: {video, shot, frame (source frame index), clip (item id)}."""
    return {"video": clip["video_id"], "shot": clip["shot"], "frame": frame, "clip": clip["id"]}


class InpaintOnCleanPlate:
    """`opencv`: the subject pasted pixel for pixel on a clean plate (`clean_plate` of another shot's
    keyframe, see `ReferencesStage._plate`), resized to the subject's frame when the sizes differ."""

    uses_plate = True  # the picture's background is the plate clip's keyframe

    def __init__(self, config: ReferencesConfig):
        """Nothing to set."""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, plate_source: PlateSource, context: Context, seed: int
    ) -> np.ndarray:
        import cv2

        plate_item, plate_filter = plate_source
        plate_image = read_keyframe(context.run_dir, plate_item)
        plate = clean_plate(plate_image, [rle_decode(s["mask"]) for s in plate_filter["subjects"]])
        if plate.shape != image.shape:
            plate = cv2.resize(plate, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA)
        return np.where(mask[..., None], image, plate).astype(np.uint8)


class InpaintWithFluxFill:
    """`flux_fill`: the FluxFill wrapper repaints everything but the (slightly dilated) subject with
    `inpaint_prompt`; the model loads on the first subject."""

    uses_plate = False  # the background is repainted, not taken from any clip

    def __init__(self, config: ReferencesConfig):
        require_model_path(ReferencesStage.name, "flux_fill", config.inpaint_model_path)
        self.config = config
        self._model = None

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, plate_source: PlateSource, context: Context, seed: int
    ) -> np.ndarray:
        import cv2

        c = self.config
        if self._model is None:
            self._model = model_class(ReferencesStage.name, "FluxFillInpainter").from_pretrained(
                c.inpaint_model_path, device=c.device, num_inference_steps=c.inpaint_steps
            )
        keep = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        return np.asarray(self._model.inpaint(image, ~keep, c.inpaint_prompt, seed), dtype=np.uint8)


class GeometricPose:
    """`geometric`: `geometric_pose` with the subject's seed."""

    def __init__(self, config: ReferencesConfig):
        """Nothing to set."""

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, seed: int, label: str
    ) -> tuple[np.ndarray, np.ndarray]:
        return geometric_pose(image, mask, np.random.default_rng(seed))


class ModelPose:
    """`model`: the pose wrapper redraws the subject in another pose; the model loads on the first subject."""

    def __init__(self, config: ReferencesConfig):
        require_model_path(ReferencesStage.name, "model", config.pose_model_path)
        self.config = config
        self._model = None

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, seed: int, label: str
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        if self._model is None:
            self._model = model_class(ReferencesStage.name, "PoseVariator").from_pretrained(
                c.pose_model_path, device=c.device, num_inference_steps=c.inpaint_steps
            )
        new_image, new_mask = self._model.vary(image, mask, seed, label=label)
        return np.asarray(new_image, dtype=np.uint8), np.asarray(new_mask, dtype=bool)


INPAINTERS = {"opencv": InpaintOnCleanPlate, "flux_fill": InpaintWithFluxFill}
POSERS = {"geometric": GeometricPose, "model": ModelPose}


class ReferencesStage(Stage):
    name = "references"
    group = True  # reads the other clips of the same source video

    def __init__(self, config: ReferencesConfig):
        inpainter = choose_backend(self.name, config.inpaint_backend, INPAINTERS)
        require(self.name, "cv2")
        poser = choose_backend(self.name, config.pose_backend, POSERS)
        # a backend is built (and its model folder checked) only when its variant can be drawn
        self._inpaint = inpainter(config) if "inpainted" in config.variants else None
        self._pose = poser(config) if "pose" in config.variants else None
        self.config = config

    def fingerprint_parts(self) -> dict:
        return {
            "backend": f"{self.config.inpaint_backend}+{self.config.pose_backend}",
            "config": config_dict(self.config),
            "model": [
                model_files_fingerprint(self.config.inpaint_model_path),
                model_files_fingerprint(self.config.pose_model_path),
            ],
        }

    # ---------------------------------------------------------------------------------------- pairing

    @staticmethod
    def _siblings(item: dict, context: Context) -> list[tuple[dict, dict]]:
        """(sibling item, its upstream data) of every other clip of the video that kept subjects, by id."""
        return [
            context.siblings[sibling_id]
            for sibling_id in sorted(context.siblings)
            if sibling_id != item["id"] and "filter" in context.siblings[sibling_id][1]
        ]

    def _candidates(self, item: dict, context: Context) -> list[PlateSource]:
        """(sibling item, its filter data) that may provide references, in a fixed order."""
        out = []
        lo, hi = min(item["source_frames"]), max(item["source_frames"])
        for sibling, upstream in self._siblings(item, context):
            if self.config.mode == "cross_shot" and sibling["shot"] != item["shot"]:
                out.append((sibling, upstream["filter"]))
            elif self.config.mode == "same_shot" and sibling["shot"] == item["shot"]:
                frame = upstream["filter"]["source_frame"]
                if frame < lo - self.config.min_gap_frames or frame > hi + self.config.min_gap_frames:
                    out.append((sibling, upstream["filter"]))
        return out

    def _match(
        self, subject: dict, candidates: list[tuple[dict, dict]], used: set
    ) -> tuple[dict, dict, int] | None:
        best, best_score = None, -1.0
        for sibling, filtered in candidates:
            for index, other in enumerate(filtered["subjects"]):
                if (sibling["id"], index) in used:
                    continue
                similarity = histogram_similarity(subject["histogram"], other["histogram"])
                if self.config.match == "label":
                    if other["label"] != subject["label"]:
                        continue
                elif similarity < self.config.min_similarity:
                    continue
                if similarity > best_score:
                    best, best_score = (sibling, filtered, index), similarity
        return best

    def _plate(self, item: dict, partner: PlateSource, plates: list[PlateSource]) -> PlateSource | None:
        """The clip whose keyframe gives the clean plate of an `inpainted` reference taken from `partner`.

        The rule: never a clip of the target's shot, in either pairing mode. Every frame of a shot shows
        the target clip's background (pixel for pixel under a still camera), so a plate from another
        time window of that shot would hand the background back. A clip of a third shot is preferred,
        else the partner's own clip when its shot differs from the target's; None when the video has
        neither (`same_shot` mode on a video with one shot that reached this stage).
        `plates`: every sibling clip with subjects (any shot), in a fixed order.
        """
        shot = partner[0]["shot"]
        others = [p for p in plates if p[0]["shot"] not in (item["shot"], shot)]
        if others:
            return others[0]
        return partner if shot != item["shot"] else None

    def _offered(self, plate: PlateSource | None) -> tuple[str, ...]:
        """`variants`, less `inpainted` when its backend pastes on a clean plate and there is none (a
        subject offered nothing gets no reference)."""
        if plate is None and self._inpaint is not None and self._inpaint.uses_plate:
            return tuple(v for v in self.config.variants if v != "inpainted")
        return self.config.variants

    def _picture(
        self,
        variant: str,
        image: np.ndarray,
        subject: dict,
        crop: Box,
        plate: PlateSource | None,
        context: Context,
        seed: int,
    ) -> tuple[np.ndarray, str, dict | None]:
        """(reference picture, backend, source of its background or None) of one variant of `subject`
        (its filter entry) in `image` (H, W, 3).

        `crop` is the subject's padded box in `image`; a posed subject is cropped to its new mask
        instead. Backgrounds: white (`cutout`, `pose`), the plate clip's keyframe (`inpainted` with a
        backend that `uses_plate`) or repainted (None, `flux_fill`).
        """
        mask = rle_decode(subject["mask"])
        if variant == "cutout":
            return cutout_on_white(image, mask, crop), "cutout", None
        if variant == "pose":
            posed, posed_mask = self._pose(image, mask, seed, subject["label"])
            box = mask_box(posed_mask) or subject["box"]
            posed_crop = padded_box(list(box), self.config.padding, *image.shape[:2])
            return cutout_on_white(posed, posed_mask, posed_crop), self.config.pose_backend, None
        x0, y0, x1, y1 = crop
        picture = self._inpaint(image, mask, plate, context, seed)[y0:y1, x0:x1]
        background = frame_source(plate[0], plate[1]["source_frame"]) if self._inpaint.uses_plate else None
        return picture, self.config.inpaint_backend, background

    # ---------------------------------------------------------------------------------------- run

    def _naive_references(self, item: dict, context: Context, subjects: list[dict]) -> list[Reference]:
        """Box crops of the target clip's own keyframe, background included: the leak is the point."""
        image = read_keyframe(context.run_dir, item)
        here = frame_source(item, context.upstream["filter"]["source_frame"])
        out = []
        for s in subjects:
            x0, y0, x1, y1 = crop = padded_box(s["box"], self.config.padding, *image.shape[:2])
            entry = {"label": s["label"], "variant": "naive", "backend": "box_crop"}
            entry["source"] = {**here, "crop": list(crop), "background": here}
            out.append((image[y0:y1, x0:x1], entry))
        return out

    def _paired_references(self, item: dict, context: Context, subjects: list[dict]) -> list[Reference]:
        """Each subject's partner from another clip (`_candidates`, `_match`), as its drawn variant."""
        c = self.config
        candidates = self._candidates(item, context)
        plates = [(sibling, upstream["filter"]) for sibling, upstream in self._siblings(item, context)]
        used: set = set()
        decoded: dict[str, np.ndarray] = {}
        out = []
        for index, s in enumerate(subjects):
            found = self._match(s, candidates, used)
            if found is None:
                continue
            sibling, filtered, k = found
            plate = self._plate(item, (sibling, filtered), plates)
            offered = self._offered(plate)
            if not offered:
                continue
            used.add((sibling["id"], k))
            other = filtered["subjects"][k]
            if sibling["id"] not in decoded:
                decoded[sibling["id"]] = read_keyframe(context.run_dir, sibling)
            image = decoded[sibling["id"]]
            subject_seed = (int(item["seed"]) * 1000003 + index) % (2**32)
            variant = offered[int(np.random.default_rng(subject_seed).integers(len(offered)))]
            # meta records the subject's box in its source frame, whatever the variant makes of it
            crop = padded_box(other["box"], c.padding, *image.shape[:2])
            picture, backend, background = self._picture(
                variant, image, other, crop, plate, context, subject_seed
            )
            entry = {"label": s["label"], "variant": variant, "backend": backend}
            entry["source"] = {**frame_source(sibling, filtered["source_frame"]), "crop": list(crop)}
            entry["source"]["background"] = background
            out.append((picture, entry))
        return out

    def run(self, item: dict, context: Context) -> StageResult:
        c = self.config
        subjects = context.upstream["filter"]["subjects"][: c.max_references]
        if c.mode == "naive":
            pairs = self._naive_references(item, context, subjects)
        else:
            pairs = self._paired_references(item, context, subjects)
        if not pairs:
            return StageResult.reject(
                "no_cross_pair" if c.mode != "naive" else "no_subject", {"mode": c.mode}
            )
        images, references = [p[0] for p in pairs], [p[1] for p in pairs]
        artifacts = {}
        for index, (picture, ref) in enumerate(zip(images, references, strict=True), start=1):
            path, relative = context.new_artifact(f"ref{index}.png")
            with atomic_path(path) as temporary:
                Image.fromarray(np.ascontiguousarray(picture)).save(temporary)
            ref["reference"] = f"ref{index}.png"
            artifacts[f"ref{index}"] = relative
        return StageResult.ok(
            {"mode": c.mode, "references": references, "source": Path(item["source"]).name}, artifacts
        )
