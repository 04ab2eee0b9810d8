"""Stage `export`: write each cross-paired clip as an S2V sample (docs/contracts.md#2-training-samples) through `samples.py`.

Per item it writes the folder form under `<run>/export/` and records every file it wrote as an
artifact (so the manifest holds each one's sha256); `finalize` then writes the WebDataset shards
under `<run>/shards/` from exactly the samples of the current run (in id order) whose files still
hold the recorded bytes, and removes the exported samples and shards of earlier runs in the folder
that the current run no longer keeps (only files the pipeline wrote: see `finalize`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from kaleido_s2v.common.atomic import is_temporary
from kaleido_s2v.data.manifest import changed_artifacts
from kaleido_s2v.data.samples import (
    ShardWriter,
    read_folder_sample,
    remove_folder_sample,
    write_folder_sample,
)
from kaleido_s2v.data.stages.base import Context, Stage, StageResult, choose_backend


@dataclass(frozen=True)
class ExportConfig:
    backend: str = "samples"
    folder: str = "export"  # relative to the run folder
    shards: str | None = "shards"  # relative to the run folder; None writes no shards
    shard_size: int = 1000


SAMPLE_WRITERS = {"samples": write_folder_sample}


class ExportStage(Stage):
    name = "export"

    def __init__(self, config: ExportConfig):
        self._write_sample = choose_backend(self.name, config.backend, SAMPLE_WRITERS)
        self.config = config

    def run(self, item: dict, context: Context) -> StageResult:
        caption = context.upstream["caption"]["caption"]
        refs = context.upstream["references"]
        ref_paths = [
            context.path(refs["artifacts"][f"ref{i}"]) for i in range(1, len(refs["references"]) + 1)
        ]
        meta = {
            "caption": caption,
            "fps": item["fps"],
            "num_frames": len(item["source_frames"]),
            "width": item["width"],
            "height": item["height"],
            "subjects": refs["references"],
            "mode": refs["mode"],
            "seed": item["seed"],
            "fingerprint": context.fingerprint,
            "source": {"video": item["video_id"], "shot": item["shot"], "frames": item["source_frames"]},
        }
        root = context.path(self.config.folder)
        self._write_sample(root, item["id"], context.path(item["clip"]), caption, ref_paths, meta)
        folder = Path(self.config.folder)
        artifacts = {
            "video": (folder / "videos" / f"{item['id']}.mp4").as_posix(),
            "label": (folder / "labels" / f"{item['id']}.txt").as_posix(),
            "meta": (folder / "meta" / f"{item['id']}.json").as_posix(),
        }
        for index in range(1, len(ref_paths) + 1):
            artifacts[f"ref{index}"] = (folder / "references" / item["id"] / f"ref{index}.png").as_posix()
        return StageResult.ok({"id": item["id"], "references": len(ref_paths)}, artifacts)

    def finalize(self, run_dir: Path, kept: dict[str, dict], produced_ids: set[str]) -> Finalized:
        """Drop the kept samples whose files changed, remove those no longer kept, rewrite the shards.

        `kept` maps each sample id this run keeps to its export row in the manifest. A kept sample
        whose exported files no longer hold the bytes that row records (`changed_artifacts`) is
        refused: a warning names its changed files, its files are removed like a stale sample's, and
        it is neither packed nor listed as exported (the next run exports it again).

        Only files the pipeline wrote itself are removed. An exported sample (`videos/<id>.mp4`) goes
        when its id is in `produced_ids` (the items the run folder's manifest records) and not among
        the kept samples left; `remove_folder_sample` then deletes exactly the files the export wrote
        for it. In the shard folder only the shard writer's own names (`shard-000000.tar`, ...) are
        removed before the shards are written again. Anything else there, such as a `videos/x.mp4`
        or `x.tar` someone put in, is left alone.
        """
        refused = _refused_samples(run_dir, kept)
        packed = [sample_id for sample_id in kept if sample_id not in refused]
        root = run_dir / self.config.folder
        exported = {video.stem for video in (root / "videos").glob("*.mp4") if not is_temporary(video)}
        for sample_id in sorted(exported & (set(produced_ids) - set(packed))):
            remove_folder_sample(root, sample_id)
        if self.config.shards is None:
            return Finalized(packed, [], refused)
        writer = ShardWriter(run_dir / self.config.shards, max_samples=self.config.shard_size)
        for old in writer.existing_shards():
            old.unlink()
        with writer:
            for sample_id in sorted(packed):
                writer.write_sample(read_folder_sample(root, sample_id))
        return Finalized(packed, writer.shards, refused)


@dataclass(frozen=True)
class Finalized:
    """What `ExportStage.finalize` left: the exported ids, the shards, and the refused samples."""

    exported: list[str]
    shards: list[Path]
    refused: list[str]  # ids of kept samples whose exported files changed after the export


def _refused_samples(run_dir: Path, kept: dict[str, dict]) -> list[str]:
    """The kept samples whose exported files changed since the manifest recorded them, each with a warning."""
    refused = []
    for sample_id, row in sorted(kept.items()):
        changed = changed_artifacts(row, run_dir)
        if changed:
            warnings.warn(
                f"{', '.join(map(str, changed))}: changed after stage export wrote them (sha256 differs "
                f"from the manifest); sample {sample_id} is not packed this run",
                stacklevel=3,
            )
            refused.append(sample_id)
    return refused
