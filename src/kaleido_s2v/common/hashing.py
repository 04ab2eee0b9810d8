"""Content digests: of files, and of JSON payloads (settings, cache keys, stage fingerprints)."""

from __future__ import annotations

import hashlib
import json
import os


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(payload: object, compact: bool = False) -> str:
    """The sha256 (64 hex digits) of `payload` written as JSON with sorted keys.

    The rule: `json.dumps(payload, sort_keys=True)` encoded as UTF-8; a value JSON cannot write (a
    Path, say) is written as its `str()`. `compact` drops the spaces after `,` and `:`; it exists
    because the data pipeline's fingerprints were recorded that way, and a digest must not change
    once manifests and caches are keyed by it. Callers that keep a shorter key slice the result.
    """
    separators = (",", ":") if compact else None
    text = json.dumps(payload, sort_keys=True, default=str, separators=separators)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
