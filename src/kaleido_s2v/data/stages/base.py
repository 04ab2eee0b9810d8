"""What every stage shares: the result type, the call context and the fingerprint.

A stage is a small class configured in its constructor and called on one item. It returns a
`StageResult` whose status is `ok`, `rejected` (the item is bad data, with a reason) or `failed`
(an unexpected error). The backend is chosen explicitly in the stage's config and recorded in
every result; a stage never falls back to another backend on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

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


def config_dict(config: object) -> dict:
    if not is_dataclass(config):
        raise TypeError(f"stage config must be a dataclass, got {type(config).__name__}")
    return asdict(config)


def fingerprint(*parts: object) -> str:
    """sha256 of the canonical JSON of `parts` (dicts with sorted keys)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def check_backend(stage: str, backend: str, choices: tuple[str, ...]) -> None:
    if backend not in choices:
        raise ValueError(f"{stage}: unknown backend {backend!r}; choose one of {', '.join(choices)}")


def import_backends():
    """The model wrappers module, with an error naming the extra when it is unavailable."""
    try:
        from kaleido_s2v.data import backends
    except ImportError as error:
        raise ImportError(
            f'model backends are unavailable ({error}); install them with pip install "kaleido-s2v[data]"'
        ) from error
    return backends


def require(stage: str, *modules: str) -> None:
    """Fail at construction, with the extra to install, when an optional module is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f'{stage} needs {", ".join(missing)}: pip install "kaleido-s2v[data]"')
