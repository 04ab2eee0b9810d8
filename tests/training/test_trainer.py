import json

import pytest
import torch

from kaleido_s2v.models.checkpoints import load_transformer
from kaleido_s2v.training.checkpointing import find_latest_checkpoint
from kaleido_s2v.training.trainer import Trainer, build_transformer, lr_lambda, sample_seed
from training.training_helpers import latent_dataset, tiny_config


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_overfits_two_clips(tmp_path):
    """300 steps on 2 synthetic clips: the loss falls well below its start (measured ratio ~0.29)."""
    config = tiny_config(tmp_path, max_steps=300, log_every=50)
    result = Trainer(config, dataset=latent_dataset(num_clips=2)).train()
    start = sum(result.losses[:10]) / 10
    end = sum(result.losses[-20:]) / 20
    assert end < 0.45 * start, (start, end)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [50, 100, 150, 200, 250, 300]
    assert all(
        r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 and 0 <= r["data_time_share"] < 1 for r in records
    )


def test_resume_gives_identical_weights(tmp_path):
    """Train 6 steps; train 3, stop, resume to 6 in a new Trainer: torch.equal weights and EMA."""
    overrides = dict(
        max_steps=6,
        micro_batch_size=1,
        gradient_accumulation_steps=2,
        checkpoint_every=3,
        ema_decay=0.9,
        data=dict(caption_dropout=0.3, reference_dropout=0.5),
        optimizer=dict(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1),
    )

    def dataset():
        return latent_dataset(num_clips=5, num_references=2)  # 2 batches per epoch: epochs roll over

    straight = Trainer(tiny_config(tmp_path / "straight", **overrides), dataset=dataset())
    straight_result = straight.train()

    first = Trainer(tiny_config(tmp_path / "resumed", **overrides), dataset=dataset())
    first_result = first.train(stop_at_step=3)
    assert first_result.final_step == 3 and first_result.export_dir is None
    assert find_latest_checkpoint(tmp_path / "resumed").name == "step-00000003"
    second = Trainer(tiny_config(tmp_path / "resumed", **overrides), dataset=dataset())
    second_result = second.train(resume=True)

    assert second_result.start_step == 3
    assert first_result.losses + second_result.losses == straight_result.losses
    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(second)[name]), name
    for name, tensor in straight.ema.items():
        assert torch.equal(tensor, second.ema[name]), name
    assert second.scheduler.get_last_lr() == straight.scheduler.get_last_lr()
    assert second.sampler.state_dict() == straight.sampler.state_dict()
    # The exported weights are the EMA and load with the model loader.
    loaded = load_transformer(tmp_path / "resumed" / "final" / "transformer")
    for name, tensor in loaded.state_dict().items():
        if name in second.ema:
            assert torch.equal(tensor, second.ema[name]), name


def test_gradient_accumulation_matches_a_larger_micro_batch(tmp_path):
    big = Trainer(tiny_config(tmp_path / "big", max_steps=3, micro_batch_size=2), dataset=latent_dataset())
    accumulated = Trainer(
        tiny_config(tmp_path / "acc", max_steps=3, micro_batch_size=1, gradient_accumulation_steps=2),
        dataset=latent_dataset(),
    )
    big_losses, accumulated_losses = big.train().losses, accumulated.train().losses
    assert accumulated_losses == pytest.approx(big_losses, rel=1e-5)
    for name, tensor in weights(big).items():
        # Adam amplifies float summation-order differences of near-zero gradients (measured max 1.2e-5).
        assert torch.allclose(tensor, weights(accumulated)[name], atol=1e-4), name


