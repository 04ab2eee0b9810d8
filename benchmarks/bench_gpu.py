"""One-GPU figures for KaleidoTransformer3DModel: one command, one time budget (prints, never fails on speed).

Part 1, the 14B transformer (Wan2.1-T2V-14B config) at the release size 512x896x81 with 3 references and
512 text tokens (43,008 tokens): one CFG step (one forward of batch 2, cond + uncond, the same references
in both, as the pipeline runs it), 1 warm-up + 2 timed, per configuration, in this order: native SDPA;
cuDNN attention; + compile_repeated_blocks; fp8 weight storage with bf16 compute; group offload with
streams; the 24 GB mode (memory capped at 24 GiB, sequential CFG, group offload). Configurations after
the second use the faster of the two attention backends measured. Each row: seconds per CFG step, DiT
seconds per 50-step video, peak GPU memory, model FLOP/s, MFU against the H100's 989 TFLOP/s and the
share of the ~790 TFLOP/s a bf16 GEMM reaches on the lent H200.

Part 2, the 1.3B transformer at 480x832x33 (3 references): diffusers' caches over a whole 50-step CFG
schedule, each branch in `transformer.cache_context(branch)`: no cache, FirstBlockCache, TaylorSeer,
MagCache (a calibration run first, then MagCache on the ratios it measured), and the 4-step preset
(the Kaleido Euler schedule with 4 steps, guidance 1, no cache). Each row: seconds, transformer calls computed / skipped, speed-up over no cache and the
final latents' relative difference from the uncached run (random weights: a smoke check, not quality).

Part 3, multi-GPU rows (Ulysses, ring, CFG-parallel): "not measured" here; `MULTI_GPU_ROWS` is the hook
a multi-GPU runner fills in.

Weights are random. The 14B model is built on the meta device and materialised on the GPU in bf16
(never initialised on the CPU). A configuration that runs out of memory or fails becomes a row with its
reason; a row that the time left cannot cover is skipped and listed at the end.

`--tiny` runs the same code on the CPU in fp32 with the tests' tiny transformer at a tiny size, its cache
schedules 20 steps long. There, timings are machine noise, not figures, and cuDNN attention is unsupported (its row says why), group offload runs without CUDA streams, the memory
cap is not applied, and compilation uses the `aot_eager` backend (Dynamo traces the block as on the GPU;
inductor's cold C++ build alone takes ~40 s on two cores).

Run on one GPU: python benchmarks/bench_gpu.py [--budget-s 330] [--parts dense caches] [--json OUT]
Check on CPU:  python benchmarks/bench_gpu.py --tiny --budget-s 60 [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from kaleido_s2v.models.transformer import KaleidoTransformer3DModel  # noqa: E402
from tiny_components import TINY_TRANSFORMER_CONFIG  # noqa: E402

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM: the MFU denominator
H200_MEASURED_GEMM = 790e12  # an 8192^3 bf16 matmul on the lent H200: what a GEMM reaches in practice
VIDEO_STEPS = 50  # the release's sampling steps: "DiT seconds per video" = 50 CFG steps
TARGET_VIDEO_SECONDS = 400.0  # per 50-step video on one H100-class GPU ...
TARGET_MFU = 0.64  # ... which is >= 64 % MFU at 2 x 2.56 PF per step
TARGET_CACHE_SPEEDUP = 1.8

# The self-check of the FLOPs formula: one batch-1 forward of the 14B model at the release size.
SELF_CHECK_FLOPS = 2.56e15
SELF_CHECK_TOKENS = 43_008  # 21*32*56 video + 3*32*56 reference tokens
SELF_CHECK_TOLERANCE = 0.05

# docs/model.md#1-the-network (the constructor defaults of KaleidoTransformer3DModel). The rotary table
# (1024 rows) holds the R-RoPE offset 80 plus any reference grid used here.
WAN_14B_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=40,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=13824,
    num_layers=40,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
WAN_1_3B_CONFIG = {**WAN_14B_CONFIG, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30}

# Filled in by the multi-GPU issue: (row name, GPUs it needs). Until a runner exists each prints
# "not measured", with the GPU count it needs on a machine that has fewer.
MULTI_GPU_ROWS = (
    ("Ulysses x2", 2),
    ("Ulysses x4", 4),
    ("Ulysses x8", 8),
    ("ring x2", 2),
    ("ring x4", 4),
    ("ring x8", 8),
    ("CFG-parallel x2", 2),
)


# --- what is measured ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One model at one video size.

    video_latent: (C, F, H, W) of one video; reference_latent: (h, w), each reference (C, 1, h, w).
    """

    label: str
    model_config: dict
    video_latent: tuple[int, int, int, int]
    reference_latent: tuple[int, int]
    num_references: int
    text_length: int
    dtype: torch.dtype

    @property
    def tokens(self) -> int:
        """N: video plus reference tokens of one sample."""
        p_t, p_h, p_w = self.model_config["patch_size"]
        _, frames, height, width = self.video_latent
        ref_h, ref_w = self.reference_latent
        return (frames // p_t) * (height // p_h) * (width // p_w) + self.num_references * (ref_h // p_h) * (
            ref_w // p_w
        )

    @property
    def hidden_size(self) -> int:
        return self.model_config["num_attention_heads"] * self.model_config["attention_head_dim"]


