"""Paths read from files stay inside the folder the user named."""

from __future__ import annotations

import os
from pathlib import Path


def inside_folder(folder: Path, name: str, source: Path) -> Path:
    """`folder / name` for a file name read from `source`, refused when it leads outside `folder`.

    The check is on the name (absolute, or climbing with `..`), not on resolved links, so a Hub
    cache snapshot whose files are symlinks into its blob store still loads.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source} names {name!r} where a file or folder name inside {folder} belongs")
    if Path(name).is_absolute() or ".." in Path(os.path.normpath(name)).parts:
        raise ValueError(
            f"{source} names {name!r}, which is outside {folder}; refusing to read it: "
            "what a file names must sit inside its own folder"
        )
    return folder / name
