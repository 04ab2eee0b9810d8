"""Atomic writes: write to a new temporary name beside the target, then rename.

The temporary is created exclusively (`O_EXCL` for a file, `mkdir` for a folder) under a name
unique to the call, so it can never be a file someone else left there: on failure only what this
call created is removed, and a success moves nothing but it onto the target.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _exclusive_temporary(target: Path, directory: bool) -> Path:
    """A new empty file or folder `.<stem>.<random>.tmp<suffix>` beside `target`, created by this call.

    The suffix is kept (`.clip.1f2e3d4c.tmp.mp4`) so writers that infer the format from the
    extension (PyAV, PIL) still work. A process killed mid-write can leave one behind: readers that
    list a folder skip such names with `is_temporary`.
    """
    while True:
        candidate = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            if directory:
                candidate.mkdir()
            else:
                os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return candidate
        except FileExistsError:
            continue


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named like an `atomic_path` temporary (hidden, with `.tmp` before the suffix)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(
    path: str | os.PathLike, directory: bool = False, replace_folder: bool = False
) -> Iterator[Path]:
    """Yield a new temporary path beside `path` (an empty file, or an empty folder with
    `directory=True`); when the block succeeds, rename it onto `path`.

    On error the temporary is removed and the target is left untouched. An existing target file is
    replaced. An existing target folder is replaced only with `replace_folder=True` (the caller has
    checked it is its own); otherwise a non-empty one makes the rename fail and nothing is lost.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _exclusive_temporary(target, directory)
    try:
        yield temporary
        if replace_folder and target.is_dir() and not target.is_symlink():
            retired = _exclusive_temporary(target, directory=True)
            os.replace(target, retired)  # renaming a folder onto an empty one replaces it
            try:
                os.replace(temporary, target)
            except BaseException:
                os.replace(retired, target)
                raise
            shutil.rmtree(retired)
        else:
            os.replace(temporary, target)
    except BaseException:
        _remove(temporary)
        raise


def write_json_atomic(path: str | os.PathLike, payload: object) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)
