"""What makes a training checkpoint folder complete and intact.

A save writes every file into `step-N.tmp/`, then `complete.json` last (rank 0, after a barrier), then
renames the folder to `step-N/`. `complete.json` lists every file of the checkpoint with its size and
the sha256 that the rank which wrote it computed right after writing it (from the page cache, so no
rank re-reads another's shards):

    {"format": 1, "files": {"__0_0.distcp": {"bytes": 123, "sha256": "..."}, ...}}

Resume checks candidates newest first. A candidate is intact when its marker parses and every listed
file exists with the listed size (`size_problems`: a stat per file, cheap at any scale); the one that
is loaded also has its digests checked (`digest_problems`, each rank hashing a share of the files).
"""

from __future__ import annotations

import json
from pathlib import Path

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.common.hashing import file_sha256

COMPLETE_MARKER = "complete.json"
MARKER_FORMAT = 1
TRAINER_STATE = "trainer_state.json"

FileRecord = dict[str, int | str]  # {"bytes": size, "sha256": hex digest}


def rng_state_file(folder: Path, rank: int) -> Path:
    """Where rank `rank` keeps its torch RNG state in a checkpoint folder."""
    return folder / f"rng-rank{rank}.safetensors"


def rank_files(folder: Path, rank: int) -> list[Path]:
    """The files rank `rank` wrote into a checkpoint folder: its DCP shards (`__<rank>_<i>.distcp`) and
    RNG state; rank 0 also owns the DCP `.metadata` and `TRAINER_STATE`."""
    names = [p for p in folder.glob(f"__{rank}_*.distcp")] + [rng_state_file(folder, rank)]
    if rank == 0:
        names += [folder / ".metadata", folder / TRAINER_STATE]
    return sorted(p for p in names if p.is_file())


def describe_files(paths: list[Path]) -> dict[str, FileRecord]:
    """{file name: {"bytes", "sha256"}} for files that were just written."""
    return {path.name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)} for path in paths}


def write_complete_marker(folder: Path, files: dict[str, FileRecord]) -> None:
    """The last file a save writes: it lists every other file of the checkpoint."""
    write_json_atomic(folder / COMPLETE_MARKER, {"format": MARKER_FORMAT, "files": files})


def read_marker(folder: Path) -> dict[str, FileRecord] | None:
    """The files `complete.json` lists, or None when it is missing or unreadable."""
    try:
        marker = json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if marker.get("format") != MARKER_FORMAT or not isinstance(files, dict) or not files:
        return None
    return files


def size_problems(folder: Path) -> list[str]:
    """Why `folder` is not a complete checkpoint (empty list: it is), from the marker and file sizes."""
    files = read_marker(folder)
    if files is None:
        return [f"no readable {COMPLETE_MARKER} (an interrupted save, or written before checkpoints had one)"]
    problems = []
    for name, record in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != record.get("bytes"):
            problems.append(f"{name} has {path.stat().st_size} bytes, {record.get('bytes')} were written")
    return problems


def digest_problems(folder: Path, share: int, shares: int) -> list[str]:
    """Digest mismatches among this process's share of the listed files (file i goes to i % shares)."""
    files = read_marker(folder) or {}
    problems = []
    for index, (name, record) in enumerate(sorted(files.items())):
        if index % shares == share and file_sha256(folder / name) != record.get("sha256"):
            problems.append(f"{name} does not have the sha256 it was written with")
    return problems
