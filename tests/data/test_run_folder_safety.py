"""A run removes stale outputs only in a run folder of its own, and only files it wrote itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaleido_s2v.data.config import config_from_dict
from kaleido_s2v.data.runner import RUN_MARKER, claim_run_folder, run_pipeline, video_item


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its content."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _user_files(folder: Path) -> dict[str, bytes]:
    """Files someone keeps in `folder`, named as a run names its exports and shards."""
    files = {
        "export/videos/mine.mp4": b"a video of mine",
        "export/labels/mine.txt": b"my caption\n",
        "shards/mine.tar": b"a tar of mine",
        "shards/shard-000000.tar": b"a tar of mine named like a shard",
        "notes.txt": b"my notes",
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def test_a_folder_that_is_not_a_run_folder_is_refused_untouched(easy_scenes, tmp_path, clip_config):
    run_dir = tmp_path / "mine"
    files = _user_files(run_dir)
    with pytest.raises(FileExistsError, match=r"mine is not empty .* new or empty folder"):
        run_pipeline(config_from_dict(clip_config([easy_scenes], run_dir)), progress=False)
    assert _snapshot(run_dir) == files  # nothing removed, nothing written


def test_the_cli_refuses_a_folder_that_is_not_a_run_folder(easy_scenes, tmp_path, clip_config, capsys):
    from kaleido_s2v.cli import main

    run_dir = tmp_path / "mine"
    files = _user_files(run_dir)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(clip_config([easy_scenes], run_dir)))
    assert main(["data", "run", str(config), "--no-progress"]) == 2
    assert f"run_dir {run_dir} is not empty" in capsys.readouterr().err
    assert _snapshot(run_dir) == files


@pytest.mark.parametrize(
    ("contents", "ours"),
    [
        (None, True),  # a new folder
        ({}, True),  # an empty one
        ({RUN_MARKER: "{}", "export/videos/a.mp4": ""}, True),  # claimed by an earlier run
        ({"run.json": '{"current": [], "exported": [], "shards": []}', "funnel.json": "{}"}, True),
        ({"run.json": '{"name": "something else"}'}, False),  # a run.json, but not a run's record
        ({"export/videos/a.mp4": ""}, False),
    ],
    ids=["new", "empty", "marked", "old-run-record", "foreign-run-json", "foreign-files"],
)
def test_a_run_folder_is_new_empty_or_marked_by_a_run(tmp_path, contents, ours):
    run_dir = tmp_path / "run"
    for name, text in (contents or {}).items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text(text)
    if contents is not None:
        run_dir.mkdir(exist_ok=True)
    if ours:
        claim_run_folder(run_dir)
        assert (run_dir / RUN_MARKER).is_file()
    else:
        before = _snapshot(run_dir)
        with pytest.raises(FileExistsError, match="Set run_dir to a new or empty folder"):
            claim_run_folder(run_dir)
        assert _snapshot(run_dir) == before


def _first_of_two_runs(easy_scenes: Path, run_dir: Path, clip_config) -> tuple[list[str], dict]:
    """Run over every scene in `run_dir` (shards of 2 samples); returns the ids of the samples the
    second run, over the first scene only, no longer keeps, and that run's config values."""
    values = clip_config([easy_scenes], run_dir, export={"shard_size": 2})
    first = run_pipeline(config_from_dict(values), progress=False)
    kept_scene = sorted(easy_scenes.glob("*.mp4"))[0]
    values["inputs"] = [str(kept_scene)]
    kept_video = video_item(kept_scene, 0)[0]["id"]
    return sorted(i for i in first.exported if not i.startswith(f"{kept_video}_")), values


def test_a_rerun_removes_the_stale_exports_and_shards_it_wrote(easy_scenes, tmp_path, clip_config):
    stale, values = _first_of_two_runs(easy_scenes, tmp_path, clip_config)
    shards_before = sorted((tmp_path / "shards").iterdir())
    second = run_pipeline(config_from_dict(values), progress=False)
    assert stale and second.exported and not set(stale) & set(second.exported)
    export = tmp_path / "export"
    for sample_id in stale:
        assert not (export / "videos" / f"{sample_id}.mp4").exists()
        assert not (export / "labels" / f"{sample_id}.txt").exists()
        assert not (export / "meta" / f"{sample_id}.json").exists()
        assert not (export / "references" / sample_id).exists()
    assert sorted(p.stem for p in (export / "videos").iterdir()) == sorted(second.exported)
    assert len(shards_before) > len(second.shards)
    assert sorted((tmp_path / "shards").iterdir()) == second.shards


def test_a_rerun_keeps_files_someone_else_put_in_the_run_folder(easy_scenes, tmp_path, clip_config):
    stale, values = _first_of_two_runs(easy_scenes, tmp_path, clip_config)
    foreign = {
        "export/videos/x.mp4": b"not the pipeline's",
        "export/meta/x.json": b"{}",
        f"export/references/{stale[0]}/notes.txt": b"beside a stale sample's references",
        "shards/x.tar": b"not the pipeline's either",
    }
    for name, content in foreign.items():
        (tmp_path / name).write_bytes(content)
    run_pipeline(config_from_dict(values), progress=False)
    assert {name: (tmp_path / name).read_bytes() for name in foreign} == foreign
    assert not (tmp_path / "export" / "videos" / f"{stale[0]}.mp4").exists()
    assert not (tmp_path / "export" / "references" / stale[0] / "ref1.png").exists()
