"""Run the stages over the inputs, record every result in the manifest, skip finished work.

The runner goes stage by stage. For each item that passed the previous stage it computes the
fingerprint of (stage, backend, model files, config, upstream fingerprint); a result already in
the manifest under that fingerprint is reused when every artifact it records still holds the bytes
recorded with it (`reusable`); anything else is executed. Executors:

- `local` (default): in-process for `workers=1`, else a process pool whose workers build the stages
  once (a model stage loads its model once per worker);
- `ray`: Ray Data `map_batches` over an actor pool of `workers` actors per stage, the same stage code.

Results are written to the manifest one item at a time, so an interrupted run resumes where it stopped.
A run works only in a folder of its own (see `claim_run_folder`), since it removes its stale exports there.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kaleido_s2v.common.atomic import write_json_atomic
from kaleido_s2v.common.hashing import file_sha256
from kaleido_s2v.data.config import STAGE_NAMES, PipelineConfig
from kaleido_s2v.data.manifest import Manifest, changed_artifacts
from kaleido_s2v.data.stages.base import FAILED, OK, Context, Stage, StageResult, fingerprint
from kaleido_s2v.data.stages.caption import CaptionStage
from kaleido_s2v.data.stages.detect import DetectStage
from kaleido_s2v.data.stages.export import ExportStage
from kaleido_s2v.data.stages.filter import FilterStage
from kaleido_s2v.data.stages.probe import ProbeStage
from kaleido_s2v.data.stages.references import ReferencesStage
from kaleido_s2v.data.stages.segment import SegmentStage
from kaleido_s2v.data.stages.split import SplitConfig, SplitStage, clip_windows

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
STAGE_CLASSES = {
    "probe": ProbeStage,
    "split": SplitStage,
    "caption": CaptionStage,
    "detect": DetectStage,
    "segment": SegmentStage,
    "filter": FilterStage,
    "references": ReferencesStage,
    "export": ExportStage,
}


def build_stages(config: PipelineConfig) -> list[Stage]:
    """Every stage, in run order, built from its section of `config`."""
    return [STAGE_CLASSES[name](getattr(config, name)) for name in STAGE_NAMES]


# ------------------------------------------------------------------------------------------------ inputs


def discover_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Expand files, folders and globs into a sorted, de-duplicated list of files.

    Files named explicitly are kept whatever their suffix (a bad input is rejected by `probe`, with a
    reason); folders and globs contribute video files only.
    """
    found: set[Path] = set()
    for entry in inputs:
        path = Path(entry)
        if path.is_file():
            found.add(path.resolve())
        elif path.is_dir():
            found.update(
                p.resolve() for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
            )
        else:
            matches = [Path(p) for p in glob.glob(entry, recursive=True)]
            if not matches:
                raise FileNotFoundError(f"input {entry} matches no file or folder")
            found.update(p.resolve() for p in matches if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return sorted(found)


def item_seed(base_seed: int, item_id: str) -> int:
    return int(hashlib.sha256(f"{base_seed}:{item_id}".encode()).hexdigest()[:8], 16)


def video_item(path: Path, base_seed: int) -> tuple[dict, str]:
    """(item, source fingerprint): the id is the sanitised file stem plus 8 hex digits of its content."""
    content = file_sha256(path)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")[:48] or "video"
    item_id = f"{stem}-{content[:8]}"
    sidecars = [path.with_suffix(".json"), path.parent.parent / "labels" / f"{path.stem}.txt"]
    source_fp = fingerprint(content, [file_sha256(p) if p.is_file() else "" for p in sidecars])
    return {"id": item_id, "source": str(path), "seed": item_seed(base_seed, item_id)}, source_fp


# ------------------------------------------------------------------------------------------------ execution


@dataclass(frozen=True)
class Task:
    stage: str
    item: dict
    context: Context


def execute(stage, task: Task) -> dict:
    """Run one stage on one item; never raises for bad data (returns a `failed` result instead)."""
    start = time.perf_counter()
    try:
        result = stage.run(task.item, task.context)
    except Exception as error:  # recorded as a failure with its reason; the run goes on
        result = StageResult(FAILED, f"{type(error).__name__}: {str(error)[:300]}")
    shas = {name: file_sha256(task.context.run_dir / rel) for name, rel in sorted(result.artifacts.items())}
    return {
        "status": result.status,
        "reason": result.reason,
        "data": result.data,
        "artifacts": result.artifacts,
        "artifact_sha256": shas,
        "seconds": time.perf_counter() - start,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


_WORKER_STAGES: dict = {}

PARENT_CHECK_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _end_with_parent(parent_pid: int) -> None:
    """Make this pool worker exit once the run that started it is gone, even when it was SIGKILLed.

    An orphaned worker would otherwise wait on the pool's queue forever. On Linux the kernel sends
    the worker SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG; the pool starts its workers from
    the thread that runs the pipeline, which outlives the pool). On every POSIX system a daemon
    thread checks every PARENT_CHECK_SECONDS that os.getppid() is still `parent_pid` and calls
    os._exit(1) once the worker has been re-parented; its first check also catches a parent that
    died before this function ran.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def exit_when_orphaned() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, name="exit-with-parent", daemon=True).start()


def _init_pool_worker(config: PipelineConfig, parent_pid: int) -> None:
    """Initializer of a `LocalExecutor` pool worker: tie its life to the run's, then build the stages."""
    _end_with_parent(parent_pid)
    _init_worker(config)


def _init_worker(config: PipelineConfig) -> None:
    global _WORKER_STAGES
    # one thread per worker: the pool already uses every core it was given
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    _WORKER_STAGES = {stage.name: stage for stage in build_stages(config)}


def _run_in_worker(task: Task) -> dict:
    return execute(_WORKER_STAGES[task.stage], task)


class LocalExecutor:
    """In-process for one worker, else a process pool whose workers build every stage once."""

    def __init__(self, config: PipelineConfig, stages: list):
        self.config, self.stages = config, {s.name: s for s in stages}
        self._pool: ProcessPoolExecutor | None = None

    def map(self, tasks: list[Task]):
        if self.config.workers == 1 or len(tasks) <= 1:
            for task in tasks:
                yield task, execute(self.stages[task.stage], task)
            return
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(
                max_workers=self.config.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_pool_worker,
                initargs=(self.config, os.getpid()),
            )
        futures = {self._pool.submit(_run_in_worker, task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class _RayStageActor:
    """A Ray actor that builds the stages once and runs batches of pickled tasks."""

    def __init__(self, config: PipelineConfig):
        _init_worker(config)

    def __call__(self, batch: dict) -> dict:
        import pickle

        outputs = []
        for blob in batch["task"]:
            task = pickle.loads(blob)
            outputs.append(pickle.dumps((task.item["id"], _run_in_worker(task))))
        return {"result": outputs}


def _ray_task_batch(batch: dict, config: PipelineConfig) -> dict:
    """Ray Data task for stages without a model: the worker process builds the stages once and keeps them."""
    import pickle

    global _WORKER_CONFIG
    if _WORKER_CONFIG != config:
        _init_worker(config)
        _WORKER_CONFIG = config
    outputs = []
    for blob in batch["task"]:
        task = pickle.loads(blob)
        outputs.append(pickle.dumps((task.item["id"], _run_in_worker(task))))
    return {"result": outputs}


_WORKER_CONFIG: PipelineConfig | None = None


def uses_model(stage) -> bool:
    """Whether a stage's backend loads model weights (it then runs in an actor pool under Ray)."""
    model = stage.fingerprint_parts().get("model", "")
    return any(model) if isinstance(model, list) else bool(model)


class RayExecutor:
    """Ray Data: stages with a model run in an actor pool (`workers` actors, one CPU each, each loading
    the model once); the others run as Ray tasks on reused worker processes."""

    def __init__(self, config: PipelineConfig, stages: list):
        try:
            import ray
        except ImportError as error:
            raise ImportError('the ray executor needs Ray: pip install "kaleido-s2v[ray]"') from error
        self.config = config
        self.model_stages = {stage.name for stage in stages if uses_model(stage)}
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=config.workers, include_dashboard=False, log_to_driver=False)
            self._owns_ray = True
        else:
            self._owns_ray = False

    def map(self, tasks: list[Task]):
        import pickle

        import numpy as np
        import ray

        if not tasks:
            return
        by_id = {task.item["id"]: task for task in tasks}
        dataset = ray.data.from_items([{"task": pickle.dumps(task)} for task in tasks])
        if tasks[0].stage in self.model_stages:
            dataset = dataset.map_batches(
                _RayStageActor,
                fn_constructor_args=(self.config,),
                batch_size=1,
                num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=min(self.config.workers, len(tasks))),
                batch_format="numpy",
            )
        else:
            dataset = dataset.map_batches(
                _ray_task_batch,
                fn_kwargs={"config": self.config},
                batch_size=1,
                num_cpus=1,
                batch_format="numpy",
            )
        for row in dataset.iter_rows():
            blob = row["result"]
            item_id, result = pickle.loads(blob.tobytes() if isinstance(blob, np.ndarray) else blob)
            yield by_id[item_id], result

    def close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()


# ------------------------------------------------------------------------------------------------ the run

RUN_MARKER = "data-run.json"  # written by the first run in a folder, before anything else


def _holds_run_record(run_dir: Path) -> bool:
    """Whether `run_dir/run.json` is a record `run_pipeline` wrote (with current, exported, shards)."""
    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"current", "exported", "shards"} <= record.keys()


def claim_run_folder(run_dir: Path) -> None:
    """Make sure `run_dir` is a run folder of `data run` before anything is read or written in it.

    The rule: a folder is ours when it holds RUN_MARKER, or the `run.json` record of a run made
    before the marker existed (the marker is added then). A missing or empty folder becomes ours:
    the marker is written in it before any other file, so a run interrupted at any point is resumed
    there. Any other folder is refused with FileExistsError, untouched, because a run removes the
    stale exports and shards in its folder and must never do so among someone else's files.
    """
    if (run_dir / RUN_MARKER).is_file():
        return
    if run_dir.is_dir() and any(run_dir.iterdir()) and not _holds_run_record(run_dir):
        raise FileExistsError(
            f"run_dir {run_dir} is not empty and holds no {RUN_MARKER} or run.json of a `data run`; "
            "a run removes stale exports and shards in its folder, so it will not start there. "
            "Set run_dir to a new or empty folder, or to the folder of an earlier `data run`."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / RUN_MARKER, {"created_by": "kaleido-s2v data run"})


@dataclass
class RunSummary:
    run_dir: Path
    funnel: dict
    current: set  # (item id, stage, fingerprint) of this run's results
    executed: int  # stage calls actually run (the rest came from the manifest)
    executed_by_stage: dict[str, int]
    exported: list[str]
    shards: list[Path]


def reusable(row: dict | None, run_dir: Path, retry_failed: bool) -> bool:
    """Whether a recorded result stands for this run instead of running the stage on the item again.

    The rule: it does when it exists, is not a failure while `retry_failed` is set, and every artifact
    it records still holds the bytes recorded with it (`changed_artifacts`); else one warning names
    the changed files. So a truncated, removed or overwritten file makes its stage redo the item.
    """
    if row is None or (row["status"] == FAILED and retry_failed):
        return False
    changed = changed_artifacts(row, run_dir)
    if changed:
        warnings.warn(
            f"{', '.join(map(str, changed))}: changed since stage {row['stage']} wrote them for "
            f"{row['item_id']} (sha256 differs from the manifest); running the stage on that item again",
            stacklevel=2,
        )
    return not changed


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="item")


