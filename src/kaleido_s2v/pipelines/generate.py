"""What `kaleido-s2v generate` does, without argparse: load a model, generate, write video + side-car.

`generate --batch` reads a case file (docs/contracts.md#1-case-files, `kaleido_s2v.common.cases`) and writes `<out_dir>/<id>.mp4`
and `<out_dir>/<id>.json`. A case is skipped when both exist and the JSON records the same
resolved parameters (docs/contracts.md#9-resume-per-command), so an interrupted run resumes where it stopped. A bad case (a bad
line, or any error while generating it) is reported in one line and skipped; the others still run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kaleido_s2v import __version__
from kaleido_s2v.common.cases import Case, read_cases
from kaleido_s2v.common.hashing import file_sha256
from kaleido_s2v.models.encoders import count_prompt_tokens
from kaleido_s2v.models.release import is_release_folder
from kaleido_s2v.pipelines.generation_config import GenerationSettings, scheduler_preset
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from kaleido_s2v.pipelines.outputs import check_fps, check_output, save_frames, sidecar_path, write_sidecar
from kaleido_s2v.pipelines.references import reference_fingerprint

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

# The resolved parameters that decide a video (docs/contracts.md#9-resume-per-command): equal values mean the same video.
RESUME_KEYS = (
    "prompt",
    "negative_prompt",
    "reference_sha256",
    "model_path",
    "model_fingerprint",
    "height",
    "width",
    "num_frames",
    "fps",
    "num_inference_steps",
    "guidance_scale",
    "shift",
    "scheduler",
    "reference_size",
    "seed",
)

_FINGERPRINT_SAMPLE = 1 << 20
BATCH_SUFFIX = ".mp4"  # --batch writes <out_dir>/<id>.mp4


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline with the facts its outputs record."""

    pipeline: object
    path: Path
    fingerprint: str
    dtype: str
    device: str
    offload: str | None  # "model": diffusers' model CPU offload; None: every model stays on `device`
    vae_tiling: bool


@dataclass
class BatchSummary:
    generated: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{len(self.generated)} generated, {len(self.skipped_done)} already done, {len(self.failed)} failed"


def model_fingerprint(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a model folder: every file's relative path, size, first and last MiB.

    Hashing every byte of a 14B checkpoint takes minutes; a re-saved or replaced weight file changes
    its size or its sampled bytes in practice.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(_FINGERPRINT_SAMPLE))
            if size > 2 * _FINGERPRINT_SAMPLE:
                handle.seek(size - _FINGERPRINT_SAMPLE)
                digest.update(handle.read())
    return digest.hexdigest()


def resolve_device(device: str | None) -> str:
    """The device to run on: unset, cuda when torch sees a GPU, else cpu. A named device must be cpu,
    cuda, cuda:N or mps, and usable by this torch build on this machine; otherwise a ValueError says why."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if kind.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(
                f"--device {device}: torch was built without CUDA; use --device cpu or install a CUDA build "
                "of torch"
            )
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(
                f"--device {device}: torch sees no CUDA GPU (check the driver and CUDA_VISIBLE_DEVICES); "
                "use --device cpu"
            )
        if kind.index is not None and kind.index >= count:
            raise ValueError(
                f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif kind.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS (Apple GPU) is not available here; use --device cpu")
    elif kind.type != "cpu":
        raise ValueError(f"--device {device}: {kind.type} devices are not supported; use cpu, cuda or cuda:N")
    return device


def load_model(
    path: str | os.PathLike,
    dtype: str | None = None,
    device: str | None = None,
    offload: bool = False,
    vae_tiling: bool = False,
) -> LoadedModel:
    """Load a diffusers-format folder or a release folder (detected from its contents).

    device: see `resolve_device`. dtype: "bf16" | "fp16" | "fp32" (default bf16 on a GPU, fp32 on CPU)
    for the transformer and the text encoder; the VAE stays fp32. offload: diffusers' model CPU offload
    (`check_offload`). vae_tiling: diffusers' tiled VAE encode and decode (less memory; it tiles only
    frames larger than its 256-px tiles).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist")
    device = resolve_device(device)
    if offload:
        check_offload(device)  # before minutes of loading
    dtype = dtype or ("bf16" if device.startswith("cuda") else "fp32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is unknown; use one of {sorted(DTYPES)}")
    torch_dtype = getattr(torch, DTYPES[dtype])
    if (path / "model_index.json").is_file():
        pipeline = KaleidoPipeline.from_pretrained(path, torch_dtype=torch_dtype)
    elif is_release_folder(path):
        pipeline = KaleidoPipeline.from_kaleido_release(path, torch_dtype=torch_dtype)
    else:
        raise FileNotFoundError(
            f"{path} is neither a diffusers-format pipeline (model_index.json) nor a Kaleido release "
            "folder (model/, Wan2.1_VAE.pth, umt5-xxl/)"
        )
    if offload:
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)
    if vae_tiling:
        pipeline.vae.enable_tiling()
    return LoadedModel(
        pipeline, path, model_fingerprint(path), dtype, device, "model" if offload else None, vae_tiling
    )


