"""A run folder is never silently reused, and resume runs no code from the checkpoint files."""

import json
import pickle

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import get_state_dict

from kaleido_s2v.cli import main as cli_main
from kaleido_s2v.training.checkpoint_integrity import COMPLETE_MARKER, describe_files, write_complete_marker
from kaleido_s2v.training.checkpoint_reading import (
    METADATA_CLASSES,
    SafeFileSystemReader,
    SafeLoadPlanner,
    UnsafeCheckpointError,
)
from kaleido_s2v.training.checkpointing import find_latest_checkpoint
from kaleido_s2v.training.datasets import save_latent_examples
from kaleido_s2v.training.trainer import Trainer
from training.test_distributed import torchrun
from training.training_helpers import config_dict, latent_dataset, latent_examples, tiny_config


class _WritesAFile:
    """Unpickling this creates `path`: proof that a payload ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _reseal(folder):
    """Rewrite the completeness marker to match the folder's files, as a crafted checkpoint would."""
    files = [p for p in folder.iterdir() if p.name != COMPLETE_MARKER]
    write_complete_marker(folder, describe_files(files))


def _steps(output_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def _trainer(tmp_path, **overrides):
    settings = {**dict(max_steps=2, checkpoint_every=2, ema_decay=0.9, keep_checkpoints=5), **overrides}
    return Trainer(tiny_config(tmp_path / "run", **settings), dataset=latent_dataset())


def test_a_run_folder_with_checkpoints_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    _trainer(tmp_path, max_steps=4).train()
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert before == ["step-00000002", "step-00000004"]
    weights = load_file(tmp_path / "run" / "checkpoints" / "step-00000004" / "rng-rank0.safetensors")

    with pytest.raises(FileExistsError, match="--resume to continue it, or --overwrite"):
        _trainer(tmp_path).train()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    assert _steps(tmp_path / "run") == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="pass one of them"):
        _trainer(tmp_path).train(resume=True, overwrite=True)

    # --overwrite deletes only checkpoints/ and metrics.jsonl, says so, and starts at step 0.
    (tmp_path / "run" / "notes.txt").write_text("the user's")
    result = _trainer(tmp_path).train(overwrite=True)
    assert result.start_step == 0 and _steps(tmp_path / "run") == [1, 2]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000002"]
    assert (tmp_path / "run" / "notes.txt").read_text() == "the user's"
    assert "removing" in capsys.readouterr().out
    assert weights["torch"].dtype == torch.uint8  # the RNG state is a plain tensor (no pickle)


