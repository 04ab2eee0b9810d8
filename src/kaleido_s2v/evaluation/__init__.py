"""Evaluation: S2V consistency and decoupling, identity, motion and quality metrics, and reports.

Library use on one video::

    from kaleido_s2v.common.cases import read_cases
    from kaleido_s2v.evaluation import EvalConfig, score_video

    case = read_cases("cases.jsonl")[0]
    score = score_video("outputs/cat_walks.mp4", case, EvalConfig())

`run_eval(videos_dir, cases_file, out_dir)` is the library form of `kaleido-s2v eval`. The formulas
are in docs/metrics.md.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "EvalConfig": "config",
    "ModelPaths": "config",
    "VideoScore": "scoring",
    "score_video": "scoring",
    "run_eval": "runner",
    "evaluate": "runner",
    "write_compare": "report",
    "convert_opens2v": "opens2v",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
