"""The run manifest: one Parquet row per (item, stage, fingerprint) result.

The fingerprint of a result hashes the stage's name, backend, model files and config with the
fingerprint of the item's upstream result, so a changed threshold changes the fingerprint of that
stage and of everything after it, and nothing before. Rows are appended as small Parquet parts
written atomically (`manifest/part-*.parquet`); a crash loses at most the item in flight. `compact`
merges the parts into one. Two runs are equal (docs/contracts.md#9-resume-per-command) when `comparable_rows` agree.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from kaleido_s2v.common.atomic import atomic_path
from kaleido_s2v.common.hashing import file_sha256

COLUMNS = (
    "item_id",
    "stage",
    "fingerprint",
    "status",
    "reason",
    "backend",
    "parent_id",
    "seed",
    "data",
    "artifacts",
    "artifact_sha256",
    "seconds",
    "worker",
    "written_at",
)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError('the manifest needs pyarrow: pip install "kaleido-s2v[data]"') from error
    return pa, pq


class Manifest:
    """Rows of one run folder, newest part wins for a repeated (item, stage, fingerprint)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.directory = Path(run_dir) / "manifest"
        self.rows: dict[tuple[str, str, str], dict] = {}
        self._load()

    def _parts(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.parquet")) if self.directory.is_dir() else []

    def _load(self) -> None:
        _, pq = _pyarrow()
        for part in self._parts():
            for row in pq.read_table(part).to_pylist():
                self.rows[(row["item_id"], row["stage"], row["fingerprint"])] = row

    def get(self, item_id: str, stage: str, fingerprint: str) -> dict | None:
        return self.rows.get((item_id, stage, fingerprint))

    def item_ids(self) -> set[str]:
        """Every item id with a recorded result: the items the pipeline has run in this run folder."""
        return {item_id for item_id, _, _ in self.rows}

    def append(self, rows: list[dict]) -> None:
        """Record rows durably: one Parquet part, written under a temporary name and renamed."""
        if not rows:
            return
        pa, pq = _pyarrow()
        stamped = []
        for row in rows:
            missing = set(COLUMNS) - set(row) - {"written_at"}
            if missing:
                raise ValueError(f"manifest row for {row.get('item_id')} lacks {sorted(missing)}")
            stamped.append({**{k: row[k] for k in COLUMNS if k != "written_at"}, "written_at": time.time()})
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(self.directory / name) as temporary:
            pq.write_table(pa.Table.from_pylist(stamped), temporary)
        for row in stamped:
            self.rows[(row["item_id"], row["stage"], row["fingerprint"])] = row

    def compact(self) -> None:
        """Merge all parts into one (the new part is written before the old ones are removed)."""
        old = self._parts()
        if len(old) <= 1:
            return
        pa, pq = _pyarrow()
        ordered = sorted(self.rows.values(), key=lambda r: (r["stage"], r["item_id"], r["fingerprint"]))
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(self.directory / name) as temporary:
            pq.write_table(pa.Table.from_pylist(ordered), temporary)
        for part in old:
            part.unlink()

    def comparable_rows(self, current: set[tuple[str, str, str]] | None = None) -> list[tuple]:
        """(item id, stage, fingerprint, status, reason, artifact sha256s) sorted; timings and workers left out."""
        rows = [r for k, r in self.rows.items() if current is None or k in current]
        return sorted(
            (r["item_id"], r["stage"], r["fingerprint"], r["status"], r["reason"], r["artifact_sha256"])
            for r in rows
        )


def decode_row(row: dict) -> dict:
    """A manifest row with its JSON columns decoded."""
    return {
        **row,
        "data": json.loads(row["data"]),
        "artifacts": json.loads(row["artifacts"]),
        "artifact_sha256": json.loads(row["artifact_sha256"]),
    }


def changed_artifacts(row: dict, run_dir: str | os.PathLike) -> list[Path]:
    """The artifact files of `row` that no longer hold the bytes recorded with it, in name order.

    The rule: an artifact is intact when its file exists and its sha256 equals the one in the row's
    `artifact_sha256`; a missing, truncated or rewritten file (or one with no recorded digest) is changed.
    """
    recorded = json.loads(row["artifact_sha256"])
    changed = []
    for name, relative in sorted(json.loads(row["artifacts"]).items()):
        path = Path(run_dir) / relative
        if not path.is_file() or file_sha256(path) != recorded.get(name):
            changed.append(path)
    return changed