FULL_SCENARIOS = {
    "dense": Scenario(
        "14B, 512x896x81, 3 refs", WAN_14B_CONFIG, (16, 21, 64, 112), (64, 112), 3, 512, torch.bfloat16
    ),
    "caches": Scenario(
        "1.3B, 480x832x33, 3 refs", WAN_1_3B_CONFIG, (16, 9, 60, 104), (60, 104), 3, 512, torch.bfloat16
    ),
}
TINY_SCENARIOS = {
    "dense": Scenario(
        "tiny, 3x8x8 latents, 3 refs", TINY_TRANSFORMER_CONFIG, (16, 3, 8, 8), (8, 8), 3, 16, torch.float32
    ),
    "caches": Scenario(
        "tiny, 3x8x12 latents, 3 refs", TINY_TRANSFORMER_CONFIG, (16, 3, 8, 12), (8, 12), 3, 16, torch.float32
    ),
}


@dataclass(frozen=True)
class DenseConfig:
    """One way of running the CFG step.

    attention: a diffusers attention backend; None takes the faster one measured so far.
    cuda_only: fails on the CPU by nature (the row then says "unsupported on cpu").
    """

    name: str
    attention: str | None
    compile_blocks: bool = False
    fp8_storage: bool = False
    group_offload: bool = False
    sequential_cfg: bool = False
    memory_cap_gib: float | None = None
    cuda_only: bool = False


DENSE_CONFIGS = (
    DenseConfig("native SDPA", attention="native"),
    DenseConfig("cuDNN attention", attention="_native_cudnn", cuda_only=True),
    DenseConfig("+ compile_repeated_blocks", attention=None, compile_blocks=True),
    DenseConfig("fp8 weight storage, bf16 compute", attention=None, fp8_storage=True),
    DenseConfig("group offload (block, 1 per group, streams)", attention=None, group_offload=True),
    DenseConfig(
        "24 GB mode: sequential CFG + group offload",
        attention=None,
        group_offload=True,
        sequential_cfg=True,
        memory_cap_gib=24.0,
    ),
)


@dataclass
class Row:
    """One printed (and JSON) row. status: measured, oom, error, unsupported on cpu, skipped, not measured."""

    part: str
    name: str
    status: str
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None  # dense: per CFG step (mean of the timed); caches: the whole schedule
    video_seconds: float | None = None
    peak_memory_gib: float | None = None
    flops: float | None = None  # dense: per CFG step
    tflops_per_s: float | None = None
    mfu: float | None = None
    of_measured_gemm: float | None = None
    calls: int | None = None
    computed: int | None = None
    skipped: int | None = None
    speedup: float | None = None
    latent_difference: float | None = None


