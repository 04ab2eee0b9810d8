"""Resume checks a checkpoint's content and falls back to the newest intact one."""

import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.training.checkpoint_integrity import (
    COMPLETE_MARKER,
    describe_files,
    digest_problems,
    read_marker,
    size_problems,
    write_complete_marker,
)
from kaleido_s2v.training.checkpointing import find_latest_checkpoint
from kaleido_s2v.training.datasets import save_latent_examples
from kaleido_s2v.training.trainer import Trainer
from training.test_distributed import torchrun
from training.training_helpers import config_dict, latent_dataset, latent_examples, tiny_config

FINAL = "final/transformer/diffusion_pytorch_model.safetensors"


def _trainer(run_dir, **overrides):
    settings = {**dict(max_steps=4, checkpoint_every=2, ema_decay=0.9, keep_checkpoints=5), **overrides}
    return Trainer(tiny_config(run_dir, **settings), dataset=latent_dataset())


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated shard": lambda folder: _truncate(folder / "__0_0.distcp"),
    "missing metadata": lambda folder: (folder / ".metadata").unlink(),
    "empty trainer state": lambda folder: (folder / "trainer_state.json").write_text(""),
    "truncated rng state": lambda folder: _truncate(folder / "rng-rank0.safetensors"),
    "same size, other bytes": lambda folder: _flip_a_byte(folder / "__0_0.distcp"),
    "no marker": lambda folder: (folder / COMPLETE_MARKER).unlink(),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    _trainer(run_dir).train()
    return load_file(run_dir / FINAL)


def test_the_marker_lists_every_file_with_size_and_digest(tmp_path):
    _trainer(tmp_path / "run", max_steps=2).train()
    folder = find_latest_checkpoint(tmp_path / "run")
    files = read_marker(folder)
    on_disk = {p.name for p in folder.iterdir()} - {COMPLETE_MARKER}
    assert (
        set(files) == on_disk == {".metadata", "__0_0.distcp", "rng-rank0.safetensors", "trainer_state.json"}
    )
    assert all(files[name]["bytes"] == (folder / name).stat().st_size for name in files)


def test_size_and_digest_checks_on_a_hand_made_folder(tmp_path):
    """Each check on its own, without a training run: sizes catch a changed length, digests catch the
    same length with other bytes, and each share hashes only its files (file i goes to share i % shares)."""
    folder = tmp_path / "step-00000001"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"12345678")
    (folder / "b.bin").write_bytes(b"xy")
    write_complete_marker(folder, describe_files([folder / "a.bin", folder / "b.bin"]))
    assert size_problems(folder) == [] and digest_problems(folder, 0, 1) == []

    (folder / "a.bin").write_bytes(b"1234")
    assert size_problems(folder) == ["a.bin has 4 bytes, 8 were written"]
    (folder / "a.bin").write_bytes(b"87654321")
    assert size_problems(folder) == []  # same length: only the digest tells
    assert digest_problems(folder, 0, 1) == ["a.bin does not have the sha256 it was written with"]
    assert digest_problems(folder, 0, 2) == ["a.bin does not have the sha256 it was written with"]
    assert digest_problems(folder, 1, 2) == []  # b.bin is intact and a.bin is share 0's
    (folder / "b.bin").unlink()
    assert size_problems(folder) == ["b.bin is missing"]


@pytest.mark.parametrize(
    "marker",
    [
        {"format": 1, "files": {}},
        {"format": 2, "files": {"a.bin": {"bytes": 1, "sha256": "0"}}},
        {"format": 1, "files": ["a.bin"]},
    ],
    ids=["lists-nothing", "other-format", "files-not-a-mapping"],
)
def test_a_marker_that_lists_nothing_or_another_format_does_not_make_a_checkpoint(tmp_path, marker):
    (tmp_path / "a.bin").write_bytes(b"x")
    write_json_atomic(tmp_path / COMPLETE_MARKER, marker)
    assert read_marker(tmp_path) is None
    assert size_problems(tmp_path)[0].startswith(f"no readable {COMPLETE_MARKER}")


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, uninterrupted, damage):
    run_dir = tmp_path / "run"
    _trainer(run_dir).train()
    shutil.rmtree(run_dir / "final")
    DAMAGE[damage](run_dir / "checkpoints" / "step-00000004")
    with pytest.warns(UserWarning, match=r"skipped damaged checkpoint\(s\) step-00000004 .*resuming from"):
        result = _trainer(run_dir).train(resume=True)
    assert result.start_step == 2 and result.final_step == 4
    resumed = load_file(run_dir / FINAL)
    # The same run continued: equal to float32 rounding (a wrong state is off by ~1e-3 after two
    # Adam steps at lr 3e-3; bit-exact resume is checked in test_trainer.py).
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)


def test_resume_with_every_checkpoint_damaged_names_them(tmp_path):
    run_dir = tmp_path / "run"
    _trainer(run_dir).train()
    for step in ("step-00000002", "step-00000004"):
        _truncate(run_dir / "checkpoints" / step / "__0_0.distcp")
    with pytest.raises(
        FileNotFoundError, match=r"no intact checkpoint .*step-00000004 .*step-00000002 .*--overwrite"
    ):
        _trainer(run_dir).train(resume=True)


@pytest.mark.slow
def test_two_process_resume_checks_every_ranks_files(tmp_path):
    cache = save_latent_examples(tmp_path / "cache", latent_examples(num_clips=4), torch.zeros(1, 32))
    raw = config_dict(
        tmp_path / "run",
        micro_batch_size=1,
        max_steps=4,
        checkpoint_every=2,
        keep_checkpoints=5,
        data=dict(cache_dir=str(cache)),
    )
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(raw))
    torchrun(path)
    first = load_file(tmp_path / "run" / FINAL)
    newest = tmp_path / "run" / "checkpoints" / "step-00000004"
    assert {"__0_0.distcp", "__1_0.distcp", "rng-rank1.safetensors"} <= set(read_marker(newest))
    _flip_a_byte(newest / "__1_0.distcp")  # rank 1's shard, same size: only a digest finds it
    shutil.rmtree(tmp_path / "run" / "final")
    torchrun(path, "--resume")
    again = load_file(tmp_path / "run" / FINAL)
    assert all(torch.equal(again[name], tensor) for name, tensor in first.items())
