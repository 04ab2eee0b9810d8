import os

import numpy as np
import pytest
import torch

from kaleido_s2v.models.encoders import LatentEncoder
from kaleido_s2v.pipelines.references import image_to_tensor, letterbox
from kaleido_s2v.training.buckets import BucketBatchSampler, BucketKey, nearest_resolution, rank_slice
from kaleido_s2v.training.config import DataConfig
from kaleido_s2v.training.datasets import (
    LatentCacheDataset,
    VideoSampleDataset,
    available_frames,
    cache_fingerprint,
    resize_and_crop,
    source_frame_indices,
    write_latent_cache,
)
from kaleido_s2v.training.trainer import Trainer
from tiny_components import tiny_text_encoder_and_tokenizer, tiny_vae
from training.training_helpers import clip, reference, tiny_config, write_sample


@pytest.fixture
def sample_folder(tmp_path):
    write_sample(tmp_path, "a", clip(9), 8.0)
    write_sample(tmp_path, "b", clip(9, seed=1), 8.0)
    return tmp_path / "set"


def data_config(paths, **overrides) -> DataConfig:
    values = {"paths": (str(paths),), "resolutions": ((64, 64),), "num_frames": 9, "fps": 8.0, **overrides}
    return DataConfig(**values)


def test_clip_frames_are_resampled_only_without_meta():
    # Exported clips (with meta/) are read as they are.
    assert source_frame_indices(9, 8.0, 9, 8.0, skip_ends=False) == list(range(9))
    # Reference-layout folders: skip 3 frames at each end, then resample 25 -> 8 fps by timestamp.
    indices = source_frame_indices(40, 25.0, 9, 8.0, skip_ends=True)
    assert indices == [3 + int(k * 25 / 8 + 1e-6) for k in range(9)]
    assert source_frame_indices(30, 25.0, 9, 8.0, skip_ends=True) is None
    assert available_frames(30, 25.0, 8.0, skip_ends=True) == 8


def test_resize_covers_and_centre_crops():
    frames = np.zeros((2, 40, 100, 3), dtype=np.uint8)
    frames[:, :, 45:55] = 255  # a white bar in the middle column band
    pixels = resize_and_crop(frames, 64, 64)
    assert pixels.shape == (3, 2, 64, 64)
    assert pixels.min() >= -1 and pixels.max() <= 1
    # Height 40 -> 64 (scale 1.6): width 160, crop 48..112 keeps the bar (72..88) centred.
    assert pixels[0, 0, 32, 32] > 0.9 and pixels[0, 0, 32, 0] < -0.9


def test_video_dataset_buckets_crops_and_letterboxes(sample_folder, tmp_path):
    square = VideoSampleDataset(data_config(sample_folder))
    example = square[0]
    assert example.pixels.shape == (3, 9, 64, 64) and example.references.shape == (2, 3, 64, 64)
    expected = image_to_tensor(letterbox(reference((255, 0, 0)), 64, 64))
    assert torch.equal(example.references[0], expected)  # letterboxed exactly like inference
    assert example.caption == "a cat walks" and square.bucket_keys[0] == BucketKey(64, 64, 9, 2)

    # A wide reference-layout clip (no meta/) joins the 48x96 bucket with its own reference count.
    write_sample(tmp_path, "wide", clip(40, 48, 96), 25.0, refs=1, meta=False)
    assert nearest_resolution(48, 80, ((64, 64), (48, 96))) == (48, 96)
    assert nearest_resolution(64, 60, ((64, 64), (48, 96))) == (64, 64)
    mixed = VideoSampleDataset(data_config(sample_folder, resolutions=((64, 64), (48, 96))))
    ids = [s.id for s in mixed.samples]
    assert ids == ["a", "b", "wide"]
    assert mixed.bucket_keys[ids.index("wide")] == BucketKey(48, 96, 9, 1)
    wide = mixed[ids.index("wide")]
    assert wide.pixels.shape == (3, 9, 48, 96) and wide.references.shape == (1, 3, 48, 96)
    # Skipped ends, then 25 -> 8 fps by timestamp: the red channel counts source frames.
    red = (wide.pixels[0, :, 0, 0] + 1) * 127.5
    expected_red = [(3 + int(k * 25 / 8 + 1e-6)) * 8 % 256 for k in range(9)]
    assert np.allclose(red.numpy(), expected_red, atol=12)


def test_short_clips_are_one_error_naming_each(tmp_path):
    write_sample(tmp_path, "ok", clip(9), 8.0)
    write_sample(tmp_path, "short1", clip(5), 8.0)
    write_sample(tmp_path, "short2", clip(7), 8.0)
    with pytest.raises(
        ValueError, match=r"2 clip\(s\) shorter than the requested 9 frames: short1 \(5 frames.*short2 \(7"
    ):
        VideoSampleDataset(data_config(tmp_path / "set"))
    padded = VideoSampleDataset(data_config(tmp_path / "set", pad_short_clips=True))
    example = padded[[s.id for s in padded.samples].index("short1")]
    assert example.pixels.shape[1] == 9
    assert torch.equal(example.pixels[:, 4], example.pixels[:, 8])  # the last frame repeats


def test_missing_reference_folder_and_empty_caption_are_clear_errors(sample_folder):
    for path in (sample_folder / "references" / "b").iterdir():
        path.unlink()
    (sample_folder / "references" / "b").rmdir()
    with pytest.raises(FileNotFoundError, match="sample b: reference folder .* does not exist"):
        VideoSampleDataset(data_config(sample_folder))
    (sample_folder / "labels" / "a.txt").write_text("  \n")
    (sample_folder / "videos" / "b.mp4").unlink()
    with pytest.raises(ValueError, match="caption is empty"):
        VideoSampleDataset(data_config(sample_folder))


