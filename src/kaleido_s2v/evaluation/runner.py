"""`kaleido-s2v eval`: score a folder of `<id>.mp4` videos against a case file and write a report.

Per-video results are cached by (video sha256, case, metric config) under `<out>/cache/`, so a
rerun only scores what changed.

Each case stands alone: a bad case line, a missing, empty (0-byte), truncated or non-video file, a
video `scoring.check_video_fit` finds unfit (under 2 frames, or under 16 px a side), a reference
image that cannot be read (missing, not an image, a decompression bomb), or any other error while
scoring fails that case only. It is recorded with its reason (one line) in `errors` and
`failed_cases`, and every other case is still scored. A scored video whose size differs from the
run's, or whose case has a reference the backend found no subject in, is kept and recorded in
`warnings` (`size_warnings`, `subject_warnings`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import write_json_atomic, write_text_atomic
from kaleido_s2v.common.cases import Case, CaseError, read_cases, split_cases
from kaleido_s2v.common.hashing import file_sha256, json_digest
from kaleido_s2v.evaluation.config import EvalConfig
from kaleido_s2v.evaluation.report import write_report
from kaleido_s2v.evaluation.scoring import (
    SUBJECT_NOT_FOUND,
    Backend,
    VideoScore,
    check_video_fit,
    make_backend,
    score_video,
)
from kaleido_s2v.evaluation.summary import CASE_COLUMNS, MOTION_UNIFORM_CHANCE, case_row, summarise

CACHE_DIR = "cache"
CHANCE_STAGE = "chance control"  # an error at this stage leaves its case scored, only the control missing
UNAVAILABLE_OFFLINE = {
    "text_alignment": "not available offline: needs CLIP (the model backend with --clip)",
    "aesthetics": "not available offline: needs the LAION head on CLIP ViT-L/14 (--clip and --aesthetic)",
}


def cache_key(video_sha256: str, case: Case, config: EvalConfig) -> str:
    """sha256 of (video content, the case with its reference images' content, the metric config)."""
    references = []
    for reference in case.references:
        digest = file_sha256(reference.path) if Path(reference.path).is_file() else "missing"
        references.append([reference.label, digest])
    payload = {
        "video": video_sha256,
        "case": {"id": case.id, "prompt": case.prompt, "references": references},
        "config": config.fingerprint(),
    }
    return json_digest(payload)


@dataclass
class EvalResult:
    """What one run produced: scores by case id, the chance control's scores, the errors (one per
    failed case or failed chance control), the warnings about scored cases, and the backend's
    `models` (what ran in each role; None for a backend that runs no models)."""

    scores: dict[str, VideoScore] = field(default_factory=dict)
    chance: dict[str, VideoScore] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    cached: int = 0
    models: dict[str, str] | None = None


def _error(case: Case, stage: str, reason: str) -> dict:
    return {"case": case.id, "line": case.line, "stage": stage, "error": reason}


def failure_reason(error: Exception) -> str:
    """An exception as one line: the message alone for the ValueError / OSError this package raises
    on bad input (it names the file), else prefixed with the exception's type, which the message of an
    unexpected error may not say."""
    message = " ".join(str(error).split())
    if message and isinstance(error, (ValueError, OSError)):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def size_warnings(scored: list[tuple[Case, VideoScore]]) -> list[dict]:
    """One warning ({id, line, reason}) per scored video whose width x height differs from the run's
    size: the size most of the run's scored videos share (on a tie, the earliest case's).

    Cases carry no size, so the run sets it. Such a video (another resolution or aspect: from another
    run, or a generator's fallback) is still scored, since every figure is normalised by frame size,
    but the run's means then mix generation settings.
    """
    sizes = Counter((score.width, score.height) for _, score in scored)
    if len(sizes) < 2:
        return []
    (width, height), count = sizes.most_common(1)[0]
    return [
        {
            "id": case.id,
            "line": case.line,
            "reason": f"video {score.video} is {score.width}x{score.height}, not the run's "
            f"{width}x{height} ({count} of its {len(scored)} scored videos)",
        }
        for case, score in scored
        if (score.width, score.height) != (width, height)
    ]


def subject_warnings(scored: list[tuple[Case, VideoScore]]) -> list[dict]:
    """One warning ({id, line, reason}) per reference of a scored case whose subject the backend did
    not find: whether that reference has a background is unknown, so its decoupling is left out (it is
    not counted as a reference without background)."""
    return [
        {
            "id": case.id,
            "line": case.line,
            "reason": f"reference {subject.label!r}: {SUBJECT_NOT_FOUND}; its decoupling is left out",
        }
        for case, score in scored
        for subject in score.subjects
        if not subject.subject_found
    ]


def one_warning_per_case(warnings: list[dict]) -> list[dict]:
    """The warnings with each case's reasons joined by "; " into its first warning, in order: a
    scored case has at most one warning (`num_warnings` counts cases)."""
    merged: dict[str, dict] = {}
    for warning in warnings:
        if warning["id"] in merged:
            merged[warning["id"]]["reason"] += f"; {warning['reason']}"
        else:
            merged[warning["id"]] = dict(warning)
    return list(merged.values())


def _score_cached(
    video: Path, case: Case, config: EvalConfig, backend: Backend, cache: Path | None
) -> tuple[VideoScore, bool]:
    key_path = None
    if cache is not None:
        key_path = cache / f"{cache_key(file_sha256(video), case, config)}.json"
        if key_path.is_file():
            try:
                cached = VideoScore.from_json(json.loads(key_path.read_text()))
            except (json.JSONDecodeError, TypeError, KeyError):
                pass  # a damaged cache entry, or one that lacks a newer field, is recomputed
            else:  # an entry may predate the checks
                check_video_fit(cached.num_frames, cached.width, cached.height, str(video))
                return cached, True
    score = score_video(video, case, config, backend)
    if key_path is not None:
        write_json_atomic(key_path, score.to_json())
    return score, False


def derangement(count: int, seed: int = 0) -> list[int]:
    """A permutation with no fixed point (index i → another case's index); identity for count < 2."""
    if count < 2:
        return list(range(count))
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(count).tolist()
        if all(i != j for i, j in enumerate(order)):
            return order


def evaluate(
    videos: str | os.PathLike,
    cases: str | os.PathLike | list[Case],
    config: EvalConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    controls: bool = True,
    backend: Backend | None = None,
    progress: bool = True,
    chance_videos: str | os.PathLike | None = None,
) -> EvalResult:
    """Score `<videos>/<id>.mp4` for every case; with `controls`, also each case's references
    against another case's video (the "chance" control): from `chance_videos/<id>.mp4` (e.g. the
    ground-truth clips) when given, else from `videos`.

    Any exception while scoring one case (or its control) is recorded against it with
    `failure_reason` and the run goes on; only a missing videos folder, an unreadable case file or a
    backend that cannot load stops it. Scored videos of an odd size get `size_warnings`.
    """
    from tqdm import tqdm

    config = config or EvalConfig()
    videos = Path(videos)
    if not videos.is_dir():
        raise FileNotFoundError(f"videos folder {videos} does not exist")
    result = EvalResult()
    if isinstance(cases, list):
        case_list = cases
    else:
        case_list, case_errors = split_cases(read_cases(cases))
        result.errors += [
            {"case": e.id, "line": e.line, "stage": "case file", "error": e.reason} for e in case_errors
        ]
    backend = backend or make_backend(config)
    result.models = getattr(backend, "models", None)  # only a backend that runs models reports them
    cache = Path(cache_dir) if cache_dir is not None else None

    scored: list[tuple[Case, Path]] = []
    for case in tqdm(case_list, desc="eval", unit="video", disable=not progress):
        video = videos / f"{case.id}.mp4"
        if not video.is_file():
            result.errors.append(_error(case, "video", f"no video {video} (expected <id>.mp4)"))
            continue
        try:
            score, hit = _score_cached(video, case, config, backend, cache)
        except Exception as error:  # one case's failure, whatever it is, must not stop the others
            result.errors.append(_error(case, "scoring", failure_reason(error)))
            continue
        result.scores[case.id] = score
        result.cached += hit
        scored.append((case, video))
    scored_scores = [(case, result.scores[case.id]) for case, _ in scored]
    result.warnings = one_warning_per_case(size_warnings(scored_scores) + subject_warnings(scored_scores))

    if controls and len(scored) >= 2:
        order = derangement(len(scored))
        for (case, _), other in tqdm(
            list(zip(scored, order, strict=True)), desc="chance control", disable=not progress
        ):
            other_case, other_video = scored[other]
            # docs/contracts.md#14-metrics-controls-and-ablations: another case's ground-truth clip
            if chance_videos is not None:
                other_video = Path(chance_videos) / f"{other_case.id}.mp4"
            try:
                score, hit = _score_cached(other_video, case, config, backend, cache)
            except Exception as error:  # as above: the other controls still run
                result.errors.append(_error(case, CHANCE_STAGE, failure_reason(error)))
                continue
            result.chance[case.id] = score
            result.cached += hit
    return result


def failed_cases(result: EvalResult) -> list[dict]:
    """Every case that was not scored, as {id, line, reason} (id None for a case line without one):
    each error but a chance control's."""
    return [
        {"id": error["case"], "line": error["line"], "reason": error["error"]}
        for error in result.errors
        if error["stage"] != CHANCE_STAGE
    ]


def comparability(config: EvalConfig, models: dict[str, str] | None) -> str:
    """What the run's figures can be compared with: the backend's note (`EvalConfig.comparability`), or
    for a backend that reports its models, the model behind each role, since figures compare only
    between runs with the same models."""
    if models is None:
        return config.comparability
    roles = "; ".join(f"{role.replace('_', ' ')}: {model}" for role, model in models.items())
    return f"{config.backend} backend with {roles}"


def unavailable_figures(summary: dict, models: dict[str, str] | None) -> dict[str, str]:
    """Why each model-only figure without a value has none: what the backend ran in its role
    (`models`, e.g. "not used (no --clip given)"), or for a backend without models the offline note."""
    reasons = UNAVAILABLE_OFFLINE if models is None else {name: models[name] for name in UNAVAILABLE_OFFLINE}
    return {name: reason for name, reason in reasons.items() if summary[name]["mean"] is None}


def metrics_payload(result: EvalResult, config: EvalConfig, sources: dict, note: str | None = None) -> dict:
    """The metrics.json document: `num_cases` = `num_scored` + `num_failed`."""
    summary = summarise(list(result.scores.values()))
    failed = failed_cases(result)
    line = comparability(config, result.models)
    payload = {
        "backend": config.backend,
        "comparability": line if note is None else f"{line}; {note}",
        "models": result.models,
        "config": config.to_json(),
        "config_fingerprint": config.fingerprint(),
        "sources": sources,
        "num_cases": len(result.scores) + len(failed),
        "num_scored": len(result.scores),
        "num_failed": len(failed),
        "num_warnings": len(result.warnings),
        "num_errors": len(result.errors),
        "failed_cases": failed,
        "warnings": result.warnings,
        "errors": result.errors,
        "summary": summary,
        "controls": {
            "chance": summarise(list(result.chance.values())) if result.chance else None,
            "chance_note": "each case's references and prompt scored on another case's video (a derangement; "
            + (
                "the ground-truth clips in sources.chance_videos"
                if "chance_videos" in sources
                else "the evaluated videos"
            )
            + "); a model must beat this",
            "motion_accuracy_uniform": MOTION_UNIFORM_CHANCE,
            "other_controls": "the same model given another case's references, and the untrained model: generate "
            "those videos and put the runs side by side with --compare",
        },
        "unavailable": unavailable_figures(summary, result.models),
        "cases": {case_id: score.to_json() for case_id, score in sorted(result.scores.items())},
    }
    return payload


def cases_csv(result: EvalResult) -> str:
    """Per-case CSV: one row per scored case (with its warning, if any), then one per failed case with
    its error; None → empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", *CASE_COLUMNS, "error", "warning"])
    warned = {warning["id"]: warning["reason"] for warning in result.warnings}
    for case_id, score in sorted(result.scores.items()):
        row = case_row(score)
        values = ("" if row[c] is None else _fmt(row[c]) for c in CASE_COLUMNS)
        writer.writerow([case_id, *values, "", warned.get(case_id, "")])
    for failure in failed_cases(result):
        name = failure["id"] or f"line {failure['line']}"
        writer.writerow([name, *([""] * len(CASE_COLUMNS)), failure["reason"], ""])
    return buffer.getvalue()


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def run_eval(
    videos: str | os.PathLike,
    cases: str | os.PathLike | list[Case],
    out: str | os.PathLike,
    config: EvalConfig | None = None,
    controls: bool = True,
    use_cache: bool = True,
    report: bool = True,
    note: str | None = None,
    backend: Backend | None = None,
    progress: bool = True,
    case_errors: list[CaseError] | None = None,
    chance_videos: str | os.PathLike | None = None,
) -> dict:
    """Evaluate and write `<out>/metrics.json`, `<out>/cases.csv` and `<out>/report.html`; return metrics.

    A failed case does not raise: it is in the metrics' `failed_cases` (the CLI then exits 1).
    case_errors: errors found before evaluation (e.g. by the OpenS2V converter), reported with the rest.
    """
    config = config or EvalConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = evaluate(
        videos,
        cases,
        config,
        cache_dir=out / CACHE_DIR if use_cache else None,
        controls=controls,
        backend=backend,
        progress=progress,
        chance_videos=chance_videos,
    )
    for error in case_errors or []:
        result.errors.insert(
            0, {"case": error.id, "line": error.line, "stage": "case file", "error": error.reason}
        )
    sources = {
        "videos": str(Path(videos).resolve()),
        "cases": "<in memory>" if isinstance(cases, list) else str(cases),
    }
    if chance_videos is not None:
        sources["chance_videos"] = str(Path(chance_videos).resolve())
    payload = metrics_payload(result, config, sources, note=note)
    write_json_atomic(out / "metrics.json", payload)
    write_text_atomic(out / "cases.csv", cases_csv(result))
    if report:
        references = _case_references(cases)
        write_report(out, payload, videos=Path(videos), references=references)
    return payload


def _case_references(cases: str | os.PathLike | list[Case]) -> dict[str, list[str]]:
    if not isinstance(cases, list):
        cases, _ = split_cases(read_cases(cases))
    return {case.id: [str(ref.path) for ref in case.references] for case in cases}
