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
    StageResult,
    check_backend,
    config_dict,
    import_backends,
    model_files_fingerprint,
    require_model_path,
)

BACKENDS = ("labels_file", "ground_truth", "template", "vlm")
TEMPLATE_MARK = "[template]"


@dataclass(frozen=True)
class CaptionConfig:
    backend: str = "labels_file"
    labels_dir: str | None = None  # default: <video folder>/../labels
    template: str = "a video of moving subjects"
    model_path: str | None = None
    device: str = "cpu"
    num_frames: int = 8  # frames sampled for the VLM


class CaptionStage:
    name = "caption"
    group = False

    def __init__(self, config: CaptionConfig):
        check_backend(self.name, config.backend, BACKENDS)
        if config.backend == "vlm":
            require_model_path(self.name, config.backend, config.model_path)
        self.config = config
        self._model = None

    def fingerprint_parts(self) -> dict:
        return {
            "backend": self.config.backend,
            "config": config_dict(self.config),
            "model": model_files_fingerprint(self.config.model_path),
        }

    def _labels_path(self, source: Path) -> Path:
        folder = Path(self.config.labels_dir) if self.config.labels_dir else source.parent.parent / "labels"
        return folder / f"{source.stem}.txt"

    def run(self, item: dict, context: Context) -> StageResult:
        backend = self.config.backend
        source = Path(item["source"])
        if backend == "labels_file":
            path = self._labels_path(source)
            if not path.is_file():
                return StageResult.reject("no_caption", {"expected": str(path)})
            lines = path.read_text(encoding="utf-8").strip().splitlines()
            if not lines or not lines[0].strip():
                return StageResult.reject("empty_caption", {"file": str(path)})
            return StageResult.ok({"caption": lines[0].strip(), "subjects": [], "source": "labels_file"})
        if backend == "template":
            return StageResult.ok(
                {"caption": f"{TEMPLATE_MARK} {self.config.template}", "subjects": [], "source": "template"}
            )
        if backend == "ground_truth":
            from kaleido_s2v.data.synthetic import GroundTruth

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
        # vlm
        from kaleido_s2v.data.stages.frames import read_clip

        if self._model is None:
            backends = import_backends()
            self._model = backends.VlmCaptioner.from_pretrained(
                self.config.model_path, device=self.config.device
            )
        frames = read_clip(context.run_dir, item)
        picks = sorted(
            {
                round(i * (len(frames) - 1) / max(1, self.config.num_frames - 1))
                for i in range(self.config.num_frames)
            }
        )
        caption = self._model.caption([frames[i] for i in picks])
        if not caption.text.strip():
            return StageResult.reject("empty_caption")
        return StageResult.ok(
            {"caption": caption.text.strip(), "subjects": list(caption.subjects), "source": "vlm"}
        )
