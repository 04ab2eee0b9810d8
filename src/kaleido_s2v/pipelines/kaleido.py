"""KaleidoPipeline: multi-subject reference-to-video generation with a diffusers `DiffusionPipeline`.

One call, top to bottom:
  1. resolve the settings (call arguments over generation_config, `GenerationConfig.override`) and
     check them before any model runs;
  2. letterbox the references (docs/model.md#3-reference-preprocessing) and VAE-encode each as its own latent frame;
  3. encode the prompt and the negative prompt with the text encoder (UMT5, or the demo's MiniLM;
     padding positions zeroed); steps 2 and 3 follow `models.encoders`, the trainer's rules too;
  4. Euler (or UniPC) steps over explicit flow sigmas with the resolved shift (docs/model.md#5-sampling-defaults), text-only CFG
     with both branches in one batched forward and the same references in both;
  5. decode the video latents.

Loading from a folder is `pipelines.loading`'s job.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan, DiffusionPipeline
from diffusers.loaders import WanLoraLoaderMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

# Re-exported (`kaleido.component_folder`, `kaleido.POINTER_PACKAGES`) for code that reads them here.
from kaleido_s2v.models.components import POINTER_PACKAGES as POINTER_PACKAGES
from kaleido_s2v.models.components import component_folder as component_folder
from kaleido_s2v.models.encoders import clean_prompt, denormalize_latents, encode_latents, encode_text
from kaleido_s2v.models.rope import check_positions_fit
from kaleido_s2v.models.transformer import KaleidoTransformer3DModel
from kaleido_s2v.pipelines.generation_config import (
    GenerationConfig,
    scheduler_preset,
    scheduler_shift,
    set_scheduler_sigmas,
)
from kaleido_s2v.pipelines.loading import PipelineParts, load_pipeline_folder, load_release_folder
from kaleido_s2v.pipelines.references import ReferenceInput, prepare_references

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class KaleidoPipelineOutput(BaseOutput):
    """frames: (B, F, H, W, 3) float in [0, 1] for "np", (B, F, 3, H, W) for "pt", PIL lists for
    "pil", or the latents (B, C, F_lat, H/8, W/8) for "latent"."""

    frames: Any


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """v = v_uncond + g (v_cond - v_uncond) (docs/model.md#5-sampling-defaults)."""
    return uncond + guidance_scale * (cond - uncond)


class KaleidoPipeline(DiffusionPipeline, WanLoraLoaderMixin):
    """Reference-to-video generation with Kaleido (Wan2.1 + reference tokens).

    Components: transformer (KaleidoTransformer3DModel), vae (AutoencoderKLWan), text_encoder
    (UMT5EncoderModel, or another transformers encoder such as the demo's BertModel) + tokenizer,
    scheduler (FlowMatchEulerDiscreteScheduler for the Kaleido preset, UniPCMultistepScheduler
    with flow sigmas for Wan's). `generation_config` holds the
    model's defaults (docs/contracts.md#7-generation-defaults-live-with-the-model).
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
        # Without a model folder, the scheduler given is the model's: its preset and shift are the defaults.
        self.generation_config = GenerationConfig(
            shift=scheduler_shift(scheduler), scheduler=scheduler_preset(scheduler)
        )
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

        The VAE stays in fp32 by default (`vae_dtype=None` follows `torch_dtype`), as Wan's pipeline
        keeps it. A Hub id is resolved to a local snapshot first (needs network).
        """
        return cls._assemble(
            load_pipeline_folder(pretrained_model_name_or_path, torch_dtype, vae_dtype, transformer)
        )

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
        release values (docs/contracts.md#7-generation-defaults-live-with-the-model).
        """
        parts = load_release_folder(
            release_dir, torch_dtype, vae_dtype, generation_config, vae_config, transformer_config
        )
        return cls._assemble(parts)

    @classmethod
    def _assemble(cls, parts: PipelineParts) -> KaleidoPipeline:
        pipeline = cls(parts.tokenizer, parts.text_encoder, parts.vae, parts.scheduler, parts.transformer)
        pipeline.generation_config = parts.generation_config
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True) -> None:
        """diffusers' folder layout plus `generation_config.json`."""
        super().save_pretrained(save_directory, safe_serialization=safe_serialization)
        self.generation_config.save(save_directory)

    # ------------------------------------------------------------------ conditioning

    def encode_prompt(
        self,
        prompts: list[str],
        max_sequence_length: int = 512,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Text-encoder states of each cleaned prompt, zero past its tokens (`models.encoders.encode_text`).

        Returns (N, max_sequence_length, D) on `device` in `dtype` (default: the transformer's).
        """
        states, _ = encode_text(self.text_encoder, self.tokenizer, prompts, max_sequence_length)
        return states.to(device=device or self._execution_device, dtype=dtype or self.transformer.dtype)

    def encode_references(
        self, pixels: torch.Tensor, device: torch.device | None = None
    ) -> list[torch.Tensor]:
        """VAE-encode each reference alone as a one-frame video, normalised (docs/model.md#3-reference-preprocessing, docs/model.md#6-vae-and-text-encoder; `models.encoders`).

        pixels: (S, 3, H, W) in [-1, 1]. Returns S latents (1, C, 1, H/8, W/8) on `device` in the
        transformer's dtype; the posterior mean is used, so encoding is deterministic.
        """
        device = device or self._execution_device
        return [
            encode_latents(self.vae, image[None, :, None]).to(device=device, dtype=self.transformer.dtype)
            for image in pixels  # image (3, H, W) -> (1, 3, 1, H, W)
        ]

    # ------------------------------------------------------------------ checks

    def check_inputs(
        self,
        prompt: str,
        settings: GenerationConfig,
        num_references: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> None:
        """Raise a ValueError naming the bad value and a fix; warn for out-of-training settings.

        settings: the call's resolved settings (`GenerationConfig.override`).
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if not clean_prompt(prompt):
            raise ValueError(
                "prompt is empty; describe the video to generate (the subjects and what they do)"
            )
        if not isinstance(settings.negative_prompt, str):
            raise ValueError(
                f"negative_prompt must be a string, got {type(settings.negative_prompt).__name__}"
            )
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
        for name, value in (("height", settings.height), ("width", settings.width)):
            if value <= 0 or value % multiple:
                lower = max(multiple, value // multiple * multiple)
                raise ValueError(
                    f"{name} {value} is not a positive multiple of {multiple}; use {lower} or {lower + multiple}"
                )
        for name, value in zip(("reference height", "reference width"), settings.reference_hw, strict=True):
            if value <= 0 or value % multiple:
                raise ValueError(f"{name} {value} is not a positive multiple of {multiple}")
        step = self.vae_scale_factor_temporal
        num_frames = settings.num_frames
        if num_frames < 1 or num_frames % step != 1:
            lower = max(1, (num_frames - 1) // step * step + 1)
            raise ValueError(
                f"num_frames {num_frames} is not of the form {step}k + 1; use {lower} or {lower + step}"
            )
        if settings.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {settings.num_inference_steps}")
        if settings.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {settings.guidance_scale}")
        if not 0 < settings.shift < float("inf"):
            raise ValueError(f"shift must be a finite number > 0, got {settings.shift}")
        if settings.max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be at least 1, got {settings.max_sequence_length}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r} is unknown; use one of {OUTPUT_TYPES}")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback tensor inputs {unknown} are not available; use {self._callback_tensor_inputs}"
            )
        self._check_reference_positions(settings, num_references)
        if num_references > settings.max_references:
            warnings.warn(
                f"{num_references} references exceed max_references={settings.max_references} "
                "(the model was trained with at most that many); results may degrade",
                stacklevel=3,
            )

    def _check_reference_positions(self, settings: GenerationConfig, num_references: int) -> None:
        """Refuse, before any encoding, references that do not fit the rotary table (docs/contracts.md#8-limits): the
        model's own check (`rope.check_positions_fit`) on the patch grids this call would give it."""
        config = self.transformer.config
        p_t, p_h, p_w = config.patch_size
        spatial = self.vae_scale_factor_spatial
        latent_frames = (settings.num_frames - 1) // self.vae_scale_factor_temporal + 1
        video_grid = (
            latent_frames // p_t,
            settings.height // spatial // p_h,
            settings.width // spatial // p_w,
        )
        ref_height, ref_width = settings.reference_hw
        reference_grid = (ref_height // spatial // p_h, ref_width // spatial // p_w)
        try:
            check_positions_fit(
                video_grid, [reference_grid] * num_references, config.rope_policy, config.rope_max_seq_len
            )
        except ValueError as error:
            raise ValueError(
                f"a {settings.height}x{settings.width} video with {num_references} reference(s) of "
                f"{ref_height}x{ref_width}: {error}"
            ) from None

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
        shift: float | None = None,
    ) -> KaleidoPipelineOutput | tuple:
        """Generate one video of the subjects in `reference_images` doing what `prompt` says.

        Unset arguments take the model's `generation_config` values. reference_images: paths, PIL
        images, numpy arrays or tensors, in order (reference i gets temporal position i); [] runs
        Wan2.1 text-to-video. guidance_scale 1 runs the conditional branch only. shift: the sigma
        shift of the schedule (docs/model.md#5-sampling-defaults), whatever the scheduler was built with.
        callback_on_step_end(pipe, step, timestep, tensors) -> dict may replace "latents" and the
        prompt embeddings (diffusers' convention).
        """
        settings = self.generation_config.override(
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            shift=shift,
            max_sequence_length=max_sequence_length,
            reference_size=reference_size,
        )
        references = list(reference_images or [])
        tensor_inputs = list(callback_on_step_end_tensor_inputs or ["latents"])
        if hasattr(callback_on_step_end, "tensor_inputs"):
            tensor_inputs = list(callback_on_step_end.tensor_inputs)

        # 1. Check everything before any model runs.
        self.check_inputs(prompt, settings, len(references), output_type, tensor_inputs)
        reference_pixels = prepare_references(references, *settings.reference_hw)  # (S, 3, H_ref, W_ref)
        self._guidance_scale = settings.guidance_scale
        self._interrupt = False
        device = self._execution_device
        dtype = self.transformer.dtype
        text_length = settings.max_sequence_length

        # 2. Text: [negative, positive] in one encoder call when guiding.
        if self.do_classifier_free_guidance:
            states = self.encode_prompt([settings.negative_prompt, prompt], text_length, device, dtype)
            negative_prompt_embeds, prompt_embeds = states[:1], states[1:]
        else:
            prompt_embeds = self.encode_prompt([prompt], text_length, device, dtype)
            negative_prompt_embeds = None

        # 3. References: one clean latent frame each, (1, C, 1, h, w).
        reference_latents = self.encode_references(reference_pixels, device)

        # 4. Noise and the explicit sigma schedule with the resolved shift.
        latent_shape = (
            1,
            self.transformer.config.in_channels,
            (settings.num_frames - 1) // self.vae_scale_factor_temporal + 1,
            settings.height // self.vae_scale_factor_spatial,
            settings.width // self.vae_scale_factor_spatial,
        )
        if latents is None:
            latents = randn_tensor(latent_shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != latent_shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}; this call needs {latent_shape}")
        latents = latents.to(device=device, dtype=torch.float32)
        set_scheduler_sigmas(self.scheduler, settings.num_inference_steps, settings.shift, device=device)
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
                    flow = classifier_free_guidance(cond, uncond, settings.guidance_scale)
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
            vae_input = denormalize_latents(self.vae, latents).to(dtype=self.vae.dtype)
            decoded = self.vae.decode(vae_input, return_dict=False)[0]  # (1, 3, F, H, W)
            video = ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 1, 3, 4)  # (1, F, 3, H, W)
            video = _to_output_type(video, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return KaleidoPipelineOutput(frames=video)


def _to_output_type(video: torch.Tensor, output_type: str):
    """video (B, F, 3, H, W) float in [0, 1] -> the requested output type."""
    if output_type == "pt":
        return video.cpu()
    array = video.permute(0, 1, 3, 4, 2).cpu().numpy()  # (B, F, H, W, 3)
    if output_type == "np":
        return array
    return [[Image.fromarray((frame * 255).astype(np.uint8)) for frame in clip] for clip in array]