def test_bucket_sampler_is_deterministic_single_bucket_and_resumable():
    keys = [BucketKey(64, 64, 9, 1)] * 5 + [BucketKey(64, 64, 9, 2)] * 4
    sampler = BucketBatchSampler(keys, global_batch_size=2, seed=3)
    assert sampler.batches_per_epoch == 4
    drawn = [sampler.next_batch() for _ in range(6)]
    for batch in drawn:
        assert len({keys[i] for i in batch}) == 1
    assert sorted(i for b in drawn[:4] for i in b) != sorted(range(9))  # one sample waits
    assert sampler.epoch == 1 and sampler.position == 2
    again = BucketBatchSampler(keys, 2, seed=3)
    again.load_state_dict({"epoch": 1, "position": 1, "seed": 3})
    assert again.next_batch() == drawn[5]
    assert rank_slice([7, 8, 9, 10], rank=1, world_size=2) == [9, 10]
    with pytest.raises(ValueError, match="no bucket holds a full global batch of 6"):
        BucketBatchSampler(keys, 6, seed=0)


@pytest.fixture
def encoder():
    text_encoder, tokenizer = tiny_text_encoder_and_tokenizer()
    return LatentEncoder(tiny_vae(), text_encoder, tokenizer, max_text_length=8)


def test_latent_cache_encodes_each_reference_alone_and_resumes(sample_folder, tmp_path, encoder):
    config = data_config(sample_folder)
    dataset = VideoSampleDataset(config)
    fingerprint = cache_fingerprint(config, None, 8)
    write_latent_cache(dataset, encoder, tmp_path / "cache", fingerprint, progress=False)
    cached = LatentCacheDataset(tmp_path / "cache", fingerprint)
    assert cached.ids == ["a", "b"] and cached.bucket_keys == dataset.bucket_keys
    example, source = cached[0], dataset[0]
    assert example.latents.shape == (16, 3, 8, 8)
    assert torch.equal(example.latents, encoder.encode_video(source.pixels.unsqueeze(0))[0])
    assert len(example.reference_latents) == 2
    for slot in range(2):
        alone = encoder.encode_images(source.references[slot : slot + 1])[0]
        assert alone.shape == (16, 1, 8, 8)
        assert torch.allclose(example.reference_latents[slot], alone, atol=1e-5)  # batched conv rounding
    assert not torch.allclose(example.reference_latents[0], example.reference_latents[1])
    assert torch.equal(example.text_states, encoder.encode_text(["a cat walks"])[0])
    assert torch.equal(cached.empty_text_states, encoder.encode_text([""])[0])
    # A second run skips finished samples; a cache built for other settings is refused.
    stamp = os.stat(tmp_path / "cache" / "samples" / "a.safetensors").st_mtime_ns
    write_latent_cache(dataset, encoder, tmp_path / "cache", fingerprint, progress=False)
    assert os.stat(tmp_path / "cache" / "samples" / "a.safetensors").st_mtime_ns == stamp
    # Two ranks share the work; the index appears only once every sample is encoded.
    sharded = tmp_path / "sharded"
    write_latent_cache(dataset, encoder, sharded, fingerprint, progress=False, rank=1, world_size=2)
    assert sorted(p.name for p in (sharded / "samples").iterdir()) == ["b.safetensors"]
    assert not (sharded / "cache.json").exists()
    write_latent_cache(dataset, encoder, sharded, fingerprint, progress=False, rank=0, world_size=2)
    assert LatentCacheDataset(sharded, fingerprint).ids == ["a", "b"]
    with pytest.raises(ValueError, match="built for other data"):
        write_latent_cache(dataset, encoder, tmp_path / "cache", "other", progress=False)
    with pytest.raises(ValueError, match="rerun `kaleido-s2v train cache"):
        LatentCacheDataset(tmp_path / "cache", "other")


def test_training_from_cache_equals_training_from_videos(sample_folder, tmp_path, encoder):
    """The cache only saves time: the same losses as encoding every step."""
    from tiny_components import TINY_TRANSFORMER_CONFIG

    config = data_config(sample_folder)
    fingerprint = cache_fingerprint(config, None, 8)
    write_latent_cache(VideoSampleDataset(config), encoder, tmp_path / "cache", fingerprint, progress=False)
    overrides = dict(
        max_steps=2, model=dict(config=dict(TINY_TRANSFORMER_CONFIG)), data=dict(caption_dropout=0.5)
    )
    from_videos = Trainer(tiny_config(tmp_path / "videos", **overrides), VideoSampleDataset(config), encoder)
    from_cache = Trainer(
        tiny_config(tmp_path / "cached", **overrides), LatentCacheDataset(tmp_path / "cache")
    )
    assert from_cache.train().losses == pytest.approx(from_videos.train().losses, rel=1e-5)


def test_encoders_load_from_a_pipeline_folder_with_umt5_or_another_text_encoder(tmp_path):
    from transformers import BertConfig, BertModel, UMT5EncoderModel

    from tiny_components import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pipeline")
    encoder = LatentEncoder.from_folder(folder, max_text_length=8)
    assert isinstance(encoder.text_encoder, UMT5EncoderModel)
    states = encoder.encode_text(["a cat walks", ""])
    assert states[0].shape == (4, 32) and states[1].shape == (1, 32)  # words + </s>, then </s> alone
    bert = BertModel(
        BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    )
    bert.save_pretrained(folder / "text_encoder")
    assert isinstance(LatentEncoder.from_folder(folder, max_text_length=8).text_encoder, BertModel)
