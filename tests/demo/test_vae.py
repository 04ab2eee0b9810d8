"""The demo VAE: Wan's AutoencoderKLWan in a small config, and its resumable training loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kaleido_s2v.demo.vae import DemoVaeConfig, build_demo_vae, train_vae

SMALL = DemoVaeConfig(base_dim=8, z_dim=4, steps=2, batch_size=2, checkpoint_every=1)


def test_demo_vae_compresses_64px_frames_to_16x16x4_and_time_by_two():
    vae = build_demo_vae(SMALL).eval()
    with torch.no_grad():
        clip = vae.encode(torch.zeros(1, 3, 9, 64, 64)).latent_dist.mean
        image = vae.encode(torch.zeros(1, 3, 1, 64, 64)).latent_dist.mean
        decoded = vae.decode(clip).sample
    assert clip.shape == (1, 4, 5, 16, 16) and image.shape == (1, 4, 1, 16, 16)
    assert decoded.shape == (1, 3, 9, 64, 64)
    assert (vae.config.scale_factor_spatial, vae.config.scale_factor_temporal) == (4, 2)


def test_mismatched_temporal_downsampling_is_refused():
    with pytest.raises(ValueError, match="one entry per down-sampling"):
        DemoVaeConfig(dim_mult=(1, 2, 2), temporal_downsample=(True,))


def test_vae_training_resumes_to_the_same_weights_and_records_latent_statistics(reduced_run, tmp_path):
    run_dir, _ = reduced_run
    export = run_dir / "data" / "train" / "export"
    straight = train_vae(export, tmp_path / "straight", SMALL, size=64, progress=False)

    from dataclasses import replace

    train_vae(export, tmp_path / "cut", replace(SMALL, steps=1), size=64, progress=False)
    # the cut run finished at step 1; pretend it was interrupted there and continue to step 2
    import shutil

    shutil.rmtree(tmp_path / "cut" / "vae")
    resumed = train_vae(export, tmp_path / "cut", SMALL, size=64, progress=False)

    from diffusers import AutoencoderKLWan

    a, b = AutoencoderKLWan.from_pretrained(straight), AutoencoderKLWan.from_pretrained(resumed)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    config = json.loads((straight / "config.json").read_text())
    assert len(config["latents_mean"]) == 4 and len(config["latents_std"]) == 4
    assert config["latents_mean"] != [0.0] * 4 and all(s > 0 for s in config["latents_std"])
    metrics = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(np.isfinite(m["mse"]) for m in metrics)
    report = json.loads((tmp_path / "straight" / "vae_report.json").read_text())
    assert np.isfinite(report["psnr_db"])


def test_odd_steps_train_on_a_larger_batch_of_single_images_and_the_lr_decays_at_the_end():
    from kaleido_s2v.demo.vae import training_batch

    clips = np.zeros((5, 9, 64, 64, 3), np.uint8)
    references = np.full((7, 64, 64, 3), 255, np.uint8)
    config = DemoVaeConfig(batch_size=2, image_batch_size=6, steps=10, decay_fraction=0.2)
    assert training_batch(clips, references, 0, config).shape == (2, 3, 9, 64, 64)
    images = training_batch(clips, references, 1, config)
    assert images.shape == (6, 3, 1, 64, 64)
    assert (images[:3] == 1).all() and (images[3:] == -1).all()  # half references, half clip frames
    assert training_batch(clips, references[:0], 1, config).shape == (6, 3, 1, 64, 64)
    assert [config.learning_rate(s) for s in (0, 8, 9)] == pytest.approx([1e-3, 1e-3, 5e-4])
