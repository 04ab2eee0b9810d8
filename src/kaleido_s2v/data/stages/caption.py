"""Stage `caption`: a caption and the subject words of a clip.

Backends: `labels_file` (the reference repo's `labels/<id>.txt` beside `videos/<id>.mp4`, or in
`labels_dir`; it captions a whole single-shot video), `ground_truth` (the procedural scene's JSON:
the caption of the shot holding the clip), `template` (a fixed caption, marked `[template]` so it
is never mistaken for a real one), `vlm` (the VLM wrapper on frames sampled from the clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kaleido_s2v.data.stages.base import (
    Context,
    Stage,
    StageResult,
    choose_backend,
    model_class,
    require_model_path,
)
from kaleido_s2v.data.stages.frames import read_clip
from kaleido_s2v.data.synthetic import GroundTruth

TEMPLATE_MARK = "[template]"


@dataclass(frozen=True)
class CaptionConfig:
    backend: str = "labels_file"
    labels_dir: str | None = None  # default: <video folder>/../labels
    template: str = "a video of moving subjects"
    model_path: str | None = None
    device: str = "cpu"
    num_frames: int = 8  # frames sampled for the VLM


class CaptionFromLabelsFile:
    """The first line of `labels/<video stem>.txt` (beside `videos/`, or in `labels_dir`)."""

    def __init__(self, config: CaptionConfig):
        self.labels_dir = config.labels_dir

    def __call__(self, item: dict, context: Context) -> StageResult:
        source = Path(item["source"])
        folder = Path(self.labels_dir) if self.labels_dir else source.parent.parent / "labels"
        path = folder / f"{source.stem}.txt"
        if not path.is_file():
            return StageResult.reject("no_caption", {"expected": str(path)})
        lines = path.read_text(encoding="utf-8").strip().splitlines()
        if not lines or not lines[0].strip():
            return StageResult.reject("empty_caption", {"file": str(path)})
        return StageResult.ok({"caption": lines[0].strip(), "subjects": [], "source": "labels_file"})


class CaptionFromTemplate:
    """The same caption for every clip, marked `[template]` so it is never taken for a real one."""

    def __init__(self, config: CaptionConfig):
        self.caption = f"{TEMPLATE_MARK} {config.template}"

    def __call__(self, item: dict, context: Context) -> StageResult:
        return StageResult.ok({"caption": self.caption, "subjects": [], "source": "template"})


class CaptionFromGroundTruth:
    """The procedural scene's caption and subject labels for the shot holding the clip's middle frame."""

    def __init__(self, config: CaptionConfig):
        """Nothing to set: the scene's JSON beside the video holds every caption."""

    def __call__(self, item: dict, context: Context) -> StageResult:
        source = Path(item["source"])
        truth = GroundTruth.for_video(source)
        if truth is None:
            return StageResult.reject("no_ground_truth", {"expected": str(source.with_suffix(".json"))})
        shot = truth.shot_of(item["source_frames"][len(item["source_frames"]) // 2])
        return StageResult.ok(
            {
                "caption": shot["caption"],
                "subjects": [s["label"] for s in shot["subjects"]],
                "source": "ground_truth",
            }
        )


class CaptionFromVlm:
    """The VLM wrapper's caption and subject words for `num_frames` frames spread over the clip;
    the model loads on the first clip."""

    def __init__(self, config: CaptionConfig):
        self.model_path = require_model_path(CaptionStage.name, config.backend, config.model_path)
        self.device, self.num_frames = config.device, config.num_frames
        self._model = None

    def __call__(self, item: dict, context: Context) -> StageResult:
        if self._model is None:
            wrapper = model_class(CaptionStage.name, "VlmCaptioner")
            self._model = wrapper.from_pretrained(self.model_path, device=self.device)
        frames = read_clip(context.run_dir, item)
        picks = sorted(
            {round(i * (len(frames) - 1) / max(1, self.num_frames - 1)) for i in range(self.num_frames)}
        )
        caption = self._model.caption([frames[i] for i in picks])
        if not caption.text.strip():
            return StageResult.reject("empty_caption")
        return StageResult.ok(
            {"caption": caption.text.strip(), "subjects": list(caption.subjects), "source": "vlm"}
        )


CAPTIONERS = {
    "labels_file": CaptionFromLabelsFile,
    "ground_truth": CaptionFromGroundTruth,
    "template": CaptionFromTemplate,
    "vlm": CaptionFromVlm,
}


class CaptionStage(Stage):
    name = "caption"

    def __init__(self, config: CaptionConfig):
        self._caption = choose_backend(self.name, config.backend, CAPTIONERS)(config)
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        return self._caption(item, context)
