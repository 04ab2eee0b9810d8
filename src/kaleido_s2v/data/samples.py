"""The S2V training sample (docs/contracts.md#2-training-samples): one reader and one writer for the folder and tar forms.

Folder form (a superset of the reference repo's layout)::

    videos/<id>.mp4
    labels/<id>.txt            caption on the first line
    references/<id>/ref1.png … refN.png
    meta/<id>.json             optional: caption, fps, num_frames, width, height, subjects, seed, fingerprint

Sharded form (WebDataset tar): one sample is `<key>.mp4`, `<key>.json` (the meta above), `<key>.txt`,
`<key>.ref1.png …`. Keys contain no dots (WebDataset splits a member name at its first dot).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from kaleido_s2v.common.atomic import atomic_path, is_temporary, write_json_atomic, write_text_atomic
from kaleido_s2v.common.images import on_white, open_image
from kaleido_s2v.common.video_io import probe_video, read_video

_REF_NAME = re.compile(r"^ref(\d+)\.png$")
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def _check_key(sample_id: str) -> None:
    if not _KEY.match(sample_id):
        raise ValueError(
            f"sample id {sample_id!r} must use only letters, digits, '_' and '-' "
            "(WebDataset splits member names at the first dot)"
        )


@dataclass(frozen=True)
class S2VSample:
    """One training sample: a target clip, its caption and its reference images.

    `video` and each entry of `references` is a file path (folder form) or the file's bytes (tar form).
    `meta` is the decoded `meta/<id>.json`, or None for a folder in the reference repo's layout.
    """

    id: str
    caption: str
    video: Path | bytes
    references: tuple[Path | bytes, ...]
    meta: dict | None = field(default=None, compare=False)

    def video_bytes(self) -> bytes:
        return self.video.read_bytes() if isinstance(self.video, Path) else self.video

    def read_video(self) -> tuple[np.ndarray, float]:
        """Decode the clip. Returns (frames (F, H, W, 3) uint8 RGB, fps)."""
        if isinstance(self.video, Path):
            return read_video(self.video)
        import av

        with av.open(io.BytesIO(self.video)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        if not frames:
            raise ValueError(f"sample {self.id}: video has 0 frames")
        return np.stack(frames), fps

    def video_info(self) -> dict:
        """fps, num_frames, width, height: from meta when present, else probed from the video."""
        if self.meta is not None and all(k in self.meta for k in ("fps", "num_frames", "width", "height")):
            return {k: self.meta[k] for k in ("fps", "num_frames", "width", "height")}
        if isinstance(self.video, Path):
            info = probe_video(self.video)
            return {
                "fps": info.fps,
                "num_frames": info.num_frames,
                "width": info.width,
                "height": info.height,
            }
        frames, fps = self.read_video()
        return {"fps": fps, "num_frames": len(frames), "width": frames.shape[2], "height": frames.shape[1]}

    def reference_images(self) -> list[Image.Image]:
        """References as RGB images, read by `images.open_image` and composited on white (docs/model.md#3-reference-preprocessing)."""
        images = []
        for index, ref in enumerate(self.references, start=1):
            label = f"sample {self.id}: reference {index}"
            if isinstance(ref, bytes):
                label += " (from a tar shard)"
            images.append(on_white(open_image(ref, label=label)))
        return images

    @property
    def subjects(self) -> list[dict]:
        """Per-reference metadata (label, variant, backend, source); empty without meta."""
        return list((self.meta or {}).get("subjects", []))


def _read_caption(text: str, where: str) -> str:
    caption = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not caption:
        raise ValueError(f"{where}: caption is empty; put the caption on the first line")
    return caption


def _ref_index(name: str) -> int | None:
    match = _REF_NAME.match(name)
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------- reading


def read_folder_sample(root: str | os.PathLike, sample_id: str) -> S2VSample:
    """Read one sample of a folder-form dataset, with a clear error for each missing part."""
    root = Path(root)
    video = root / "videos" / f"{sample_id}.mp4"
    if not video.is_file():
        raise FileNotFoundError(f"sample {sample_id}: video {video} does not exist")
    label = root / "labels" / f"{sample_id}.txt"
    if not label.is_file():
        raise FileNotFoundError(f"sample {sample_id}: caption file {label} does not exist")
    caption = _read_caption(label.read_text(encoding="utf-8"), f"caption file {label}")
    ref_dir = root / "references" / sample_id
    if not ref_dir.is_dir():
        raise FileNotFoundError(f"sample {sample_id}: reference folder {ref_dir} does not exist")
    refs = sorted(
        (p for p in ref_dir.iterdir() if _ref_index(p.name) is not None), key=lambda p: _ref_index(p.name)
    )
    if not refs:
        raise FileNotFoundError(f"sample {sample_id}: reference folder {ref_dir} holds no ref<N>.png")
    meta_path = root / "meta" / f"{sample_id}.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
    return S2VSample(id=sample_id, caption=caption, video=video, references=tuple(refs), meta=meta)


def iter_folder(root: str | os.PathLike) -> Iterator[S2VSample]:
    root = Path(root)
    videos = root / "videos"
    if not videos.is_dir():
        raise FileNotFoundError(f"{root} is not an S2V folder: {videos} does not exist")
    for video in sorted(v for v in videos.glob("*.mp4") if not is_temporary(v)):
        yield read_folder_sample(root, video.stem)


def iter_tar(path: str | os.PathLike) -> Iterator[S2VSample]:
    """Read the samples of one WebDataset tar shard, in the order they were written."""
    path = Path(path)
    groups: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = Path(member.name).name.partition(".")
                data = tar.extractfile(member)
                groups.setdefault(key, {})[ext] = data.read() if data is not None else b""
    except tarfile.TarError as error:
        raise ValueError(f"shard {path} is not a readable tar: {error}") from error
    for key, parts in groups.items():
        where = f"shard {path}, sample {key}"
        if "mp4" not in parts:
            raise FileNotFoundError(f"{where}: no {key}.mp4 (video) in the shard")
        if "txt" not in parts:
            raise FileNotFoundError(f"{where}: no {key}.txt (caption) in the shard")
        caption = _read_caption(parts["txt"].decode("utf-8"), where)
        refs = sorted(((int(e[3:-4]), d) for e, d in parts.items() if re.match(r"^ref\d+\.png$", e)))
        if not refs:
            raise FileNotFoundError(f"{where}: no {key}.ref<N>.png (references) in the shard")
        meta = json.loads(parts["json"].decode("utf-8")) if "json" in parts else None
        yield S2VSample(
            id=key, caption=caption, video=parts["mp4"], references=tuple(d for _, d in refs), meta=meta
        )


def _expand(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        return [Path(source)]
    return [Path(s) for s in source]


def iter_samples(source: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[S2VSample]:
    """Iterate samples of a folder-form dataset, a tar shard, a folder of shards, or a list of these."""
    for path in _expand(source):
        if path.is_file() and path.suffix == ".tar":
            yield from iter_tar(path)
        elif path.is_dir() and (path / "videos").is_dir():
            yield from iter_folder(path)
        elif path.is_dir() and any(not is_temporary(p) for p in path.glob("*.tar")):
            for shard in sorted(p for p in path.glob("*.tar") if not is_temporary(p)):
                yield from iter_tar(shard)
        else:
            raise FileNotFoundError(
                f"{path} is neither an S2V folder (with videos/), a .tar shard, nor a folder of .tar shards"
            )


# ---------------------------------------------------------------------------------------------- writing


def _png_bytes(image: Image.Image | np.ndarray | str | os.PathLike) -> bytes:
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _video_bytes(video: str | os.PathLike | bytes) -> bytes:
    return video if isinstance(video, bytes) else Path(video).read_bytes()


def write_folder_sample(
    root: str | os.PathLike,
    sample_id: str,
    video: str | os.PathLike | bytes,
    caption: str,
    references: list[Image.Image | np.ndarray | str | os.PathLike],
    meta: dict | None = None,
) -> None:
    """Write one sample in folder form; every file is written atomically, the meta JSON last."""
    _check_key(sample_id)
    if not caption.strip():
        raise ValueError(f"sample {sample_id}: caption is empty")
    if not references:
        raise ValueError(f"sample {sample_id}: at least one reference is needed")
    root = Path(root)
    with atomic_path(root / "videos" / f"{sample_id}.mp4") as temporary:
        temporary.write_bytes(_video_bytes(video))
    write_text_atomic(root / "labels" / f"{sample_id}.txt", caption.strip().splitlines()[0] + "\n")
    ref_dir = root / "references" / sample_id
    ref_dir.mkdir(parents=True, exist_ok=True)
    for stale in ref_dir.glob("ref*.png"):
        if (_ref_index(stale.name) or 0) > len(references):
            stale.unlink()
    for index, ref in enumerate(references, start=1):
        with atomic_path(ref_dir / f"ref{index}.png") as temporary:
            temporary.write_bytes(_png_bytes(ref))
    if meta is not None:
        write_json_atomic(root / "meta" / f"{sample_id}.json", meta)


def remove_folder_sample(root: str | os.PathLike, sample_id: str) -> None:
    """Delete the files `write_folder_sample` writes for `sample_id`, and nothing else.

    Those are `references/<id>/ref<N>.png` (the folder goes too once empty), `labels/<id>.txt`,
    `meta/<id>.json` and, last, `videos/<id>.mp4`: a removal cut short leaves the video, so the
    sample is still found and removed by the next attempt. Missing files are skipped.
    """
    _check_key(sample_id)
    root = Path(root)
    ref_dir = root / "references" / sample_id
    if ref_dir.is_dir():
        for ref in ref_dir.iterdir():
            if _ref_index(ref.name) is not None:
                ref.unlink()
        if not any(ref_dir.iterdir()):
            ref_dir.rmdir()
    for path in (
        root / "labels" / f"{sample_id}.txt",
        root / "meta" / f"{sample_id}.json",
        root / "videos" / f"{sample_id}.mp4",
    ):
        path.unlink(missing_ok=True)


class ShardWriter:
    """Write samples into WebDataset tar shards `<prefix>-000000.tar`, … of at most `max_samples` each.

    Each shard is written under a temporary name and renamed when it is closed, so a crash never
    leaves a truncated shard behind. Use as a context manager.
    """

    def __init__(self, directory: str | os.PathLike, max_samples: int = 1000, prefix: str = "shard"):
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        self.directory = Path(directory)
        self.max_samples = max_samples
        self.prefix = prefix
        self.shards: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._context = None
        self._count = 0

    def existing_shards(self) -> list[Path]:
        """The files in the folder named as this writer names its shards (`<prefix>-000000.tar`, ...)."""
        if not self.directory.is_dir():
            return []
        own_name = re.compile(rf"{re.escape(self.prefix)}-\d{{6,}}\.tar")
        return sorted(p for p in self.directory.iterdir() if own_name.fullmatch(p.name) and p.is_file())

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(commit=exc_type is None)

    def _open(self) -> None:
        target = self.directory / f"{self.prefix}-{len(self.shards):06d}.tar"
        self._context = atomic_path(target)
        temporary = self._context.__enter__()
        self._tar = tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT)
        self.shards.append(target)
        self._count = 0

    def _close(self, commit: bool = True) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        if commit:
            self._context.__exit__(None, None, None)
        else:
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
            self.shards.pop()

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0  # reproducible shards
        self._tar.addfile(info, io.BytesIO(data))

    def write(
        self,
        sample_id: str,
        video: str | os.PathLike | bytes,
        caption: str,
        references: list[Image.Image | np.ndarray | str | os.PathLike | bytes],
        meta: dict | None = None,
    ) -> None:
        _check_key(sample_id)
        if not caption.strip():
            raise ValueError(f"sample {sample_id}: caption is empty")
        if not references:
            raise ValueError(f"sample {sample_id}: at least one reference is needed")
        if self._tar is None or self._count >= self.max_samples:
            self._close()
            self._open()
        self._add(f"{sample_id}.mp4", _video_bytes(video))
        self._add(f"{sample_id}.txt", (caption.strip().splitlines()[0] + "\n").encode("utf-8"))
        for index, ref in enumerate(references, start=1):
            self._add(f"{sample_id}.ref{index}.png", ref if isinstance(ref, bytes) else _png_bytes(ref))
        if meta is not None:
            self._add(f"{sample_id}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
        self._count += 1

    def write_sample(self, sample: S2VSample) -> None:
        """Copy a sample read by `iter_samples` (folder → shards)."""
        refs = [r.read_bytes() if isinstance(r, Path) else r for r in sample.references]
        self.write(sample.id, sample.video_bytes(), sample.caption, refs, sample.meta)