class Budget:
    """Wall-clock budget of the whole run; a row starts only if the time left covers its estimate."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def skip_reason(self, estimate: float) -> str | None:
        if self.left() > estimate:
            return None
        return f"time budget: {max(self.left(), 0):.0f} s left, the row needs ~{estimate:.0f} s"


# --- FLOPs --------------------------------------------------------------------------------------


def linear_parameters_per_token(model: torch.nn.Module) -> int:
    """P_linear: weights of the linear layers every video/reference token passes through.

    That is every linear layer of the blocks except the cross-attention key/value projections, which
    see the text tokens (counted in the cross-attention term of `forward_flops`).
    """
    total = 0
    for name, module in model.blocks.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith(("attn2.to_k", "attn2.to_v")):
            total += module.weight.numel()
    return total


def forward_flops(
    linear_params: int, num_layers: int, hidden_size: int, tokens: int, text_tokens: int
) -> float:
    """Model FLOPs of one batch-1 forward over N tokens:

    2*N*P_linear            the matmuls of the linear layers
    + 4*L*N^2*D             self-attention: Q K^T and the weighted sum of V, 2*N^2*D each
    + 4*L*N*T*D             cross-attention to T text tokens, likewise
    """
    n, layers, d = tokens, num_layers, hidden_size
    return 2 * n * linear_params + 4 * layers * n**2 * d + 4 * layers * n * text_tokens * d


def flops_self_check() -> dict:
    """The formula on the 14B config (built on the meta device, nothing allocated) against 2.56 PF."""
    with torch.device("meta"):
        model = KaleidoTransformer3DModel(**WAN_14B_CONFIG)
    linear_params = linear_parameters_per_token(model)
    hidden = WAN_14B_CONFIG["num_attention_heads"] * WAN_14B_CONFIG["attention_head_dim"]
    flops = forward_flops(linear_params, WAN_14B_CONFIG["num_layers"], hidden, SELF_CHECK_TOKENS, 512)
    ratio = flops / SELF_CHECK_FLOPS
    if abs(ratio - 1) > SELF_CHECK_TOLERANCE:
        raise AssertionError(
            f"FLOPs formula gives {flops / 1e15:.3f} PF per {SELF_CHECK_TOKENS}-token forward of the 14B "
            f"model, {100 * (ratio - 1):+.1f} % off the expected {SELF_CHECK_FLOPS / 1e15} PF; "
            "check linear_parameters_per_token and forward_flops"
        )
    return {"tokens": SELF_CHECK_TOKENS, "linear_params": linear_params, "flops": flops, "ratio": ratio}


# --- building and running the model -------------------------------------------------------------


def build_transformer(config: dict, dtype: torch.dtype, device: torch.device) -> KaleidoTransformer3DModel:
    """KaleidoTransformer3DModel with random weights, created directly on `device`.

    Built on the meta device, cast there, materialised with `to_empty` and initialised in place, so a
    14B model never exists on the CPU. Wan's fp32 modules (`_keep_in_fp32_modules`) stay fp32, as
    `from_pretrained(torch_dtype=...)` leaves them.
    """
    with torch.device("meta"):
        model = KaleidoTransformer3DModel(**config)
    keep_fp32 = model._keep_in_fp32_modules or []
    for name, param in model.named_parameters():  # on meta: costs nothing
        keep = any(part in name.split(".") for part in keep_fp32)
        param.data = param.data.to(torch.float32 if keep else dtype)
    model.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()  # PyTorch's own init (Linear, Conv3d, norms), on the device
            else:
                for param in own:  # scale_shift_table: Wan's randn / sqrt(dim)
                    param.normal_(0.0, param.shape[-1] ** -0.5)
    # The rotary tables are non-persistent buffers that to_empty left uninitialised: rebuild them.
    model.rope = type(model.rope)(
        model.config.attention_head_dim, model.config.patch_size, model.config.rope_max_seq_len
    ).to(device)
    return model.eval()


@dataclass
class Inputs:
    """A CFG batch as the pipeline builds it: one video latent and the references, repeated for both
    branches; text states [uncond, cond]."""

    video: torch.Tensor  # (2, C, F, H, W)
    references: list[torch.Tensor]  # S x (2, C, 1, h, w)
    text: torch.Tensor  # (2, T, text_dim)
    timestep: torch.Tensor  # (2,)


def make_inputs(scenario: Scenario, device: torch.device) -> Inputs:
    generator = torch.Generator().manual_seed(0)
    channels = scenario.video_latent[0]

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=scenario.dtype)

    video = randn(1, *scenario.video_latent).expand(2, -1, -1, -1, -1)
    references = [
        randn(1, channels, 1, *scenario.reference_latent).expand(2, -1, -1, -1, -1)
        for _ in range(scenario.num_references)
    ]
    text = randn(2, scenario.text_length, scenario.model_config["text_dim"])
    return Inputs(video, references, text, torch.full((2,), 500.0, device=device))


def cfg_step(model: torch.nn.Module, inputs: Inputs, sequential: bool) -> None:
    """One CFG step: one batch-2 forward, or (sequential) two batch-1 forwards."""
    if not sequential:
        model(
            inputs.video, inputs.timestep, inputs.text, reference_latents=inputs.references, return_dict=False
        )
        return
    for branch in range(2):
        model(
            inputs.video[branch : branch + 1],
            inputs.timestep[branch : branch + 1],
            inputs.text[branch : branch + 1],
            reference_latents=[ref[branch : branch + 1] for ref in inputs.references],
            return_dict=False,
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    began = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - began


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def failure_row(part: str, name: str, error: BaseException, device: torch.device, cuda_only: bool) -> Row:
    message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    if isinstance(error, torch.OutOfMemoryError):
        return Row(part, name, "oom", message)
    if device.type == "cpu" and cuda_only:
        return Row(part, name, "unsupported on cpu", message)
    return Row(part, name, "error", message)


# --- part 1: one CFG step per configuration -----------------------------------------------------


@dataclass
class DenseState:
    """What later configurations take from earlier ones."""

    attention: str = "native"
    attention_seconds: float | None = None
    step_seconds: float = 0.0  # the last measured step: the next row's time estimate


def run_dense_config(
    config: DenseConfig, scenario: Scenario, device: torch.device, state: DenseState, compile_backend: str
) -> Row:
    part = f"dense {scenario.label}"
    attention = config.attention or state.attention
    name = config.name
    notes: list[str] = [f"attention {attention}"]
    model = None
    try:
        model = build_transformer(scenario.model_config, scenario.dtype, device)
        model.set_attention_backend(attention)
        if config.fp8_storage:
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=scenario.dtype)
            if scenario.dtype != torch.bfloat16:
                notes.append(f"computes in {str(scenario.dtype).removeprefix('torch.')}")
        if config.group_offload:
            use_stream = device.type == "cuda"
            if not use_stream:
                notes.append("cpu: without streams (CUDA only)")
            model.to("cpu")
            release_memory(device)
            model.enable_group_offload(
                onload_device=device,
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=use_stream,
            )
        if config.memory_cap_gib is not None:
            if device.type == "cuda":
                total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
                torch.cuda.set_per_process_memory_fraction(
                    min(1.0, config.memory_cap_gib / total_gib), device
                )
                notes.append(f"capped at {config.memory_cap_gib:.0f} of {total_gib:.0f} GiB")
            else:
                notes.append("cpu: no memory cap")
        if config.compile_blocks:
            model.compile_repeated_blocks(backend=compile_backend)
            notes.append(f"compile backend {compile_backend}")
        inputs = make_inputs(scenario, device)
        release_memory(device)  # the peak below counts resident weights, inputs and activations
        with torch.no_grad():
            step = lambda: cfg_step(model, inputs, config.sequential_cfg)  # noqa: E731
            warm_up = timed(step, device)
            times = [timed(step, device) for _ in range(2)]
        seconds = sum(times) / len(times)
        notes.append(f"warm-up {warm_up:.3g} s")
        flops = 2 * forward_flops_of(model, scenario)
        state.step_seconds = seconds
        if config.attention is not None and (
            state.attention_seconds is None or seconds < state.attention_seconds
        ):
            state.attention, state.attention_seconds = attention, seconds
        return Row(
            part,
            name,
            "measured",
            notes=notes,
            seconds=seconds,
            video_seconds=VIDEO_STEPS * seconds,
            peak_memory_gib=peak_memory_gib(device),
            flops=flops,
            tflops_per_s=flops / seconds / 1e12,
            mfu=flops / (seconds * H100_BF16_PEAK),
            of_measured_gemm=flops / (seconds * H200_MEASURED_GEMM),
        )
    except Exception as error:  # noqa: BLE001 - every failure becomes a row; the run goes on
        row = failure_row(part, name, error, device, config.cuda_only)
        row.notes = notes
        return row
    finally:
        model = None  # noqa: F841 - frees the weights before the next configuration
        if config.compile_blocks:
            torch.compiler.reset()
        if config.memory_cap_gib is not None and device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        release_memory(device)


def forward_flops_of(model: torch.nn.Module, scenario: Scenario) -> float:
    return forward_flops(
        linear_parameters_per_token(model),
        scenario.model_config["num_layers"],
        scenario.hidden_size,
        scenario.tokens,
        scenario.text_length,
    )


def run_dense(
    scenario: Scenario, device: torch.device, budget: Budget, compile_backend: str, state: DenseState
) -> list[Row]:
    rows = []
    for config in DENSE_CONFIGS:
        reason = budget.skip_reason(3 * state.step_seconds)
        if reason:
            rows.append(Row(f"dense {scenario.label}", config.name, "skipped", reason))
        else:
            rows.append(run_dense_config(config, scenario, device, state, compile_backend))
        print_row(rows[-1])
    return rows


# --- part 2: caches over a whole schedule -------------------------------------------------------


class ComputedCalls:
    """Counts forwards in which the last block's FFN output projection really ran.

    Every cache used here replaces whole blocks (FirstBlockCache, MagCache) or their attention and FFN
    (TaylorSeer) with a cached or predicted output, so a skipped call never reaches this layer.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.count = 0
        self._handle = model.blocks[-1].ffn.net[-1].register_forward_hook(self._add)

    def _add(self, *_) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