def test_stage_two_starts_from_stage_one_export_with_a_fresh_optimizer(tmp_path):
    stage1 = Trainer(tiny_config(tmp_path / "stage1", max_steps=2), dataset=latent_dataset())
    export = stage1.train().export_dir
    assert (export / "config.json").is_file()
    overrides = dict(max_steps=1, model=dict(init_from=str(export)))
    stage2 = Trainer(tiny_config(tmp_path / "stage2", **overrides), dataset=latent_dataset())
    for name, tensor in weights(stage1).items():
        assert torch.equal(tensor, weights(stage2)[name]), name
    assert stage2.step == 0 and not stage2.optimizer.state


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_reference_dropout_removes_one_slot_on_the_steps_its_draw_says(tmp_path, probability):
    """docs/model.md#4-flow-matching-training: per step, with probability data.reference_dropout, one
    reference slot is removed for the whole batch; the draw comes from (seed, step). 0 never drops."""
    config = tiny_config(tmp_path, max_steps=8, data=dict(caption_dropout=0.0, reference_dropout=probability))
    trainer = Trainer(config, dataset=latent_dataset(num_clips=2, num_references=2))
    slots = []
    original_loss = trainer._loss

    def recording_loss(batch, noise, sigma):
        slots.append(len(batch.reference_latents))
        return original_loss(batch, noise, sigma)

    trainer._loss = recording_loss
    trainer.train()
    draws = [
        torch.rand(1, generator=torch.Generator().manual_seed(sample_seed(config.seed, step, 1))).item()
        for step in range(8)
    ]
    assert slots == [1 if draw < probability else 2 for draw in draws]
    if probability == 0.5:
        assert 0 < slots.count(1) < 8  # this seed draws both outcomes


def test_model_rope_policy_reaches_the_built_transformer(tmp_path):
    config = tiny_config(tmp_path, model=dict(rope_policy="video"))
    assert build_transformer(config).config.rope_policy == "video"


def test_training_from_videos_without_encoders_names_the_missing_setting(tmp_path):
    config = tiny_config(tmp_path, data=dict(paths=[str(tmp_path / "samples")]))
    with pytest.raises(ValueError, match=r"without a latent cache in data\.cache_dir needs encoders\.path"):
        Trainer(config)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=1), dataset=latent_dataset())
    with pytest.raises(FileNotFoundError, match="no checkpoint under .*; start without --resume"):
        trainer.train(resume=True)


def test_learning_rate_schedule():
    assert [lr_lambda(s, 2, 10, "constant", 0.0) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_lambda(2, 2, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_lambda(10, 2, 10, "cosine", 0.1) == pytest.approx(0.1)


def test_gradient_checkpointing_and_bf16_autocast(tmp_path):
    plain = Trainer(tiny_config(tmp_path / "plain", max_steps=2), dataset=latent_dataset())
    checkpointed = Trainer(
        tiny_config(
            tmp_path / "ckpt",
            max_steps=2,
            model=dict(config=plain.config.model.config, gradient_checkpointing=True),
        ),
        dataset=latent_dataset(),
    )
    assert checkpointed.model.gradient_checkpointing
    plain_losses, checkpointed_losses = plain.train().losses, checkpointed.train().losses
    assert checkpointed_losses == pytest.approx(plain_losses, rel=1e-6)
    for name, tensor in weights(plain).items():
        assert torch.allclose(tensor, weights(checkpointed)[name], atol=1e-6), name
    bf16 = Trainer(
        tiny_config(tmp_path / "bf16", max_steps=2, mixed_precision="bf16"), dataset=latent_dataset()
    )
    assert bf16.autocast_dtype == torch.bfloat16
    bf16_losses = bf16.train().losses
    assert bf16_losses == pytest.approx(plain_losses, rel=0.05) and bf16_losses != plain_losses
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights stay fp32


def test_dataloader_workers_give_the_same_run(tmp_path):
    inline = Trainer(tiny_config(tmp_path / "inline", max_steps=3), dataset=latent_dataset(num_clips=4))
    workers = Trainer(
        tiny_config(tmp_path / "workers", max_steps=3, data=dict(num_workers=2)),
        dataset=latent_dataset(num_clips=4),
    )
    assert workers.train().losses == inline.train().losses


def test_ema_warms_up_instead_of_holding_the_initial_weights(tmp_path):
    """After one step the EMA weight is 0.1 init + 0.9 new (decay min(0.999, 1/10)), not 0.999 init."""
    trainer = Trainer(
        tiny_config(tmp_path, max_steps=1, ema_decay=0.999), dataset=latent_dataset(num_clips=2)
    )
    initial = {name: p.detach().clone() for name, p in trainer.trainable.items()}
    trainer.train()
    name, updated = next(
        (n, p.detach()) for n, p in trainer.trainable.items() if not torch.equal(p, initial[n])
    )
    expected = 0.1 * initial[name] + 0.9 * updated
    assert torch.allclose(trainer.ema[name], expected, atol=1e-6)


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_follows_the_progress_flag(tmp_path, capsys, progress):
    Trainer(tiny_config(tmp_path, max_steps=1), dataset=latent_dataset(num_clips=2)).train(progress=progress)
    assert ("train:" in capsys.readouterr().err) == progress
