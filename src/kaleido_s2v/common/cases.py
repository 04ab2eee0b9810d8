"""Case files (docs/contracts.md#1-case-files): the one parser shared by `generate --batch FILE` and `eval --cases FILE`.

Two formats, chosen by the file's suffix:

- `.jsonl`: one JSON object per line,
  `{"id": "cat_walks", "prompt": "...", "references": [{"path": "refs/cat.png", "label": "cat"}],
  "negative_prompt": "...", "seed": 0}` (`negative_prompt` and `seed` optional; a reference without
  `label` takes its file stem; a case without `id` takes its padded line number).
- anything else: the reference repo's `prompt@@img1@@img2…` lines. A line's id is its 1-based
  physical line number padded to 5 digits (`00007`); blank lines count and are skipped. Each
  label is the image's file stem.

Reference paths are relative to the case file. A bad line becomes a `CaseError` carrying its line
number and reason; every other line is still returned, in file order. Bytes that are not UTF-8 spoil
only their own line: they are read as surrogate escapes, which `check_text` refuses in a prompt,
negative prompt, id or label.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from kaleido_s2v.common.atomic import write_text_atomic

JSONL_SUFFIX = ".jsonl"
LINE_SEPARATOR = "@@"
_FORBIDDEN_ID_CHARACTERS = frozenset('/\\:*?"<>|\0\n\r\t')
# An id names `<id>.mp4`, `<id>.json` and their atomic temporaries (`.<id>.1f2e3d4c.tmp.json`, id + 19
# bytes); file names are at most 255 bytes (Linux NAME_MAX), so 200 leaves room for every derived name.
MAX_ID_BYTES = 200


@dataclass(frozen=True)
class CaseReference:
    """One reference image of a case: an absolute (resolved) path and the subject's label."""

    path: Path
    label: str


@dataclass(frozen=True)
class Case:
    """One generation/evaluation case. `id` names its outputs: `<out_dir>/<id>.mp4` and `.json`."""

    id: str
    prompt: str
    references: list[CaseReference]
    negative_prompt: str | None = None
    seed: int | None = None
    line: int = field(default=0, compare=False)  # 1-based line in the case file (0: built in code)

    @property
    def labels(self) -> list[str]:
        return [reference.label for reference in self.references]

    def to_json(self, relative_to: str | os.PathLike | None = None) -> dict:
        """The `.jsonl` form of this case; paths relative to `relative_to` when given."""
        references = []
        for reference in self.references:
            path = Path(reference.path)
            if relative_to is not None:
                path = Path(os.path.relpath(path, Path(relative_to)))
            references.append({"path": path.as_posix(), "label": reference.label})
        payload: dict = {"id": self.id, "prompt": self.prompt, "references": references}
        if self.negative_prompt is not None:
            payload["negative_prompt"] = self.negative_prompt
        if self.seed is not None:
            payload["seed"] = self.seed
        return payload


@dataclass(frozen=True)
class CaseError:
    """A case-file line that could not be read; `id` is set when the line named one."""

    line: int
    reason: str
    id: str | None = None

    def __str__(self) -> str:
        named = f" (case {self.id!r})" if self.id is not None else ""
        return f"line {self.line}{named}: {self.reason}"


def read_cases(path: str | os.PathLike, check_files: bool = True) -> list[Case | CaseError]:
    """Parse a case file into cases and per-line errors, in file order.

    check_files: report a line whose reference image does not exist as a `CaseError` (set False
        to parse a case list whose images are not on this machine).
    Raises FileNotFoundError only when the case file itself is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"case file {path} does not exist")
    base = path.resolve().parent
    parse_line = _parse_jsonl_line if path.suffix.lower() == JSONL_SUFFIX else _parse_at_line
    items: list[Case | CaseError] = []
    seen_ids: dict[str, int] = {}
    text = path.read_text(encoding="utf-8-sig", errors="surrogateescape")  # see check_text
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            case = parse_line(raw, number, base)
        except _LineError as error:
            items.append(CaseError(line=number, reason=str(error), id=error.case_id))
            continue
        if case.id in seen_ids:
            items.append(
                CaseError(
                    line=number,
                    reason=f"duplicate id {case.id!r} (first on line {seen_ids[case.id]}); ids name the "
                    "output files, so each must be unique",
                    id=case.id,
                )
            )
            continue
        missing = [ref for ref in case.references if check_files and not ref.path.is_file()]
        if missing:
            names = ", ".join(str(ref.path) for ref in missing)
            items.append(
                CaseError(
                    line=number,
                    reason=f"reference image not found: {names} (paths are relative to {base})",
                    id=case.id,
                )
            )
            continue
        seen_ids[case.id] = number
        items.append(case)
    return items


def split_cases(items: list[Case | CaseError]) -> tuple[list[Case], list[CaseError]]:
    """Separate `read_cases`' result into (cases, errors)."""
    cases = [item for item in items if isinstance(item, Case)]
    errors = [item for item in items if isinstance(item, CaseError)]
    return cases, errors


def write_cases_jsonl(path: str | os.PathLike, cases: list[Case]) -> Path:
    """Write cases as `.jsonl` (atomically), reference paths relative to the file's folder."""
    path = Path(path)
    if path.suffix.lower() != JSONL_SUFFIX:
        raise ValueError(f"{path}: a case list written as JSON lines must end in {JSONL_SUFFIX}")
    folder = path.resolve().parent
    lines = [json.dumps(case.to_json(relative_to=folder), ensure_ascii=False) for case in cases]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return path