class ResidualRatios:
    """MagCache's calibration quantity per guidance branch and step: the mean over tokens of
    |r_t| / |r_(t-1)|, r the last block's output minus the first block's input (1.0 at the first step).

    Read with plain forward hooks, because diffusers only prints its own calibration result."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.branch = "cond"
        self.ratios: dict[str, list[float]] = {}
        self._previous: dict[str, torch.Tensor] = {}
        self._block_input: torch.Tensor | None = None
        self._handles = [
            model.blocks[0].register_forward_pre_hook(self._keep_input),
            model.blocks[-1].register_forward_hook(self._record),
        ]

    def _keep_input(self, _module, args) -> None:
        self._block_input = args[0]

    def _record(self, _module, _args, output) -> None:
        residual = (output - self._block_input).float()
        previous = self._previous.get(self.branch)
        ratio = 1.0
        if previous is not None:
            ratio = (residual.norm(dim=-1) / (previous.norm(dim=-1) + 1e-8)).mean().item()
        self.ratios.setdefault(self.branch, []).append(ratio)
        self._previous[self.branch] = residual

    def per_step(self) -> list[float]:
        """The branches' ratios averaged per step (diffusers' MagCacheConfig takes one list)."""
        lists = list(self.ratios.values())
        return [sum(values) / len(values) for values in zip(*lists, strict=True)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class SampleInputs:
    noise: torch.Tensor  # (1, C, F, H, W), float32
    references: list[torch.Tensor]  # S x (1, C, 1, h, w)
    text: dict[str, torch.Tensor]  # branch -> (1, T, text_dim)


def sample(
    model: torch.nn.Module,
    inputs: SampleInputs,
    num_steps: int,
    guidance_scale: float,
    on_branch: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """The pipeline's denoising loop on given states, each guidance branch its own forward inside
    `model.cache_context(branch)` (how diffusers' caches keep per-branch state). Returns the latents."""
    from kaleido_s2v.pipelines.generation_config import PRESET_SHIFTS, make_scheduler, set_scheduler_sigmas
    from kaleido_s2v.pipelines.kaleido import classifier_free_guidance

    device, dtype = inputs.noise.device, model.dtype
    scheduler = make_scheduler("kaleido_euler")
    set_scheduler_sigmas(scheduler, num_steps, PRESET_SHIFTS["kaleido_euler"], device=device)
    scheduler.set_begin_index(0)
    branches = ("cond", "uncond") if guidance_scale != 1.0 else ("cond",)
    latents = inputs.noise.clone()
    for t in scheduler.timesteps:
        flows = {}
        for branch in branches:
            if on_branch is not None:
                on_branch(branch)
            with model.cache_context(branch):
                flows[branch] = model(
                    latents.to(dtype),
                    t.expand(1),
                    inputs.text[branch],
                    reference_latents=inputs.references,
                    return_dict=False,
                )[0].float()
        flow = flows["cond"]
        if guidance_scale != 1.0:
            flow = classifier_free_guidance(flows["cond"], flows["uncond"], guidance_scale)
        latents = scheduler.step(flow, t, latents, return_dict=False)[0].float()
    return latents


def make_sample_inputs(scenario: Scenario, device: torch.device) -> SampleInputs:
    batch = make_inputs(scenario, device)
    return SampleInputs(
        noise=batch.video[:1].float(),
        references=[ref[:1] for ref in batch.references],
        text={"uncond": batch.text[:1], "cond": batch.text[1:]},
    )


@dataclass(frozen=True)
class CacheSettings:
    steps: int
    guidance_scale: float
    fbc_threshold: float
    mag_threshold: float
    taylor_interval: int


def run_caches(
    scenario: Scenario, device: torch.device, budget: Budget, settings: CacheSettings, attention: str
) -> list[Row]:
    """The cache rows; `attention` is the backend every run uses (part 1's fastest, else native)."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    part = f"caches {scenario.label}"
    rows: list[Row] = []
    model = None
    try:
        model = build_transformer(scenario.model_config, scenario.dtype, device)
        # Explicitly: set_attention_backend also sets diffusers' process-wide default.
        model.set_attention_backend(attention)
        inputs = make_sample_inputs(scenario, device)
        counter = ComputedCalls(model)
        with torch.no_grad():
            # Warm-up: a 2-step schedule with both branches (one forward alone left the first timed
            # schedule up to 3x slower on the CPU).
            warm_up_calls = 2 * (2 if settings.guidance_scale != 1.0 else 1)
            warm_up = timed(lambda: sample(model, inputs, 2, settings.guidance_scale), device)
            seconds_per_call = warm_up / warm_up_calls
    except Exception as error:  # noqa: BLE001
        rows.append(failure_row(part, "build and warm-up", error, device, cuda_only=False))
        print_row(rows[-1])
        model = None
        release_memory(device)
        return rows

    baseline: dict[str, object] = {}
    mag_ratios: list[float] = []

    def run(
        name: str, cache_config, steps: int, guidance: float, recorder: ResidualRatios | None = None
    ) -> Row:
        calls = steps * (2 if guidance != 1.0 else 1)
        per_call = baseline["seconds"] / baseline["calls"] if baseline else seconds_per_call
        reason = budget.skip_reason(per_call * calls)
        if reason:
            return Row(part, name, "skipped", reason)
        if cache_config is not None:
            model.enable_cache(cache_config)
        try:
            counter.count = 0
            release_memory(device)
            on_branch = None if recorder is None else lambda branch: setattr(recorder, "branch", branch)
            quiet = io.StringIO()  # MagCache's calibration prints its ratios; they are recorded below
            with torch.no_grad(), contextlib.redirect_stdout(quiet):
                synchronize(device)
                began = time.perf_counter()
                latents = sample(model, inputs, steps, guidance, on_branch)
                synchronize(device)
                seconds = time.perf_counter() - began
            row = Row(
                part,
                name,
                "measured",
                notes=[f"attention {attention}"],
                seconds=seconds,
                peak_memory_gib=peak_memory_gib(device),
                calls=calls,
                computed=counter.count,
                skipped=calls - counter.count,
            )
            if "seconds" not in baseline:
                baseline.update(seconds=seconds, calls=calls, latents=latents)
            else:
                row.speedup = baseline["seconds"] / seconds
                if steps == settings.steps and guidance == settings.guidance_scale:
                    reference = baseline["latents"]
                    row.latent_difference = ((latents - reference).norm() / reference.norm()).item()
            return row
        except Exception as error:  # noqa: BLE001
            return failure_row(part, name, error, device, cuda_only=False)
        finally:
            if cache_config is not None:
                model.disable_cache()

    steps, guidance = settings.steps, settings.guidance_scale
    schedule = f"{steps} steps, guidance {guidance:g}"
    taylor_seer = TaylorSeerCacheConfig(
        cache_interval=settings.taylor_interval,
        max_order=1,
        disable_cache_before_step=3,
        taylor_factors_dtype=scenario.dtype,
        # diffusers' default patterns ("^blocks.*attn") miss Wan's attn1/attn2.
        cache_identifiers=[r"blocks\.\d+\.(attn1|attn2|ffn)"],
    )

    def calibrate() -> Row:
        recorder = ResidualRatios(model)
        try:
            config = MagCacheConfig(calibrate=True, num_inference_steps=steps)
            row = run("MagCache calibration (computes every call)", config, steps, guidance, recorder)
            if row.status == "measured":
                mag_ratios.extend(recorder.per_step())
            return row
        finally:
            recorder.remove()

    def magcache() -> Row:
        name = f"MagCache threshold {settings.mag_threshold:g}"
        if not mag_ratios:
            return Row(part, name, "skipped", "no calibration ratios (the calibration row did not run)")
        config = MagCacheConfig(
            threshold=settings.mag_threshold, num_inference_steps=steps, mag_ratios=mag_ratios
        )
        return run(name, config, steps, guidance)

    plan: list[Callable[[], Row]] = [
        lambda: run(f"no cache ({schedule})", None, steps, guidance),
        lambda: run(
            f"FirstBlockCache threshold {settings.fbc_threshold:g}",
            FirstBlockCacheConfig(threshold=settings.fbc_threshold),
            steps,
            guidance,
        ),
        lambda: run(f"TaylorSeer interval {settings.taylor_interval}, order 1", taylor_seer, steps, guidance),
        calibrate,
        magcache,
        lambda: run("4-step preset (4 steps, guidance 1)", None, 4, 1.0),
    ]
    for make_row in plan:
        rows.append(make_row())
        print_row(rows[-1])
    counter.remove()
    model = inputs = None  # the closures above share these cells: this frees the weights
    baseline.clear()
    release_memory(device)
    return rows


# --- part 3 -------------------------------------------------------------------------------------


def multi_gpu_rows(device_count: int) -> list[Row]:
    rows = []
    for name, gpus in MULTI_GPU_ROWS:
        if device_count < gpus:
            reason = f"needs {gpus} GPUs, this machine has {device_count}"
        else:
            reason = "no multi-GPU runner in this script yet"
        rows.append(Row("multi-GPU", name, "not measured", reason))
    return rows


# --- output -------------------------------------------------------------------------------------


def _figure(value: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def print_row(row: Row) -> None:
    if row.status != "measured":
        print(f"  {row.name:<46} {row.status}: {row.reason}", flush=True)
        return
    notes = f"  ({'; '.join(row.notes)})" if row.notes else ""
    peak = f"peak {_figure(row.peak_memory_gib, '.1f')} GiB"
    if row.calls is None:
        line = (
            f"{_figure(row.seconds, '8.3f')} s/step {_figure(row.video_seconds, '8.1f')} s/video  {peak}  "
            f"{_figure(row.tflops_per_s, '.3g')} TF/s  MFU {_figure(row.mfu, '.3g', 100)} %  "
            f"of 790 TF/s {_figure(row.of_measured_gemm, '.3g', 100)} %"
        )
    else:
        line = (
            f"{_figure(row.seconds, '8.3f')} s  computed {row.computed}/{row.calls}, skipped {row.skipped}  "
            f"x{_figure(row.speedup, '.2f')}  rel. diff {_figure(row.latent_difference, '.3g')}  {peak}"
        )
    print(f"  {row.name:<46} {line}{notes}", flush=True)


def print_summary(rows: list[Row], tiny: bool) -> None:
    """Best rows against the targets (which speak of the GPU run: on --tiny they are not judged)."""

    def verdict(met: bool) -> str:
        return "(tiny: not judged)" if tiny else ("met" if met else "not met")

    dense = [row for row in rows if row.part.startswith("dense") and row.status == "measured"]
    if dense:
        best = min(dense, key=lambda row: row.seconds)
        print(
            f"best dense: {best.name}: {best.video_seconds:.1f} s per {VIDEO_STEPS}-step video, MFU "
            f"{100 * best.mfu:.3g} %; target <= {TARGET_VIDEO_SECONDS:.0f} s "
            f"(>= {100 * TARGET_MFU:.0f} % MFU) {verdict(best.video_seconds <= TARGET_VIDEO_SECONDS)}"
        )
    cached = [
        row
        for row in rows
        if row.part.startswith("caches") and row.speedup and row.skipped and "preset" not in row.name
    ]
    if cached:
        best = max(cached, key=lambda row: row.speedup)
        print(
            f"best cache: {best.name}: x{best.speedup:.2f}; target >= x{TARGET_CACHE_SPEEDUP} "
            f"{verdict(best.speedup >= TARGET_CACHE_SPEEDUP)}"
        )
    skipped = [f"{row.part}: {row.name}" for row in rows if row.status == "skipped"]
    print("skipped for the time budget: " + ("; ".join(skipped) if skipped else "nothing"))


def environment(device: torch.device) -> dict:
    import diffusers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": name,
        "device_type": device.type,
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny transformer on the CPU, fp32")
    parser.add_argument("--budget-s", type=float, default=330.0, help="stop starting rows after this")
    parser.add_argument("--parts", nargs="+", choices=("dense", "caches"), default=["dense", "caches"])
    parser.add_argument("--json", type=Path, help="write every row and the environment here")
    parser.add_argument(
        "--steps", type=int, help=f"steps of the cache schedules (default {VIDEO_STEPS}, 20 with --tiny)"
    )
    parser.add_argument("--guidance", type=float, default=6.0, help="guidance of the cache schedules")
    parser.add_argument("--fbc-threshold", type=float, default=0.05)
    parser.add_argument("--mag-threshold", type=float, default=0.06)
    parser.add_argument("--taylor-interval", type=int, default=5)
    parser.add_argument("--compile-backend", help="default: inductor on the GPU, aot_eager with --tiny")
    parser.add_argument(
        "--cache-attention", help="attention backend of part 2 (default: part 1's fastest, else native)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (--tiny)")
    args = parser.parse_args(argv)

    budget = Budget(args.budget_s)
    if args.tiny:
        device, scenarios = torch.device("cpu"), TINY_SCENARIOS
        torch.set_num_threads(args.threads)
    elif torch.cuda.is_available():
        device, scenarios = torch.device("cuda", torch.cuda.current_device()), FULL_SCENARIOS
    else:
        raise SystemExit("no CUDA device: the 14B and 1.3B runs need one GPU; use --tiny to check on the CPU")
    compile_backend = args.compile_backend or ("aot_eager" if args.tiny else "inductor")
    env = environment(device)
    print(
        f"{env['device']} ({env['device_count']} GPUs), torch {env['torch']}, diffusers {env['diffusers']}, "
        f"{env['date']}; budget {args.budget_s:.0f} s; random weights"
    )
    check = flops_self_check()
    print(
        f"FLOPs self-check, 14B: {check['flops'] / 1e15:.3f} PF per {check['tokens']:,}-token forward "
        f"(expected {SELF_CHECK_FLOPS / 1e15} PF, ratio {check['ratio']:.3f}); "
        f"P_linear {check['linear_params']:,}"
    )
    print(
        f"targets: <= {TARGET_VIDEO_SECONDS:.0f} s DiT per {VIDEO_STEPS}-step video on one H100-class GPU "
        f"(>= {100 * TARGET_MFU:.0f} % MFU of {H100_BF16_PEAK / 1e12:.0f} TF/s; a bf16 GEMM reaches "
        f"~{H200_MEASURED_GEMM / 1e12:.0f} TF/s on the H200); a cached mode >= x{TARGET_CACHE_SPEEDUP}"
    )

    scenario_info = {}
    for part, scenario in scenarios.items():
        with torch.device("meta"):
            linear_params = linear_parameters_per_token(KaleidoTransformer3DModel(**scenario.model_config))
        flops = forward_flops(
            linear_params,
            scenario.model_config["num_layers"],
            scenario.hidden_size,
            scenario.tokens,
            scenario.text_length,
        )
        scenario_info[part] = {
            "label": scenario.label,
            "tokens": scenario.tokens,
            "text_length": scenario.text_length,
            "num_layers": scenario.model_config["num_layers"],
            "hidden_size": scenario.hidden_size,
            "linear_params": linear_params,
            "forward_flops": flops,
            "dtype": str(scenario.dtype).removeprefix("torch."),
        }

    rows: list[Row] = []
    dense_state = DenseState()
    if "dense" in args.parts:
        scenario = scenarios["dense"]
        print(f"\n[1] one CFG step (batch 2), {scenario.label}, N = {scenario.tokens:,} tokens per sample")
        rows += run_dense(scenario, device, budget, compile_backend, dense_state)
    if "caches" in args.parts:
        scenario = scenarios["caches"]
        steps = args.steps or (20 if args.tiny else VIDEO_STEPS)
        settings = CacheSettings(
            steps, args.guidance, args.fbc_threshold, args.mag_threshold, args.taylor_interval
        )
        print(f"\n[2] caches over a whole schedule, {scenario.label}, N = {scenario.tokens:,} tokens")
        attention = args.cache_attention or dense_state.attention
        rows += run_caches(scenario, device, budget, settings, attention)
    print("\n[3] multi-GPU")
    multi = multi_gpu_rows(torch.cuda.device_count())
    for row in multi:
        print_row(row)
    rows += multi
    print()
    print_summary(rows, args.tiny)
    print(f"elapsed {budget.elapsed():.1f} s of {args.budget_s:.0f}")

    if args.json is not None:
        from kaleido_s2v.common.atomic import write_json_atomic

        write_json_atomic(
            args.json,
            {
                **env,
                "mode": "tiny" if args.tiny else "full",
                "budget_s": args.budget_s,
                "elapsed_s": budget.elapsed(),
                "peak_flops": H100_BF16_PEAK,
                "measured_gemm_flops": H200_MEASURED_GEMM,
                "targets": {
                    "video_seconds": TARGET_VIDEO_SECONDS,
                    "mfu": TARGET_MFU,
                    "cache_speedup": TARGET_CACHE_SPEEDUP,
                },
                "flops_self_check": check,
                "scenarios": scenario_info,
                "dense_configs": [config.name for config in DENSE_CONFIGS],
                "rows": [asdict(row) for row in rows],
            },
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
