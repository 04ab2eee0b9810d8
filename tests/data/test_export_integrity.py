"""`data run` checks exported files against the sha256 the manifest recorded, on resume and before packing."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.runner import run_pipeline
from kaleido_s2v.data.stages.export import ExportStage


def _shards(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((run_dir / "shards").glob("*.tar"))}


def _packed_videos(run_dir: Path) -> dict[str, bytes]:
    """Sample id -> the clip bytes packed in the shards."""
    videos = {}
    for shard in sorted((run_dir / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".mp4"):
                    videos[member.name[: -len(".mp4")]] = tar.extractfile(member).read()
    return videos


def _truncate(path: Path) -> bytes:
    """Cut `path` to half its size; returns the bytes left."""
    kept = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(kept)
    return kept


@pytest.fixture
def first_run(easy_scenes, tmp_path, clip_config):
    """(config values, run summary, the shards' bytes, one exported clip) of a finished run."""
    values = clip_config([easy_scenes], tmp_path / "run")
    summary = run_pipeline(config_from_dict(values), progress=False)
    clip = tmp_path / "run" / "export" / "videos" / f"{summary.exported[0]}.mp4"
    return values, summary, _shards(tmp_path / "run"), clip


def test_a_truncated_export_is_exported_again_and_packed_intact(first_run):
    values, first, shards, clip = first_run
    intact = clip.read_bytes()
    _truncate(clip)
    with pytest.warns(UserWarning, match=re.escape(str(clip))):
        again = run_pipeline(config_from_dict(values), progress=False)
    assert {stage: n for stage, n in again.executed_by_stage.items() if n} == {"export": 1}
    assert clip.read_bytes() == intact
    assert _packed_videos(first.run_dir)[clip.stem] == intact
    assert _shards(first.run_dir) == shards
    assert again.exported == first.exported and again.funnel == first.funnel


def test_a_clip_that_cannot_be_exported_again_is_never_packed(first_run, monkeypatch):
    values, first, shards, clip = first_run
    truncated = _truncate(clip)

    def failing(self, item, context):
        raise OSError("disk full")

    monkeypatch.setattr(ExportStage, "run", failing)
    with pytest.warns(UserWarning, match=re.escape(str(clip))):
        broken = run_pipeline(config_from_dict(values), progress=False)
    assert clip.stem not in broken.exported and not clip.exists()
    assert broken.funnel["export"]["dropped"] == {"failed:OSError: disk full": 1}
    packed = _packed_videos(first.run_dir)
    assert clip.stem not in packed and truncated not in packed.values()
    monkeypatch.undo()
    repaired = run_pipeline(config_from_dict({**values, "retry_failed": True}), progress=False)
    assert repaired.exported == first.exported and _shards(first.run_dir) == shards


def test_an_export_changed_after_the_stage_wrote_it_is_not_packed(first_run, monkeypatch):
    values, first, shards, clip = first_run
    finalize = ExportStage.finalize  # the run finds every export intact; then the clip is cut short

    def truncating(self, *args):
        _truncate(clip)
        return finalize(self, *args)

    monkeypatch.setattr(ExportStage, "finalize", truncating)
    with pytest.warns(UserWarning, match=re.escape(str(clip)) + r".*is not packed this run"):
        refused = run_pipeline(config_from_dict(values), progress=False)
    assert refused.exported == [i for i in first.exported if i != clip.stem] and not clip.exists()
    assert clip.stem not in _packed_videos(first.run_dir)
    assert refused.funnel["export"]["dropped"] == {"refused:changed_after_export": 1}
    assert refused.funnel["export"]["kept"] == first.funnel["export"]["kept"] - 1
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=re.escape(str(clip))):
        repaired = run_pipeline(config_from_dict(values), progress=False)
    assert repaired.executed_by_stage["export"] == 1
    assert repaired.exported == first.exported and _shards(first.run_dir) == shards


def test_returning_to_an_earlier_config_exports_again_what_a_later_run_removed_or_rewrote(first_run):
    values, first, shards, _ = first_run
    stricter = run_pipeline(config_from_dict({**values, "filter": {"min_area": 0.05}}), progress=False)
    assert set(stricter.exported) < set(first.exported)  # the others were removed, these rewritten
    with pytest.warns(UserWarning, match="changed since stage export wrote them"):
        back = run_pipeline(config_from_dict(values), progress=False)
    assert back.executed_by_stage["export"] == len(first.exported)
    assert back.exported == first.exported and _shards(first.run_dir) == shards