def run_pipeline(config: PipelineConfig, progress: bool = True) -> RunSummary:
    """Run (or resume) the whole pipeline described by `config`; returns the funnel and what ran.

    `config.run_dir` must be new, empty, or the folder of an earlier run (`claim_run_folder`).
    """
    run_dir = Path(config.run_dir)
    stages = build_stages(config)
    claim_run_folder(run_dir)
    manifest = Manifest(run_dir)
    executor = RayExecutor(config, stages) if config.executor == "ray" else LocalExecutor(config, stages)

    items: list[dict] = []
    upstream_fp: dict[str, str] = {}  # item id -> fingerprint of its latest result
    upstream: dict[str, dict[str, dict]] = {}  # item id -> stage -> data (+ "artifacts")
    own = run_dir.resolve()
    for path in discover_inputs(config.inputs):
        if own in path.parents:  # never re-ingest this run's own clips and exports
            continue
        item, source_fp = video_item(path, config.seed)
        if item["id"] not in upstream_fp:
            items.append(item)
            upstream_fp[item["id"]], upstream[item["id"]] = source_fp, {}

    current: set = set()
    rows_of: dict[str, dict[str, dict]] = {name: {} for name in STAGE_NAMES}
    executed = 0
    executed_by_stage = dict.fromkeys(STAGE_NAMES, 0)
    try:
        for stage in stages:
            parts = stage.fingerprint_parts()
            tasks, fps = [], {}
            for item in items:
                key_parts = [stage.name, parts, upstream_fp[item["id"]]]
                siblings = {}
                if stage.group:
                    siblings = {
                        o["id"]: (o, upstream[o["id"]]) for o in items if o["video_id"] == item["video_id"]
                    }
                    key_parts.append(sorted((sid, upstream_fp[sid]) for sid in siblings))
                fp = fingerprint(*key_parts)
                fps[item["id"]] = fp
                if reusable(manifest.get(item["id"], stage.name, fp), run_dir, config.retry_failed):
                    continue
                context = Context(
                    run_dir=run_dir,
                    artifact_dir=Path("artifacts") / stage.name / item["id"] / fp[:12],
                    upstream=upstream[item["id"]],
                    siblings=siblings,
                    fingerprint=fp,
                )
                tasks.append(Task(stage.name, item, context))
            for task, result in _progress(executor.map(tasks), len(tasks), stage.name, progress):
                item = task.item
                manifest.append(
                    [
                        {
                            "item_id": item["id"],
                            "stage": stage.name,
                            "fingerprint": fps[item["id"]],
                            "status": result["status"],
                            "reason": result["reason"],
                            "backend": str(stage.fingerprint_parts()["backend"]),
                            "parent_id": item.get("video_id", ""),
                            "seed": int(item["seed"]),
                            "data": json.dumps(result["data"], sort_keys=True),
                            "artifacts": json.dumps(result["artifacts"], sort_keys=True),
                            "artifact_sha256": json.dumps(result["artifact_sha256"], sort_keys=True),
                            "seconds": float(result["seconds"]),
                            "worker": result["worker"],
                        }
                    ]
                )
                executed += 1
                executed_by_stage[stage.name] += 1
            survivors = []
            for item in items:
                row = manifest.get(item["id"], stage.name, fps[item["id"]])
                current.add((item["id"], stage.name, fps[item["id"]]))
                rows_of[stage.name][item["id"]] = row
                if row["status"] != OK:
                    continue
                data = json.loads(row["data"])
                upstream[item["id"]][stage.name] = {**data, "artifacts": json.loads(row["artifacts"])}
                upstream_fp[item["id"]] = fps[item["id"]]
                survivors.append(item)
            items = []
            for item in survivors:
                for new in stage.next_items(item, upstream[item["id"]][stage.name]):
                    if new["id"] != item["id"]:  # a new item (a clip of a video) starts from its parent
                        new = {**new, "seed": item_seed(config.seed, new["id"])}
                        upstream_fp[new["id"]] = upstream_fp[item["id"]]
                        upstream[new["id"]] = {}
                    items.append(new)
    finally:
        executor.close()
    last = stages[-1]  # `export`: it writes the shards from every item that came through
    kept = {item["id"]: rows_of[last.name][item["id"]] for item in items}
    finalized = last.finalize(run_dir, kept, manifest.item_ids())
    exported, shards = finalized.exported, finalized.shards
    manifest.compact()
    funnel = funnel_report(stages, rows_of, refused=len(finalized.refused))
    hint = too_short_hint(config.split, shot_lengths(rows_of))
    if hint:
        funnel["split"]["hint"] = hint
    write_json_atomic(run_dir / "funnel.json", funnel)
    write_json_atomic(
        run_dir / "run.json",
        {"current": sorted(map(list, current)), "exported": exported, "shards": [p.name for p in shards]},
    )
    return RunSummary(run_dir, funnel, current, executed, executed_by_stage, exported, shards)


