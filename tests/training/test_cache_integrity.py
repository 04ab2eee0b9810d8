"""`train cache` keeps a cached file only when its safetensors header holds the expected tensors."""

from __future__ import annotations

import os
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from kaleido_s2v.models.encoders import LatentEncoder
from kaleido_s2v.training.config import DataConfig
from kaleido_s2v.training.datasets import (
    LatentCacheDataset,
    VideoSampleDataset,
    cache_fingerprint,
    write_latent_cache,
)
from tiny_components import tiny_text_encoder_and_tokenizer, tiny_vae
from training.training_helpers import clip, write_sample


@pytest.fixture
def dataset(tmp_path):
    for seed, sample_id in enumerate("abc"):
        write_sample(tmp_path, sample_id, clip(9, seed=seed), 8.0)
    config = DataConfig(paths=(str(tmp_path / "set"),), resolutions=((64, 64),), num_frames=9, fps=8.0)
    return VideoSampleDataset(config)


@pytest.fixture
def encoder():
    text_encoder, tokenizer = tiny_text_encoder_and_tokenizer()
    return LatentEncoder(tiny_vae(), text_encoder, tokenizer, max_text_length=8)


@pytest.fixture
def cache(dataset, encoder, tmp_path):
    """(cache folder, its fingerprint) of a finished cache of samples a, b, c."""
    fingerprint = cache_fingerprint(dataset.config, None, 8)
    write_latent_cache(dataset, encoder, tmp_path / "cache", fingerprint, progress=False)
    return tmp_path / "cache", fingerprint


def _file(cache_dir, sample_id):
    return cache_dir / "samples" / f"{sample_id}.safetensors"


def _tensors(path) -> dict[str, torch.Tensor]:
    """The file's tensors, copied (`load_file` maps the file, and the tests damage it in place)."""
    return {name: tensor.clone() for name, tensor in load_file(path).items()}


def _stamp(path) -> int:
    return os.stat(path).st_mtime_ns


def _assert_same_tensors(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    assert all(torch.equal(found[name], expected[name]) for name in expected)


def test_a_truncated_and_a_zeroed_sample_are_encoded_again_and_intact_ones_kept(cache, dataset, encoder):
    cache_dir, fingerprint = cache
    original = {i: _tensors(_file(cache_dir, i)) for i in "abc"}
    intact = _stamp(_file(cache_dir, "c"))
    truncated, zeroed = _file(cache_dir, "a"), _file(cache_dir, "b")
    truncated.write_bytes(truncated.read_bytes()[:-100])
    zeroed.write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        write_latent_cache(dataset, encoder, cache_dir, fingerprint, progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert re.fullmatch(
        rf"latent cache file {re.escape(str(truncated))} is unreadable \(.*\); encoding it again", messages[0]
    )
    assert messages[1].startswith(f"latent cache file {zeroed} is unreadable")
    for sample_id in "ab":
        _assert_same_tensors(load_file(_file(cache_dir, sample_id)), original[sample_id])
    assert _stamp(_file(cache_dir, "c")) == intact
    assert LatentCacheDataset(cache_dir, fingerprint).ids == ["a", "b", "c"]


@pytest.mark.parametrize(
    "damage, problem",
    [
        (
            lambda t: {k: v for k, v in t.items() if k != "ref_1"},
            "holds latents, ref_0, text_states instead of",
        ),
        (lambda t: {**t, "extra": torch.zeros(1)}, "holds extra, latents"),
        (
            lambda t: {**t, "latents": t["latents"][:, :2].contiguous()},
            "holds latents of shape (16, 2, 8, 8), expected",
        ),
        (lambda t: {**t, "text_states": t["text_states"][:, :5].contiguous()}, "holds text_states of shape"),
    ],
    ids=["missing-reference", "extra-tensor", "latents-shape", "text-width"],
)
def test_a_sample_with_other_tensors_is_encoded_again(cache, dataset, encoder, damage, problem):
    cache_dir, fingerprint = cache
    path = _file(cache_dir, "b")
    original = _tensors(path)
    save_file(damage(original), path)
    with pytest.warns(UserWarning, match=re.escape(f"latent cache file {path} {problem}")):
        write_latent_cache(dataset, encoder, cache_dir, fingerprint, progress=False)
    _assert_same_tensors(load_file(path), original)


def test_a_zeroed_empty_text_file_is_encoded_again(cache, dataset, encoder):
    cache_dir, fingerprint = cache
    empty = cache_dir / "empty_text.safetensors"
    original = _tensors(empty)
    empty.write_bytes(b"")
    with pytest.warns(UserWarning, match=re.escape(f"latent cache file {empty} is unreadable")):
        write_latent_cache(dataset, encoder, cache_dir, fingerprint, progress=False)
    _assert_same_tensors(load_file(empty), original)


def test_the_index_waits_for_every_sample_to_pass_the_check(dataset, encoder, tmp_path):
    fingerprint = cache_fingerprint(dataset.config, None, 8)
    sharded = tmp_path / "sharded"
    write_latent_cache(dataset, encoder, sharded, fingerprint, progress=False, rank=1, world_size=2)
    _file(sharded, "b").write_bytes(b"")  # rank 1's only sample, damaged before rank 0 finishes
    write_latent_cache(dataset, encoder, sharded, fingerprint, progress=False, rank=0, world_size=2)
    assert not (sharded / "cache.json").exists()


@pytest.mark.parametrize("target", ["samples/a.safetensors", "empty_text.safetensors"])
def test_the_reader_names_a_corrupt_cache_file(cache, target):
    cache_dir, fingerprint = cache
    path = cache_dir / target
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=re.escape(f"latent cache file {path} is unreadable")):
        LatentCacheDataset(cache_dir, fingerprint)[0]


def test_the_reader_names_a_cache_file_that_lacks_a_tensor(cache):
    cache_dir, fingerprint = cache
    path = _file(cache_dir, "a")
    save_file({k: v for k, v in _tensors(path).items() if k != "ref_1"}, path)
    with pytest.raises(ValueError, match=re.escape(f"latent cache file {path} lacks ref_1; rerun")):
        LatentCacheDataset(cache_dir, fingerprint)[0]