def test_train_cli_refuses_a_used_run_folder(tmp_path, capsys):
    cache = save_latent_examples(tmp_path / "cache", latent_examples(), torch.zeros(1, 32))
    raw = config_dict(tmp_path / "run", max_steps=2, checkpoint_every=1, data=dict(cache_dir=str(cache)))
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["train", str(path)]) == 0
    stamp = (tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer_state.json").read_bytes()
    assert cli_main(["train", str(path)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer_state.json").read_bytes() == stamp
    assert cli_main(["train", str(path), "--resume"]) == 0  # finished: nothing to do, nothing lost
    assert cli_main(["train", str(path), "--overwrite"]) == 0


def test_checkpoint_metadata_holds_only_allow_listed_classes(tmp_path):
    _trainer(tmp_path).train()
    found = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    folder = find_latest_checkpoint(tmp_path / "run")
    with open(folder / ".metadata", "rb") as handle:
        Recorder(handle).load()
    dtypes = {(module, name) for module, name in found if module == "torch" and name.endswith(("32", "64"))}
    assert found - dtypes <= METADATA_CLASSES, found - METADATA_CLASSES


def test_resume_refuses_crafted_metadata_and_runs_nothing(tmp_path):
    _trainer(tmp_path).train()
    folder = find_latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "payload-ran"
    (folder / ".metadata").write_bytes(pickle.dumps(_WritesAFile(marker)))
    _reseal(folder)
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata asks to build io\.open"):
        _trainer(tmp_path).train(resume=True)
    assert not marker.exists()


def test_resume_refuses_a_crafted_non_tensor_value_and_runs_nothing(tmp_path):
    """The optimizer's hyper-parameters are stored as pickled bytes in the .distcp shards."""
    trainer = _trainer(tmp_path)
    trainer.train()
    folder = find_latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "payload-ran"
    model_state, optimizer_state = get_state_dict(trainer.model, trainer.optimizer)
    optimizer_state["param_groups"][0]["lr"] = _WritesAFile(marker)
    dcp.save({"model": model_state, "optimizer": optimizer_state, "ema": trainer.ema}, checkpoint_id=folder)
    _reseal(folder)
    with pytest.raises(UnsafeCheckpointError, match="optimizer.param_groups"):
        _trainer(tmp_path).train(resume=True)
    assert not marker.exists()


# Hand-made pickles (protocol 0) that call a function when loaded, harmless ones: torch.manual_seed(1234)
# is a torch attribute that is not a dtype; eval, getattr and os.system are what an attack would use.
_CALLS_A_TORCH_FUNCTION = b"ctorch\nmanual_seed\n(I1234\ntR."


@pytest.mark.parametrize(
    "payload, message",
    [
        (_CALLS_A_TORCH_FUNCTION, r"asks to build torch\.manual_seed"),
        (b"cbuiltins\neval\n(V1 + 1\ntR.", r"asks to build builtins\.eval"),
        (b"cbuiltins\ngetattr\n(cos\nenviron\nVcopy\ntR.", r"asks to build builtins\.getattr"),
        (b"cos\nsystem\n(Vtrue\ntR.", r"asks to build os\.system"),
        (pickle.dumps(torch.float32), "holds a dtype, not DCP metadata"),  # an allowed class, alone
        (pickle.dumps([1, 2]), "holds a list, not DCP metadata"),
    ],
    ids=["torch-function", "eval", "getattr", "os-system", "dtype", "list"],
)
def test_metadata_reader_builds_only_dtypes_from_torch_and_returns_only_metadata(tmp_path, payload, message):
    """No checkpoint needed: the reader alone, on a hand-made `.metadata`."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".metadata").write_bytes(payload)
    torch.manual_seed(7)
    with pytest.raises(UnsafeCheckpointError, match=message):
        SafeFileSystemReader(tmp_path / "ckpt").read_metadata()
    assert torch.initial_seed() == 7  # nothing ran


def test_safe_reader_and_planner_load_plain_values(tmp_path):
    """What the allow-lists accept still loads: tensors, numbers, tuples, lists, strings."""
    saved = {"weight": torch.arange(6.0).reshape(2, 3), "betas": (0.9, 0.99), "name": "adamw", "ids": [1, 2]}
    dcp.save(saved, checkpoint_id=tmp_path / "ckpt")
    loaded = {"weight": torch.zeros(2, 3), "betas": None, "name": None, "ids": None}
    dcp.load(loaded, storage_reader=SafeFileSystemReader(tmp_path / "ckpt"), planner=SafeLoadPlanner("ckpt"))
    assert torch.equal(loaded["weight"], saved["weight"])
    assert (loaded["betas"], loaded["name"], loaded["ids"]) == ((0.9, 0.99), "adamw", [1, 2])


@pytest.mark.slow
def test_two_process_resume_refuses_crafted_metadata(tmp_path):
    cache = save_latent_examples(tmp_path / "cache", latent_examples(num_clips=4), torch.zeros(1, 32))
    raw = config_dict(
        tmp_path / "run", micro_batch_size=1, max_steps=2, checkpoint_every=1, data=dict(cache_dir=str(cache))
    )
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(raw))
    torchrun(path)
    folder = find_latest_checkpoint(tmp_path / "run")
    marker = tmp_path / "payload-ran"
    (folder / ".metadata").write_bytes(pickle.dumps(_WritesAFile(marker)))
    _reseal(folder)
    with pytest.raises(AssertionError, match="asks to build io.open"):
        torchrun(path, "--resume")
    assert not marker.exists()
    # An intact FSDP2 checkpoint of two ranks holds only allow-listed classes: the older one resumes.
    (tmp_path / "run" / "final").rename(tmp_path / "final-of-first-run")
    folder.rename(tmp_path / "crafted")
    torchrun(path, "--resume")
    assert (tmp_path / "run" / "final" / "transformer").is_dir()