def funnel_report(stages: list[Stage], rows_of: dict[str, dict[str, dict]], refused: int = 0) -> dict:
    """Per stage: items in, kept, the reasons of every rejection and failure, and the stage's own
    `funnel_details` (shots and clips for `split`, subjects for `filter`).

    `refused` samples of the last stage (exported files changed after the export, see
    `ExportStage.finalize`) count as dropped there, with the reason `refused:changed_after_export`.
    """
    funnel = {}
    for stage in stages:
        rows = rows_of[stage.name]
        statuses = Counter(r["status"] for r in rows.values())
        reasons = Counter(f"{r['status']}:{r['reason']}" for r in rows.values() if r["status"] != OK)
        if stage is stages[-1] and refused:
            statuses[OK] -= refused
            reasons["refused:changed_after_export"] = refused
        entry = {"in": len(rows), "kept": statuses.get(OK, 0), "dropped": dict(sorted(reasons.items()))}
        funnel[stage.name] = {**entry, **stage.funnel_details(rows)}
    return funnel


def shot_lengths(rows_of: dict[str, dict[str, dict]]) -> list[tuple[int, float, int]]:
    """(frames, source fps as `probe` measured it, clips cut) of every shot `split` found in a video
    whose frame rate is known."""
    lengths = []
    for item_id, row in rows_of["split"].items():
        fps = json.loads(rows_of["probe"][item_id]["data"])["fps"]
        shots = json.loads(row["data"]).get("shots", []) if fps > 0 else []
        lengths += [(shot["end"] - shot["start"], fps, shot["clips"]) for shot in shots]
    return lengths


