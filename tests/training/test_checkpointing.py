"""Which checkpoint folders count, which a save prunes, and what makes a run folder an earlier run's."""

from kaleido_s2v.training.checkpoint_integrity import describe_files, write_complete_marker
from kaleido_s2v.training.checkpointing import (
    checkpoint_folders,
    earlier_run_files,
    find_latest_checkpoint,
    prune_checkpoints,
)


def _checkpoint(output_dir, step, complete=True):
    folder = output_dir / "checkpoints" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    if complete:
        write_complete_marker(folder, describe_files([folder / "trainer_state.json"]))
    return folder


def test_the_latest_checkpoint_is_the_newest_complete_one(tmp_path):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4, complete=False)  # an interrupted save
    (tmp_path / "checkpoints" / "step-00000006.tmp").mkdir()
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["step-00000004", "step-00000002"]
    assert find_latest_checkpoint(tmp_path).name == "step-00000002"


def test_pruning_keeps_the_newest_up_to_the_step_and_every_newer_one(tmp_path):
    for step in (2, 4, 6, 8):
        _checkpoint(tmp_path, step)
    prune_checkpoints(tmp_path, step=6, keep=2)
    assert [p.name for p in checkpoint_folders(tmp_path)] == [
        "step-00000008",
        "step-00000006",
        "step-00000004",
    ]
    prune_checkpoints(tmp_path, step=8, keep=0)  # 0 keeps every one
    assert len(checkpoint_folders(tmp_path)) == 3


def test_an_earlier_run_is_its_checkpoints_and_metrics(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "notes.txt").write_text("the user's")
    assert earlier_run_files(tmp_path) == []  # an empty checkpoints/ holds nothing to mix with
    _checkpoint(tmp_path, 2)
    (tmp_path / "metrics.jsonl").write_text("")
    assert earlier_run_files(tmp_path) == [tmp_path / "checkpoints", tmp_path / "metrics.jsonl"]
