"""What every stage shares: the stage base class, the result type, the call context and the fingerprint.

A stage is a small class configured in its constructor and called on one item. It returns a
`StageResult` whose status is `ok`, `rejected` (the item is bad data, with a reason) or `failed`
(an unexpected error). The backend is chosen explicitly in the stage's config (`choose_backend`)
and recorded in every result; a stage never falls back to another backend on its own.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TypeVar

from kaleido_s2v.common.hashing import json_digest
from kaleido_s2v.data import backends  # cheap: the wrappers and torch load on first use of a name

OK, REJECTED, FAILED = "ok", "rejected", "failed"


@dataclass(frozen=True)
class StageResult:
    status: str
    reason: str = ""
    data: dict = field(default_factory=dict)  # JSON-serialisable
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run folder

    @classmethod
    def ok(cls, data: dict, artifacts: dict[str, str] | None = None) -> StageResult:
        return cls(OK, "", data, artifacts or {})

    @classmethod
    def reject(cls, reason: str, data: dict | None = None) -> StageResult:
        return cls(REJECTED, reason, data or {}, {})


@dataclass(frozen=True)
class Context:
    """What a stage may read besides its item.

    upstream: this item's earlier stage results, stage name -> data.
    siblings: for group stages, the other items of the same source video, item id -> (item, upstream).
    artifact_dir: where this call may write files (relative to `run_dir`), unique per item and fingerprint.
    """

    run_dir: Path
    artifact_dir: Path
    upstream: dict[str, dict]
    siblings: dict[str, tuple[dict, dict[str, dict]]] = field(default_factory=dict)
    fingerprint: str = ""

    def path(self, relative: str | os.PathLike) -> Path:
        return self.run_dir / relative

    def new_artifact(self, name: str) -> tuple[Path, str]:
        """(absolute path to write, relative path to record) for an artifact of this call."""
        relative = self.artifact_dir / name
        absolute = self.run_dir / relative
        absolute.parent.mkdir(parents=True, exist_ok=True)
        return absolute, relative.as_posix()


class Stage:
    """What the runner asks of every stage; each stage sets `name` and `config` and implements `run`.

    group: True when `run` reads the other items of the same source video (`Context.siblings`).
    """

    name: str
    group: bool = False

    def fingerprint_parts(self) -> dict:
        """What, besides the item, decides this stage's result: its backend, its config and, when the
        config names a model folder (`model_path`), that folder's files."""
        parts = {"backend": self.config.backend, "config": config_dict(self.config)}
        if hasattr(self.config, "model_path"):
            parts["model"] = model_files_fingerprint(self.config.model_path)
        return parts

    def run(self, item: dict, context: Context) -> StageResult:
        """This stage on one item: bad data is a rejection with its reason, not an exception."""
        raise NotImplementedError

    def next_items(self, item: dict, data: dict) -> list[dict]:
        """The items the later stages work on once `item` passed this stage with `data`.

        The rule: an item goes on as itself. A stage that turns one item into several (`split`: a
        video into its clips) returns the new items; the runner gives each a seed and the fingerprint
        of the item it came from.
        """
        return [item]

    def funnel_details(self, rows: dict[str, dict]) -> dict:
        """Figures this stage adds to its funnel entry, from its manifest rows (item id -> row)."""
        return {}


def config_dict(config: object) -> dict:
    if not is_dataclass(config):
        raise TypeError(f"stage config must be a dataclass, got {type(config).__name__}")
    return asdict(config)


def fingerprint(*parts: object) -> str:
    """The sha256 of `parts` as compact JSON with sorted keys (`json_digest`)."""
    return json_digest(list(parts), compact=True)


def model_files_fingerprint(path: str | None) -> str:
    """Fingerprint of a local model folder or file: file names and sizes (cheap: weights are not hashed)."""
    if not path:
        return ""
    root = Path(path)
    if not root.exists():
        return f"missing:{path}"
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return fingerprint(
        [(p.relative_to(root).as_posix() if p != root else p.name, p.stat().st_size) for p in files]
    )


def require_model_path(stage: str, backend: str, path: str | None) -> str:
    if not path:
        raise ValueError(
            f"{stage}: backend {backend!r} needs model_path (a local folder); set {stage}.model_path"
        )
    if not Path(path).exists():
        raise FileNotFoundError(f"{stage}: model_path {path} does not exist")
    return path


Choice = TypeVar("Choice")


def choose_backend(stage: str, backend: str, choices: Mapping[str, Choice]) -> Choice:
    """The entry of `choices` (backend name -> what implements it) that `backend` names.

    Every stage picks its backends this way, from one mapping per choice, so an unknown name
    always gets the same error, listing the names there are.
    """
    if backend not in choices:
        raise ValueError(f"{stage}: unknown backend {backend!r}; choose one of {', '.join(choices)}")
    return choices[backend]


def model_class(stage: str, name: str) -> type:
    """The model wrapper class `name` of `kaleido_s2v.data.backends`, loaded now (with torch and
    transformers), with an error naming the extra when a library it needs is missing."""
    try:
        return getattr(backends, name)
    except ImportError as error:
        raise ImportError(
            f'{stage}: the model backends are unavailable ({error}); install them with pip install "kaleido-s2v[data]"'
        ) from error


def require(stage: str, *modules: str) -> None:
    """Fail at construction, with the extra to install, when an optional module is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f'{stage} needs {", ".join(missing)}: pip install "kaleido-s2v[data]"')