def too_short_hint(split: SplitConfig, lengths: list[tuple[int, float, int]]) -> str:
    """The funnel's hint when shots were found and none gave a clip (all `too_short`); else "".

    It names the settings to change, the span of the clip they ask for, the shortest and longest shot
    in seconds, and the largest `split.num_frames` (4k+1) whose clip fits the longest shot at
    `split.fps`, by the clip rules themselves (`clip_windows` on that shot at its mean frame rate).
    """
    if not lengths or any(clips for _, _, clips in lengths):
        return ""
    seconds = sorted(frames / fps for frames, fps, _ in lengths)
    frames, fps, _ = max(lengths, key=lambda length: length[0] / length[1])
    times = np.arange(frames) / fps
    fitting = [
        n
        for n in range(1, split.num_frames, 4)
        if clip_windows(times, 0, frames, split.skip_frames, n, split.fps, 1)
    ]
    largest = f"at most {fitting[-1]} fits the longest shot" if fitting else "none fits the longest shot"
    return (
        f"all {len(lengths)} shots are too short for one clip: split.num_frames {split.num_frames} at "
        f"split.fps {split.fps:g} spans {(split.num_frames - 1) / split.fps:.2f} s (plus split.skip_frames "
        f"{split.skip_frames} at each end of a shot), and the shots last {seconds[0]:.2f} s (shortest) to "
        f"{seconds[-1]:.2f} s (longest). Lower split.num_frames (4k+1; {largest}) or split.fps, "
        "or give longer shots."
    )