def check_offload(device: str) -> None:
    """Model CPU offload keeps each model in CPU memory and moves it to the accelerator only while it
    runs; on the CPU it would move nothing and save nothing, so it is refused there, as diffusers'
    `enable_model_cpu_offload()` refuses to run without an accelerator."""
    if torch.device(device).type == "cpu":
        raise ValueError(
            f"--offload moves each model from CPU memory to the GPU while it runs; on device {device} "
            "every model already runs from CPU memory, so it would save nothing: drop --offload, or use "
            "--device cuda"
        )


def resolve_parameters(
    model: LoadedModel,
    prompt: str,
    references: list[Path],
    settings: GenerationSettings,
    seed: int,
) -> dict:
    """Every parameter a generation uses: each setting resolved by `GenerationConfig.override` (the
    `settings` given over the model's generation_config), the scheduler preset the model samples with,
    the prompt's token count (`prompt_tokens`; `prompt_truncated` when it exceeds max_sequence_length),
    and how the model runs (`dtype`, `device`, `offload`, `vae_tiling`; recorded, not compared on resume)."""
    pipeline = model.pipeline
    config = pipeline.generation_config.override(**asdict(settings))
    sha256 = []
    for index, reference in enumerate(references):
        if not Path(reference).is_file():
            raise FileNotFoundError(f"reference {index}: {reference} does not exist")
        sha256.append(reference_fingerprint(reference))
    prompt_tokens = count_prompt_tokens(pipeline.tokenizer, prompt)
    return {
        "prompt": prompt,
        "references": [str(Path(r).resolve()) for r in references],
        "reference_sha256": sha256,
        "model_path": str(model.path),
        "model_fingerprint": model.fingerprint,
        **config.to_dict(),
        "reference_size": list(config.reference_hw),
        "scheduler": scheduler_preset(pipeline.scheduler),  # the preset of the scheduler that samples
        "seed": seed,
        "dtype": model.dtype,
        "device": model.device,
        "offload": model.offload,
        "vae_tiling": model.vae_tiling,
        "prompt_tokens": prompt_tokens,
        "prompt_truncated": prompt_tokens > config.max_sequence_length,
        "kaleido_s2v_version": __version__,
    }


def truncation_warning(parameters: dict) -> str | None:
    """The warning for resolved `parameters` whose prompt is longer than the text encoder reads, else None."""
    if not parameters["prompt_truncated"]:
        return None
    tokens, limit = parameters["prompt_tokens"], parameters["max_sequence_length"]
    return (
        f"the prompt is {tokens} tokens, more than the {limit} the model reads (max_sequence_length); "
        "the rest is cut off: shorten the prompt"
    )


