"""Aggregating per-video scores into run-level figures (the `summary` block of metrics.json)."""

from __future__ import annotations

import numpy as np

from kaleido_s2v.evaluation.scoring import VideoScore

MOTION_UNIFORM_CHANCE = 1.0 / 5.0  # five direction classes: left, right, up, down, stays

# Column order of the per-case CSV and of the report's table.
CASE_COLUMNS = (
    "consistency",
    "decoupling",
    "no_background_references",
    "subject_not_found_references",
    "presence",
    "identity_accuracy",
    "attribute_swap",
    "motion_accuracy",
    "copy_paste",
    "motion_amplitude",
    "motion_smoothness",
    "text_alignment",
    "aesthetics",
)
HIGHER_IS_BETTER = {
    "consistency": True,
    "decoupling": True,
    "presence": True,
    "identity_accuracy": True,
    "attribute_swap_rate": False,
    "motion_accuracy": True,
    "copy_paste": False,
    "motion_amplitude": None,  # more is not better in itself; read beside smoothness
    "motion_smoothness": True,
    "text_alignment": True,
    "aesthetics": True,
}


def _mean(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)) if values else None, "n": len(values)}


def summarise(scores: list[VideoScore]) -> dict:
    """Run-level figures, each `{"mean": value or None, "n": count it is over}`.

    Per-case means for consistency, presence, motion and model scores; subject-pooled for
    decoupling (null references left out, each reason's count given: no background, or the subject
    not found in the reference), identity, motion accuracy and copy-paste; multi-subject cases for the
    attribute-swap rate.
    """
    subjects = [s for score in scores for s in score.subjects]
    decoupling = _mean([s.decoupling for s in subjects if s.decoupling is not None])
    decoupling["no_background_references"] = sum(s.no_background for s in subjects)
    decoupling["subject_not_found_references"] = sum(not s.subject_found for s in subjects)
    swaps = [score.attribute_swap for score in scores if score.attribute_swap is not None]
    return {
        "consistency": _mean([score.consistency for score in scores]),
        "decoupling": decoupling,
        "presence": _mean([score.presence for score in scores]),
        "identity_accuracy": _mean([float(s.identity_correct) for s in subjects]),
        "attribute_swap_rate": _mean([float(swap) for swap in swaps]),
        "motion_accuracy": _mean([float(s.motion_correct) for s in subjects if s.motion_correct is not None]),
        "copy_paste": _mean([s.copy_paste for s in subjects]),
        "motion_amplitude": _mean([x.motion_amplitude for x in scores if x.motion_amplitude is not None]),
        "motion_smoothness": _mean([x.motion_smoothness for x in scores if x.motion_smoothness is not None]),
        "text_alignment": _mean([x.text_alignment for x in scores if x.text_alignment is not None]),
        "aesthetics": _mean([x.aesthetics for x in scores if x.aesthetics is not None]),
    }


def case_row(score: VideoScore) -> dict:
    """One CSV row: the case's figures (None for not-applicable)."""
    row = {name: getattr(score, name) for name in CASE_COLUMNS}
    if row["attribute_swap"] is not None:
        row["attribute_swap"] = int(row["attribute_swap"])
    return row
