"""Stage `export`: write each cross-paired clip as an S2V sample (SPEC §9.2) through `samples.py`.

Per item it writes the folder form under `<run>/export/`; `finalize` then writes the WebDataset
shards under `<run>/shards/` from exactly the samples of the current run (in id order) and removes
the exported samples and shards of earlier runs in the folder that the current run no longer keeps
(only files the pipeline wrote: see `finalize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kaleido_s2v.atomic import is_temporary
from kaleido_s2v.data.stages.base import Context, StageResult, check_backend, config_dict


@dataclass(frozen=True)
class ExportConfig:
    backend: str = "samples"
    folder: str = "export"  # relative to the run folder
    shards: str | None = "shards"  # relative to the run folder; None writes no shards
    shard_size: int = 1000


class ExportStage:
    name = "export"
    group = False

    def __init__(self, config: ExportConfig):
        check_backend(self.name, config.backend, ("samples",))
        self.config = config

    def fingerprint_parts(self) -> dict:
        return {"backend": self.config.backend, "config": config_dict(self.config)}

    def run(self, item: dict, context: Context) -> StageResult:
        from kaleido_s2v.data.samples import write_folder_sample

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
        write_folder_sample(root, item["id"], context.path(item["clip"]), caption, ref_paths, meta)
        folder = Path(self.config.folder)
        artifacts = {
            "video": (folder / "videos" / f"{item['id']}.mp4").as_posix(),
            "meta": (folder / "meta" / f"{item['id']}.json").as_posix(),
        }
        for index in range(1, len(ref_paths) + 1):
            artifacts[f"ref{index}"] = (folder / "references" / item["id"] / f"ref{index}.png").as_posix()
        return StageResult.ok({"id": item["id"], "references": len(ref_paths)}, artifacts)

    def finalize(self, run_dir: Path, kept_ids: list[str], produced_ids: set[str]) -> list[Path]:
        """Remove the exported samples this run no longer keeps; rewrite the shards. Returns the shard paths.

        Only files the pipeline wrote itself are removed. An exported sample (`videos/<id>.mp4`) goes
        when its id is in `produced_ids` (the items the run folder's manifest records) and not in
        `kept_ids`; `remove_folder_sample` then deletes exactly the files the export wrote for it. In
        the shard folder only the shard writer's own names (`shard-000000.tar`, ...) are removed
        before the shards are written again. Anything else there, such as a `videos/x.mp4` or
        `x.tar` someone put in, is left alone.
        """
        from kaleido_s2v.data.samples import ShardWriter, read_folder_sample, remove_folder_sample

        root = run_dir / self.config.folder
        exported = {video.stem for video in (root / "videos").glob("*.mp4") if not is_temporary(video)}
        for sample_id in sorted(exported & (set(produced_ids) - set(kept_ids))):
            remove_folder_sample(root, sample_id)
        if self.config.shards is None:
            return []
        writer = ShardWriter(run_dir / self.config.shards, max_samples=self.config.shard_size)
        for old in writer.existing_shards():
            old.unlink()
        with writer:
            for sample_id in sorted(kept_ids):
                writer.write_sample(read_folder_sample(root, sample_id))
        return writer.shards