def describe_error(error: Exception) -> str:
    """One line for a failed case: the message of a ValueError or OSError (raised with an actionable
    message), else the exception's type and message, so an unexpected failure is still identifiable."""
    message = " ".join(str(error).split())
    if message and isinstance(error, (ValueError, OSError)):
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def generate_to_file(
    model: LoadedModel, parameters: dict, out: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Generate with resolved `parameters`, write the video (format from `out`), then the side-car JSON.

    `out` must be new, empty, or an earlier output of `generate` (`outputs.check_output`); `overwrite`
    also replaces another file there. Both, and the frame rate (`outputs.check_fps`), are checked before
    sampling.
    """
    check_output(out, overwrite=overwrite)
    check_fps(parameters["fps"], out)
    started = time.perf_counter()
    generator = torch.Generator("cpu").manual_seed(parameters["seed"])
    frames = model.pipeline(
        parameters["prompt"],
        reference_images=[Path(p) for p in parameters["references"]],
        negative_prompt=parameters["negative_prompt"],
        height=parameters["height"],
        width=parameters["width"],
        num_frames=parameters["num_frames"],
        num_inference_steps=parameters["num_inference_steps"],
        guidance_scale=parameters["guidance_scale"],
        generator=generator,
        reference_size=tuple(parameters["reference_size"]),
        max_sequence_length=parameters["max_sequence_length"],
        shift=parameters["shift"],
    ).frames[0]
    # The side-car names the output before it is written, so an interrupted write is still known
    # as ours (replaced on the next run, never taken for done: it has no digest yet).
    out = Path(out)
    write_sidecar(out, {**parameters, "output": out.name, "status": "writing"})
    out = save_frames(frames, out, fps=parameters["fps"])
    record = {
        **parameters,
        "output": out.name,
        "status": "done",
        "seconds": round(time.perf_counter() - started, 3),
    }
    if out.is_file():
        record.update(output_bytes=out.stat().st_size, output_sha256=file_sha256(out))
    write_sidecar(out, record)
    return out


def already_done(video: Path, parameters: dict) -> bool:
    """True when `video` and its side-car exist, the side-car records the same resolved parameters,
    and the video's size and sha256 are the ones recorded when it was written (a truncated or
    replaced video is generated again)."""
    sidecar = sidecar_path(video)
    if not video.is_file() or not sidecar.is_file():
        return False
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if not isinstance(recorded, dict) or any(recorded.get(key) != parameters.get(key) for key in RESUME_KEYS):
        return False
    return recorded.get("output_bytes") == video.stat().st_size and recorded.get(
        "output_sha256"
    ) == file_sha256(video)


def run_batch(
    model: LoadedModel,
    cases_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: GenerationSettings,
    default_seed: int = 0,
    log=None,
    overwrite: bool = False,
) -> BatchSummary:
    """Generate `<out_dir>/<id>.mp4` + `.json` for every case, skipping finished and bad ones.

    A bad line, or any Exception while a case runs, is logged in one line naming the case and its line,
    and the batch goes on; KeyboardInterrupt and SystemExit still stop it.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary()
    items = read_cases(cases_file)
    for item in tqdm(items, desc="cases", unit="case"):
        if not isinstance(item, Case):
            log(f"skipping {cases_file} {item}")
            summary.failed.append(item.id or f"line {item.line}")
            continue
        try:
            done = _run_case(model, item, out_dir, settings, default_seed, overwrite, log)
        except Exception as error:  # one case's failure, whatever it is, never stops the others
            log(f"skipping case {item.id} (line {item.line}): {describe_error(error)}")
            summary.failed.append(item.id)
            continue
        (summary.skipped_done if done else summary.generated).append(item.id)
    return summary


def _run_case(
    model: LoadedModel,
    item: Case,
    out_dir: Path,
    settings: GenerationSettings,
    default_seed: int,
    overwrite: bool,
    log,
) -> bool:
    """Generate one case of `run_batch`; True when it was already done (nothing written)."""
    seed = default_seed if item.seed is None else item.seed
    if item.negative_prompt is not None:
        settings = replace(settings, negative_prompt=item.negative_prompt)  # the case's own wins
    parameters = resolve_parameters(model, item.prompt, [r.path for r in item.references], settings, seed)
    parameters["id"] = item.id
    parameters["labels"] = item.labels
    video = out_dir / f"{item.id}{BATCH_SUFFIX}"
    if already_done(video, parameters):
        return True
    warning = truncation_warning(parameters)
    if warning:
        log(f"warning: case {item.id} (line {item.line}): {warning}")
    generate_to_file(model, parameters, video, overwrite=overwrite)
    return False
