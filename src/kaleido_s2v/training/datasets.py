"""Training datasets over S2V samples (docs/contracts.md#2-training-samples, docs/contracts.md#4-clips, docs/contracts.md#5-batches-and-reference-counts) and the latent cache.

Three datasets give the trainer one example per index, each with its `BucketKey`:

- `VideoSampleDataset`: reads clips and references through `kaleido_s2v.data.samples`, crops the
  clip to its bucket and letterboxes the references like inference; the trainer VAE/T5-encodes
  every step (`VideoExample`).
- `LatentCacheDataset`: reads what `write_latent_cache` stored once (`LatentExample`).
- `InMemoryLatentDataset`: latents already in memory (tests, benchmarks, the demo).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kaleido_s2v.common.atomic import atomic_path, write_json_atomic
from kaleido_s2v.common.hashing import json_digest
from kaleido_s2v.common.letterbox import letterbox
from kaleido_s2v.data.samples import iter_samples
from kaleido_s2v.pipelines.references import image_to_tensor
from kaleido_s2v.training.buckets import BucketKey, nearest_resolution
from kaleido_s2v.training.config import DataConfig

# The reference loader drops frames at each shot end, where cuts blend (docs/contracts.md#4-clips).
SKIP_FRAMES_AT_ENDS = 3
# 2: captions are cleaned like prompts before encoding (models.encoders.clean_prompt); a format-1 cache
# holds text states of uncleaned captions: its fingerprint no longer matches, and it is refused by name.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class VideoExample:
    key: str
    pixels: torch.Tensor  # (3, F, H, W) in [-1, 1]
    references: torch.Tensor  # (S, 3, H, W) in [-1, 1], letterboxed to the video size
    caption: str
    bucket: BucketKey


@dataclass(frozen=True)
class LatentExample:
    key: str
    latents: torch.Tensor  # (C, F_lat, H_lat, W_lat), normalised VAE latents
    reference_latents: tuple[torch.Tensor, ...]  # S x (C, 1, h, w)
    text_states: torch.Tensor  # (n_tokens, text_dim), no padding
    bucket: BucketKey


# ---------------------------------------------------------------------------------------- clip geometry


def source_frame_indices(
    num_source_frames: int, source_fps: float, num_frames: int, fps: float, skip_ends: bool
) -> list[int] | None:
    """Source indices of a clip of `num_frames` at `fps`, resampled by timestamp; None if too short.

    With `skip_ends` (folders without meta/) the first and last 3 frames are skipped first.
    """
    skip = SKIP_FRAMES_AT_ENDS if skip_ends else 0
    usable = num_source_frames - 2 * skip
    if source_fps <= 0 or usable <= 0:
        return None
    step = source_fps / fps if skip_ends else 1.0
    indices = [skip + int(np.floor(k * step + 1e-6)) for k in range(num_frames)]
    return indices if indices[-1] < skip + usable else None


def available_frames(num_source_frames: int, source_fps: float, fps: float, skip_ends: bool) -> int:
    """How many target frames a clip can give (for the short-clip error)."""
    skip = SKIP_FRAMES_AT_ENDS if skip_ends else 0
    usable = max(0, num_source_frames - 2 * skip)
    if not skip_ends:
        return usable
    return 0 if usable == 0 or source_fps <= 0 else int(np.floor((usable - 1) * fps / source_fps + 1e-6)) + 1


def resize_and_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(F, h, w, 3) uint8 -> (3, F, height, width) in [-1, 1]: bicubic resize to cover, centre crop."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (F, 3, h, w)
    source_height, source_width = video.shape[-2:]
    scale = max(height / source_height, width / source_width)
    size = (max(height, round(source_height * scale)), max(width, round(source_width * scale)))
    if size != (source_height, source_width):
        video = F.interpolate(video, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top : top + height, left : left + width].clamp(0, 255)
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()  # (3, F, H, W)


# ---------------------------------------------------------------------------------------- raw samples


class VideoSampleDataset:
    """Clips and references from sample folders or shards, cropped and letterboxed to their bucket.

    Every sample is checked when the dataset is built: clips too short for the request are
    reported together in one error (unless `pad_short_clips`), and unreadable samples (missing
    reference folder, empty caption) raise the reader's error.
    """

    def __init__(self, config: DataConfig) -> None:
        if not config.paths:
            raise ValueError("data.paths is empty; list the sample folders or shard files to train on")
        self.config = config
        self.samples = []
        self.bucket_keys: list[BucketKey] = []
        short: list[str] = []
        seen: set[str] = set()
        for sample in iter_samples(list(config.paths)):
            if sample.id in seen:
                raise ValueError(f"sample id {sample.id} appears twice in data.paths; ids must be unique")
            seen.add(sample.id)
            info = sample.video_info()
            skip_ends = sample.meta is None
            frames = available_frames(info["num_frames"], info["fps"], config.fps, skip_ends)
            if frames < config.num_frames and not config.pad_short_clips:
                short.append(f"{sample.id} ({frames} frames at {config.fps:g} fps)")
                continue
            num_references = len(sample.references)
            if num_references > config.max_references:
                warnings.warn(
                    f"sample {sample.id} has {num_references} references; using the first "
                    f"{config.max_references} (data.max_references)",
                    stacklevel=2,
                )
                num_references = config.max_references
            height, width = nearest_resolution(info["height"], info["width"], config.resolutions)
            self.samples.append(sample)
            self.bucket_keys.append(BucketKey(height, width, config.num_frames, num_references))
        if short:
            raise ValueError(
                f"{len(short)} clip(s) shorter than the requested {config.num_frames} frames: "
                + ", ".join(short)
                + "; drop them, lower data.num_frames, or set data.pad_short_clips: true"
            )
        if not self.samples:
            raise ValueError(f"no samples found in {', '.join(config.paths)}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> VideoExample:
        sample, bucket = self.samples[index], self.bucket_keys[index]
        frames, source_fps = sample.read_video()
        skip_ends = sample.meta is None
        indices = source_frame_indices(len(frames), source_fps, bucket.num_frames, self.config.fps, skip_ends)
        if indices is None:
            if not self.config.pad_short_clips:
                raise ValueError(
                    f"sample {sample.id}: clip has {len(frames)} frames, too short for {bucket.num_frames}"
                )
            indices = self._padded_indices(len(frames), source_fps, bucket.num_frames, skip_ends)
        pixels = resize_and_crop(frames[indices], bucket.height, bucket.width)
        images = sample.reference_images()[: bucket.num_references]
        references = torch.stack([image_to_tensor(letterbox(i, bucket.height, bucket.width)) for i in images])
        return VideoExample(sample.id, pixels, references, sample.caption, bucket)

    def _padded_indices(
        self, num_source: int, source_fps: float, num_frames: int, skip_ends: bool
    ) -> list[int]:
        """Indices of a short clip, repeating its last frame up to `num_frames` (pad_short_clips)."""
        skip = SKIP_FRAMES_AT_ENDS if skip_ends and num_source > 2 * SKIP_FRAMES_AT_ENDS else 0
        step = source_fps / self.config.fps if skip_ends else 1.0
        last = num_source - 1 - skip
        return [min(skip + int(np.floor(k * step + 1e-6)), last) for k in range(num_frames)]


# ---------------------------------------------------------------------------------------- in memory


class InMemoryLatentDataset:
    """Latent examples held in memory; `empty_text_states` stand in for a dropped caption."""

    def __init__(self, examples: Sequence[LatentExample], empty_text_states: torch.Tensor) -> None:
        self.examples = list(examples)
        self.bucket_keys = [example.bucket for example in self.examples]
        self.empty_text_states = empty_text_states

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> LatentExample:
        return self.examples[index]


# ---------------------------------------------------------------------------------------- latent cache


def cache_fingerprint(config: DataConfig, encoders_path: str | None, max_text_length: int) -> str:
    """What a cache depends on: the clip geometry, the reference count and the encoders."""
    payload = {
        "format": CACHE_FORMAT,
        "paths": [str(Path(p).resolve()) for p in config.paths],
        "resolutions": [list(r) for r in config.resolutions],
        "num_frames": config.num_frames,
        "fps": config.fps,
        "max_references": config.max_references,
        "pad_short_clips": config.pad_short_clips,
        "encoders": str(Path(encoders_path).resolve()) if encoders_path else None,
        "max_text_length": max_text_length,
    }
    return json_digest(payload)[:16]


def expected_cache_shapes(encoder, bucket: BucketKey) -> dict[str, tuple[int | None, ...]]:
    """The shape of each tensor `write_latent_cache` stores for a sample of `bucket` (None: any size).

    From the encoder's VAE config (z_dim, scale_factor_temporal t, scale_factor_spatial s):
    latents (z_dim, (F - 1) // t + 1, H // s, W // s), ref_0 … ref_{S-1} (z_dim, 1, H // s, W // s),
    and text_states as `text_states_shape`.
    """
    vae = encoder.vae.config
    height, width = bucket.height // vae.scale_factor_spatial, bucket.width // vae.scale_factor_spatial
    frames = (bucket.num_frames - 1) // vae.scale_factor_temporal + 1
    return {
        "latents": (vae.z_dim, frames, height, width),
        **{f"ref_{slot}": (vae.z_dim, 1, height, width) for slot in range(bucket.num_references)},
        "text_states": text_states_shape(encoder),
    }


def text_states_shape(encoder) -> tuple[None, int]:
    """(n_tokens, D): any number of tokens, each of the text encoder's hidden size D."""
    return (None, encoder.text_encoder.config.hidden_size)


def cache_file_problem(path: Path, expected: dict[str, tuple[int | None, ...]]) -> str | None:
    """Why the cache file at `path` cannot be reused (None when it can), from its header alone.

    The rule: it must open as safetensors (whose header must cover exactly the file's bytes, so a
    truncated, zero-byte or padded file fails), hold exactly the `expected` tensors, and each must
    have its expected shape. Tensor values are never read, so the check costs one small read per
    file however large the cache; it cannot see bytes changed in place at the same size.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (OSError, SafetensorError) as error:
        return f"is unreadable ({error})"
    if shapes.keys() != expected.keys():
        return f"holds {', '.join(sorted(shapes)) or 'no tensor'} instead of {', '.join(sorted(expected))}"
    for name, shape in expected.items():
        if not _fits(shapes[name], shape):
            return f"holds {name} of shape {shapes[name]}, expected {shape} (None: any size)"
    return None


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """Whether `shape` is `expected`, where None stands for any size."""
    return len(shape) == len(expected) and all(
        want in (None, got) for got, want in zip(shape, expected, strict=True)
    )


def _reusable_cache_file(path: Path, expected: dict[str, tuple[int | None, ...]]) -> bool:
    """Whether `path` holds a cache file to keep; one that exists but fails the check gets a warning."""
    if not path.exists():
        return False
    problem = cache_file_problem(path, expected)
    if problem is not None:
        warnings.warn(f"latent cache file {path} {problem}; encoding it again", stacklevel=3)
    return problem is None


def write_latent_cache(
    dataset: VideoSampleDataset,
    encoder,
    cache_dir: str | os.PathLike,
    fingerprint: str,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> Path:
    """VAE- and text-encode every sample once into `cache_dir` (resumable, atomic per sample).

    Layout: `samples/<id>.safetensors` (latents, ref_0 … ref_{S-1}, text_states),
    `empty_text.safetensors` (the dropped-caption states) and `cache.json`, written last by
    rank 0 once every sample file passes the check. Rank r of `world_size` encodes samples
    r, r + world_size, … Each reference is encoded as its own one-frame latent. A file left by an
    earlier run is kept only when it passes `cache_file_problem` against `expected_cache_shapes`;
    any other is encoded again, with a warning naming it.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    cache_dir = Path(cache_dir)
    index_path = cache_dir / "cache.json"
    if index_path.is_file():
        existing = json.loads(index_path.read_text())
        if existing.get("fingerprint") != fingerprint:
            raise ValueError(
                f"latent cache {cache_dir} was built for other data or encoders (fingerprint "
                f"{existing.get('fingerprint')} != {fingerprint}); use a new data.cache_dir"
            )
    (cache_dir / "samples").mkdir(parents=True, exist_ok=True)
    paths = [cache_dir / "samples" / f"{sample.id}.safetensors" for sample in dataset.samples]
    expected = [expected_cache_shapes(encoder, key) for key in dataset.bucket_keys]
    for index in tqdm(range(rank, len(dataset), world_size), desc="caching latents", disable=not progress):
        path = paths[index]
        if not _reusable_cache_file(path, expected[index]):
            example = dataset[index]
            tensors = {"latents": encoder.encode_video(example.pixels.unsqueeze(0))[0].contiguous()}
            if len(example.references):
                reference_latents = encoder.encode_images(example.references)  # (S, C, 1, h, w)
                for slot, latent in enumerate(reference_latents):
                    tensors[f"ref_{slot}"] = latent.contiguous()
            tensors["text_states"] = encoder.encode_text([example.caption])[0].contiguous()
            with atomic_path(path) as temporary:
                save_file(tensors, str(temporary), metadata={"caption": example.caption})
    empty = cache_dir / "empty_text.safetensors"
    empty_expected = {"text_states": text_states_shape(encoder)}
    if rank == 0 and not _reusable_cache_file(empty, empty_expected):
        with atomic_path(empty) as temporary:
            save_file({"text_states": encoder.encode_text([""])[0].contiguous()}, str(temporary))
    files = [(empty, empty_expected), *zip(paths, expected, strict=True)]
    if rank == 0 and all(cache_file_problem(path, shapes) is None for path, shapes in files):
        entries = [
            {"id": sample.id, "bucket": [key.height, key.width, key.num_frames, key.num_references]}
            for sample, key in zip(dataset.samples, dataset.bucket_keys, strict=True)
        ]
        write_json_atomic(
            index_path, {"format": CACHE_FORMAT, "fingerprint": fingerprint, "samples": entries}
        )
    return cache_dir


def read_cache_file(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The tensors of one cache file; a clear error naming the file when it is unreadable or lacks one of `names`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    rerun = "rerun `kaleido-s2v train cache CONFIG` to encode it again"
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ValueError(f"latent cache file {path} is unreadable ({error}); {rerun}") from error
    missing = [name for name in names if name not in tensors]
    if missing:
        raise ValueError(f"latent cache file {path} lacks {', '.join(missing)}; {rerun}")
    return tensors


class LatentCacheDataset:
    """Examples read back from a latent cache."""

    def __init__(self, cache_dir: str | os.PathLike, fingerprint: str | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / "cache.json"
        if not index_path.is_file():
            raise FileNotFoundError(
                f"latent cache {self.cache_dir} is missing or incomplete (no cache.json); "
                "run `kaleido-s2v train cache CONFIG` first"
            )
        index = json.loads(index_path.read_text())
        stored = index.get("fingerprint")
        if fingerprint is not None and stored is not None and stored != fingerprint:
            raise ValueError(
                f"latent cache {self.cache_dir} was built for other data settings or encoders; "
                "rerun `kaleido-s2v train cache CONFIG` with a new data.cache_dir"
            )
        self.ids = [entry["id"] for entry in index["samples"]]
        self.bucket_keys = [BucketKey(*entry["bucket"]) for entry in index["samples"]]
        empty = read_cache_file(self.cache_dir / "empty_text.safetensors", ["text_states"])
        self.empty_text_states = empty["text_states"]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> LatentExample:
        bucket = self.bucket_keys[index]
        slots = [f"ref_{slot}" for slot in range(bucket.num_references)]
        path = self.cache_dir / "samples" / f"{self.ids[index]}.safetensors"
        tensors = read_cache_file(path, ["latents", *slots, "text_states"])
        references = tuple(tensors[slot] for slot in slots)
        return LatentExample(self.ids[index], tensors["latents"], references, tensors["text_states"], bucket)


def save_latent_examples(
    cache_dir: str | os.PathLike,
    examples: Sequence[LatentExample],
    empty_text_states: torch.Tensor,
    fingerprint: str | None = None,
) -> Path:
    """Write latents computed elsewhere (e.g. by the demo's own autoencoder) as a latent cache.

    With `fingerprint` None the cache is not tied to a data config, and training never rejects it.
    """
    from safetensors.torch import save_file

    cache_dir = Path(cache_dir)
    (cache_dir / "samples").mkdir(parents=True, exist_ok=True)
    entries = []
    for example in examples:
        if len(example.reference_latents) != example.bucket.num_references:
            raise ValueError(
                f"example {example.key}: {len(example.reference_latents)} reference latents but its bucket "
                f"says {example.bucket.num_references}"
            )
        tensors = {"latents": example.latents.contiguous(), "text_states": example.text_states.contiguous()}
        tensors.update({f"ref_{slot}": r.contiguous() for slot, r in enumerate(example.reference_latents)})
        with atomic_path(cache_dir / "samples" / f"{example.key}.safetensors") as temporary:
            save_file(tensors, str(temporary))
        bucket = example.bucket
        entries.append(
            {
                "id": example.key,
                "bucket": [bucket.height, bucket.width, bucket.num_frames, bucket.num_references],
            }
        )
    with atomic_path(cache_dir / "empty_text.safetensors") as temporary:
        save_file({"text_states": empty_text_states.contiguous()}, str(temporary))
    write_json_atomic(
        cache_dir / "cache.json", {"format": CACHE_FORMAT, "fingerprint": fingerprint, "samples": entries}
    )
    return cache_dir
