"""OpenS2V-Eval's case lists (`Open-Domain_Eval.json`, ...) converted into our case schema.

The published file maps each case id to `{"img_paths": [...], "prompt": "...", "class_label":
[...], ...}`, image paths relative to the OpenS2V-Eval folder (the one holding `Images/`). Videos
are named `<case id>.mp4`, as the benchmark expects. Figures from our runner are labelled "not
comparable to the leaderboard": the benchmark scores with YOLO-World, GME and GPT-4o.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kaleido_s2v.common.cases import Case, CaseError, CaseReference, write_cases_jsonl


def convert_opens2v(
    eval_json: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> tuple[list[Case], list[CaseError]]:
    """Read an OpenS2V-Eval JSON; `image_root` defaults to the JSON's folder.

    A case whose entry is malformed or whose images are missing becomes a `CaseError` (its `line`
    is the entry's 1-based position in the file); the others are returned.
    """
    eval_json = Path(eval_json)
    if not eval_json.is_file():
        raise FileNotFoundError(f"OpenS2V-Eval case list {eval_json} does not exist")
    try:
        document = json.loads(eval_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{eval_json} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise ValueError(
            f"{eval_json}: expected an object mapping case ids to entries, got {type(document).__name__}"
        )
    root = Path(image_root) if image_root is not None else eval_json.resolve().parent
    cases: list[Case] = []
    errors: list[CaseError] = []
    for position, (case_id, entry) in enumerate(document.items(), start=1):
        reason = _check_entry(entry)
        if reason is None:
            paths = [root / path for path in entry["img_paths"]]
            labels = entry.get("class_label") or [path.stem for path in paths]
            if len(labels) != len(paths):
                reason = f"{len(labels)} class labels for {len(paths)} images"
            else:
                missing = [str(path) for path in paths if not path.is_file()]
                if missing:
                    reason = f"reference image not found: {', '.join(missing)} (image root {root})"
        if reason is not None:
            errors.append(CaseError(line=position, reason=reason, id=str(case_id)))
            continue
        references = [
            CaseReference(path=path, label=str(label)) for path, label in zip(paths, labels, strict=True)
        ]
        cases.append(Case(id=str(case_id), prompt=entry["prompt"], references=references, line=position))
    return cases, errors


def _check_entry(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return f"entry must be an object, got {type(entry).__name__}"
    if not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
        return "'prompt' must be a non-empty string"
    paths = entry.get("img_paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        return "'img_paths' must be a non-empty list of image paths"
    labels = entry.get("class_label")
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels)
    ):
        return "'class_label' must be a list of strings"
    return None


def write_opens2v_cases(
    eval_json: str | os.PathLike, out_jsonl: str | os.PathLike, image_root: str | os.PathLike | None = None
) -> tuple[list[Case], list[CaseError]]:
    """Convert and write the cases as `.jsonl` (usable by `generate --batch` and `eval --cases`)."""
    cases, errors = convert_opens2v(eval_json, image_root)
    write_cases_jsonl(out_jsonl, cases)
    return cases, errors