def check_text(text: str, name: str) -> None:
    """Refuse text that is not valid Unicode: one holding a lone surrogate (U+D800-U+DFFF).

    A surrogate is what Python makes of bytes that are not UTF-8 (in command-line arguments, or in a
    case file: U+DC80-U+DCFF stand for the bytes 0x80-0xFF), or of a `\\ud800` escape in JSON. No
    tokenizer or file can encode it, and guessing the intended encoding would silently change the
    text, so the ValueError names `name` and the (1-based) position of the first bad character.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        raise ValueError(
            f"{name}: character {error.start + 1} (U+{code:04X}) is not valid text (a byte that is not "
            "UTF-8, or half of a surrogate pair); give the text in UTF-8"
        ) from None


class _LineError(ValueError):
    def __init__(self, reason: str, case_id: str | None = None) -> None:
        super().__init__(reason)
        self.case_id = case_id


def line_id(number: int) -> str:
    """The id of a `prompt@@img…` line: its 1-based line number padded to 5 digits."""
    return f"{number:05d}"


def _check_line_text(text: str, name: str, case_id: str | None) -> None:
    """`check_text` for a field of a case-file line: its error becomes the line's `CaseError`."""
    try:
        check_text(text, name)
    except ValueError as error:
        raise _LineError(str(error), case_id) from None


def _check_id(case_id: object) -> str:
    """An id names output files: valid text, at most MAX_ID_BYTES in UTF-8, no path or reserved characters."""
    if not isinstance(case_id, str) or not case_id.strip():
        raise _LineError(f"'id' must be a non-empty string, got {case_id!r}")
    _check_line_text(case_id, "'id'", None)
    size = len(case_id.encode("utf-8"))
    if size > MAX_ID_BYTES:
        raise _LineError(
            f"id {case_id[:40]!r}... is {size} bytes in UTF-8; ids name output files, so use at most "
            f"{MAX_ID_BYTES}"
        )
    if case_id != case_id.strip() or case_id in (".", "..") or case_id.startswith("."):
        raise _LineError(f"id {case_id!r} cannot name a file; use letters, digits, '_', '-' and '.'")
    bad = sorted(set(case_id) & _FORBIDDEN_ID_CHARACTERS)
    if bad:
        raise _LineError(f"id {case_id!r} contains {bad}, which cannot appear in a file name", case_id)
    return case_id


def _parse_jsonl_line(raw: str, number: int, base: Path) -> Case:
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as error:
        raise _LineError(f"not valid JSON ({error.msg} at column {error.colno})") from error
    if not isinstance(payload, dict):
        raise _LineError(f"expected a JSON object, got {type(payload).__name__}")
    case_id = _check_id(payload["id"]) if "id" in payload else line_id(number)
    known = {"id", "prompt", "references", "negative_prompt", "seed"}
    unknown = sorted(set(payload) - known)
    if unknown:
        raise _LineError(f"unknown field(s) {unknown}; allowed: {sorted(known)}", case_id)
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _LineError(f"'prompt' must be a non-empty string, got {prompt!r}", case_id)
    _check_line_text(prompt, "'prompt'", case_id)
    raw_references = payload.get("references")
    if not isinstance(raw_references, list) or not raw_references:
        raise _LineError(
            f"'references' must be a non-empty list of {{'path', 'label'}} objects, got {raw_references!r}",
            case_id,
        )
    references = []
    for index, entry in enumerate(raw_references, start=1):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise _LineError(
                f"reference {index} must be an object with a 'path' string, got {entry!r}", case_id
            )
        label = entry.get("label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise _LineError(f"reference {index}: 'label' must be a non-empty string, got {label!r}", case_id)
        if label is not None:
            _check_line_text(label, f"reference {index}: 'label'", case_id)
        resolved = _resolve(entry["path"], base)
        references.append(CaseReference(path=resolved, label=label.strip() if label else resolved.stem))
    negative = payload.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _LineError(f"'negative_prompt' must be a string, got {negative!r}", case_id)
    if negative is not None:
        _check_line_text(negative, "'negative_prompt'", case_id)
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise _LineError(f"'seed' must be a non-negative integer, got {seed!r}", case_id)
    return Case(
        id=case_id,
        prompt=prompt,
        references=references,
        negative_prompt=negative,
        seed=seed,
        line=number,
    )


def _parse_at_line(raw: str, number: int, base: Path) -> Case:
    case_id = line_id(number)
    parts = [part.strip() for part in raw.strip().split(LINE_SEPARATOR)]
    prompt, images = parts[0], parts[1:]
    if not prompt:
        raise _LineError("empty prompt before the first '@@'", case_id)
    _check_line_text(prompt, "prompt", case_id)
    if not images:
        raise _LineError("no reference images; expected 'prompt@@image1[@@image2...]'", case_id)
    if any(not image for image in images):
        raise _LineError("an empty image path between '@@' separators", case_id)
    references = [CaseReference(path=(p := _resolve(image, base)), label=p.stem) for image in images]
    return Case(id=case_id, prompt=prompt, references=references, line=number)


def _resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    # normpath, not resolve: a symlinked image keeps its own name (its stem is the label)
    return Path(os.path.normpath(candidate if candidate.is_absolute() else base / candidate))
