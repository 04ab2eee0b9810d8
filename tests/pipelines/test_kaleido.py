"""KaleidoPipeline on tiny real components: CFG batching, reference encoding, determinism, round trip, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from kaleido_s2v.models.encoders import count_prompt_tokens
from kaleido_s2v.pipelines.generation_config import scheduler_preset, shifted_sigmas
from kaleido_s2v.pipelines.kaleido import KaleidoPipeline
from kaleido_s2v.pipelines.references import prepare_references
from tiny_components import tiny_generation_config

PROMPT = "a cat walks on the beach"


class _Recorder:
    """Records every transformer call's keyword inputs and output."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls: list[dict] = []
        self.handle = module.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.calls.append({**kwargs, "output": output[0].detach().clone()})


def _generate(pipe, references, seed=0, **options):
    generator = torch.Generator().manual_seed(seed)
    return pipe(PROMPT, reference_images=references, generator=generator, **options).frames


def test_guidance_one_runs_only_the_conditional_branch(pipe, reference_files):
    recorder = _Recorder(pipe.transformer)
    _generate(pipe, reference_files, guidance_scale=1.0, num_inference_steps=3, output_type="latent")
    assert len(recorder.calls) == 3
    for call in recorder.calls:
        assert call["hidden_states"].shape[0] == 1
        assert call["encoder_hidden_states"].shape[0] == 1
        assert [tuple(r.shape) for r in call["reference_latents"]] == [(1, 16, 1, 8, 8)] * 2


# Every scale but 1 guides, scales below 1 too (0 keeps the negative branch alone); 1 is the one shortcut.
@pytest.mark.parametrize("scale", [4.0, 0.5, 0.0])
def test_guidance_combines_both_branches_of_one_forward_by_the_formula(pipe, reference_files, scale):
    recorder = _Recorder(pipe.transformer)
    noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    latents = pipe(
        PROMPT,
        reference_images=reference_files,
        negative_prompt="低质量",
        guidance_scale=scale,
        num_inference_steps=1,
        latents=noise.clone(),
        output_type="latent",
    ).frames
    assert len(recorder.calls) == 1  # both branches in one forward
    call = recorder.calls[0]
    assert call["hidden_states"].shape[0] == 2
    assert torch.equal(call["hidden_states"][0], call["hidden_states"][1])
    # Both branches see the same references; only the text differs (negative first).
    for reference in call["reference_latents"]:
        assert reference.shape[0] == 2 and torch.equal(reference[0], reference[1])
    text = call["encoder_hidden_states"]
    assert not torch.equal(text[0], text[1])
    torch.testing.assert_close(text[1:], pipe.encode_prompt([PROMPT]))
    torch.testing.assert_close(text[:1], pipe.encode_prompt(["低质量"]))
    uncond, cond = call["output"].chunk(2)
    sigmas = shifted_sigmas(1, 7.0)
    expected = noise + float(sigmas[1] - sigmas[0]) * (uncond + scale * (cond - uncond))
    torch.testing.assert_close(latents, expected, atol=1e-6, rtol=0)


def test_text_length_comes_from_the_generation_config(pipe, reference_files):
    recorder = _Recorder(pipe.transformer)
    original = pipe.generation_config
    try:
        pipe.generation_config = dataclasses.replace(original, max_sequence_length=7)
        _generate(pipe, reference_files, guidance_scale=1.0, num_inference_steps=1, output_type="latent")
        _generate(
            pipe,
            reference_files,
            guidance_scale=1.0,
            num_inference_steps=1,
            output_type="latent",
            max_sequence_length=9,
        )
    finally:
        pipe.generation_config = original
    assert [call["encoder_hidden_states"].shape[1] for call in recorder.calls] == [7, 9]


def test_batched_branches_equal_separate_forwards(pipe, reference_files):
    recorder = _Recorder(pipe.transformer)
    _generate(pipe, reference_files, guidance_scale=4.0, num_inference_steps=1, output_type="latent")
    call = recorder.calls[0]
    with torch.no_grad():
        for branch in range(2):
            alone = pipe.transformer(
                hidden_states=call["hidden_states"][branch : branch + 1],
                timestep=call["timestep"][branch : branch + 1],
                encoder_hidden_states=call["encoder_hidden_states"][branch : branch + 1],
                reference_latents=[r[branch : branch + 1] for r in call["reference_latents"]],
                return_dict=False,
            )[0]
            torch.testing.assert_close(alone, call["output"][branch : branch + 1], atol=1e-5, rtol=1e-5)


def test_references_are_encoded_one_frame_each_with_the_posterior_mean(pipe, reference_files):
    recorder = _Recorder(pipe.transformer)
    _generate(pipe, reference_files, guidance_scale=1.0, num_inference_steps=1, output_type="latent")
    pixels = prepare_references(list(reference_files), 64, 64)
    vae = pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1, 1)
    for index, reference in enumerate(recorder.calls[0]["reference_latents"]):
        with torch.no_grad():
            posterior = vae.encode(pixels[index][None, :, None]).latent_dist
        torch.testing.assert_close(reference, (posterior.mean - mean) / std)


def test_model_timestep_is_sigma_times_1000(pipe, reference_files):
    recorder = _Recorder(pipe.transformer)
    _generate(pipe, reference_files, guidance_scale=1.0, num_inference_steps=4, output_type="latent")
    seen = [float(call["timestep"][0]) for call in recorder.calls]
    np.testing.assert_allclose(seen, shifted_sigmas(4, 7.0)[:-1] * 1000, rtol=1e-6)


def test_same_seed_gives_identical_frames_and_another_seed_does_not(pipe, reference_files):
    first = _generate(pipe, reference_files, seed=5)
    second = _generate(pipe, reference_files, seed=5)
    other = _generate(pipe, reference_files, seed=6)
    assert first.shape == (1, 5, 64, 64, 3) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_references_change_the_result(pipe, reference_files):
    with_both = _generate(pipe, reference_files)
    with_one = _generate(pipe, reference_files[:1])
    without = _generate(pipe, [])
    assert not np.array_equal(with_both, with_one) and not np.array_equal(with_one, without)


def test_save_load_round_trip_gives_identical_output(pipe, reference_files, tmp_path):
    before = _generate(pipe, reference_files)
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "generation_config.json").is_file()
    loaded = KaleidoPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.generation_config == tiny_generation_config()
    assert type(loaded.transformer).__name__ == "KaleidoTransformer3DModel"
    assert np.array_equal(_generate(loaded, reference_files), before)


def test_loading_a_folder_without_model_index_says_what_to_use(tmp_path):
    with pytest.raises(FileNotFoundError, match="from_kaleido_release"):
        KaleidoPipeline.from_pretrained(tmp_path)


def test_callback_sees_and_can_replace_latents(pipe, reference_files):
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append((step, tuple(tensors["latents"].shape), sorted(tensors)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    latents = _generate(
        pipe,
        reference_files,
        num_inference_steps=2,
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    assert seen == [(0, (1, 16, 2, 8, 8), ["latents", "prompt_embeds"])] * 1 + [
        (1, (1, 16, 2, 8, 8), ["latents", "prompt_embeds"])
    ]
    assert torch.equal(latents, torch.zeros_like(latents))


def test_output_types(pipe, reference_files):
    pt = _generate(pipe, reference_files, output_type="pt")
    pil = _generate(pipe, reference_files, output_type="pil")
    assert pt.shape == (1, 5, 3, 64, 64)
    assert len(pil) == 1 and len(pil[0]) == 5 and pil[0][0].size == (64, 64)


def test_non_square_video_and_reference_size(pipe, reference_files):
    recorder = _Recorder(pipe.transformer)
    frames = _generate(
        pipe, reference_files, height=48, width=80, num_frames=9, reference_size=(32, 32), guidance_scale=1.0
    )
    assert frames.shape == (1, 9, 48, 80, 3)
    assert tuple(recorder.calls[0]["hidden_states"].shape) == (1, 16, 3, 6, 10)
    assert tuple(recorder.calls[0]["reference_latents"][0].shape) == (1, 16, 1, 4, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"height": 72}, "height 72 is not a positive multiple of 16; use 64 or 80"),
        ({"width": 100}, "width 100 is not a positive multiple of 16; use 96 or 112"),
        ({"num_frames": 8}, "num_frames 8 is not of the form 4k \\+ 1; use 5 or 9"),
        ({"num_inference_steps": 0}, "at least 1"),
        ({"output_type": "gif"}, "output_type 'gif' is unknown"),
        ({"guidance_scale": -1.0}, "guidance_scale must be >= 0"),
    ],
)
def test_bad_settings_raise_clear_errors(pipe, options, message):
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, reference_images=[], **options)


@pytest.mark.parametrize("prompt", ["", "   \n\t "])
def test_empty_prompt_is_rejected(pipe, prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe(prompt, reference_images=[])


def test_more_references_than_the_rotary_table_allows_is_refused_before_encoding(pipe):
    table = pipe.transformer.config.rope_max_seq_len
    recorder = _Recorder(pipe.transformer)
    too_many = [np.full((8, 8, 3), 255, np.uint8)] * (table + 1)
    with pytest.raises(ValueError, match=f"{table + 1} references exceed the rotary position table"):
        pipe(PROMPT, reference_images=too_many)
    assert recorder.calls == []


def test_reference_too_large_for_the_rotary_offset_is_refused(pipe):
    # Under the kaleido policy references sit at offset 80; a 784 px reference is a 49-patch grid: 80 + 49 > 128.
    with pytest.raises(
        ValueError, match="784x784: reference 0 .* reaches rotary position 128, but the table holds 128"
    ):
        pipe(PROMPT, reference_images=[np.zeros((8, 8, 3), np.uint8)], reference_size=(784, 784))


def test_more_references_than_trained_warns(pipe):
    references = [np.full((8, 8, 3), 200, np.uint8)] * 4
    with pytest.warns(UserWarning, match="4 references exceed max_references=3"):
        pipe(PROMPT, reference_images=references, num_inference_steps=1, output_type="latent")


def test_bad_reference_files_raise_before_any_model_runs(pipe, tmp_path, reference_files):
    recorder = _Recorder(pipe.transformer)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(FileNotFoundError, match="reference 1"):
        pipe(PROMPT, reference_images=[reference_files[0], tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="empty file"):
        pipe(PROMPT, reference_images=[empty])
    with pytest.raises(ValueError, match="not a readable image"):
        pipe(PROMPT, reference_images=[corrupt])
    assert recorder.calls == []


def test_without_references_one_step_matches_diffusers_wan_pipeline(pipe):
    """S = 0 is Wan2.1 T2V: with one step (sigma 1 -> 0 in both schedules) the videos agree."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    config = {
        k: v for k, v in pipe.transformer.config.items() if k != "rope_policy" and not k.startswith("_")
    }
    wan_transformer = WanTransformer3DModel(**config).eval()
    wan_transformer.load_state_dict(pipe.transformer.state_dict())
    wan = WanPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=wan_transformer,
    )
    wan.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(9))
    options = dict(height=64, width=64, num_frames=5, num_inference_steps=1, guidance_scale=5.0)
    ours = pipe(
        PROMPT, reference_images=[], negative_prompt="低质量", latents=noise.clone(), **options
    ).frames
    theirs = wan(PROMPT, negative_prompt="低质量", latents=noise.clone(), output_type="np", **options).frames
    assert ours.shape == theirs.shape == (1, 5, 64, 64, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_wan_unipc_preset_runs_on_wan_sigmas(reference_files):
    from tiny_components import tiny_pipeline

    pipe = tiny_pipeline(0, scheduler="wan_unipc")
    # Built from components, the pipeline takes the scheduler's preset and shift as its defaults.
    assert (pipe.generation_config.scheduler, pipe.generation_config.shift) == ("wan_unipc", 5.0)
    pipe.generation_config = dataclasses.replace(tiny_generation_config(), scheduler="wan_unipc", shift=5.0)
    pipe.set_progress_bar_config(disable=True)
    recorder = _Recorder(pipe.transformer)
    latents = _generate(pipe, reference_files, num_inference_steps=3, output_type="latent")
    assert torch.isfinite(latents).all() and scheduler_preset(pipe.scheduler) == "wan_unipc"
    u = np.linspace(1, 1 / 1000, 4)[:-1]
    sigmas = 5 * u / (1 + 4 * u)
    sigmas[0] -= 1e-6  # diffusers keeps sigma below 1 for UniPC's log(alpha)
    expected = (sigmas * 1000).astype(np.int64)  # UniPC hands the model integer timesteps
    assert [int(call["timestep"][0]) for call in recorder.calls] == expected.tolist()


@pytest.mark.parametrize("prompt", ["  a cat &amp; a dog   walk ", "a cat walks " * 20])
def test_count_prompt_tokens_counts_what_encode_prompt_reads(pipe, prompt):
    limit = 16
    states = pipe.encode_prompt([prompt], max_sequence_length=limit)[0]  # padding positions are zero
    read = int((states.abs().sum(-1) != 0).sum())
    count = count_prompt_tokens(pipe.tokenizer, prompt)
    assert read == min(count, limit)
    assert (count > limit) == (prompt.startswith("a cat walks"))


@pytest.mark.parametrize("scheduler", ["kaleido_euler", "wan_unipc"])
def test_the_resolved_shift_decides_the_schedule_not_the_scheduler_it_was_built_with(
    reference_files, scheduler
):
    """Behaviour change: generation_config's shift (or a call's shift=) is applied to the scheduler;
    before, the scheduler's own shift was used whatever generation_config said."""
    from tiny_components import tiny_pipeline

    pipe = tiny_pipeline(0, scheduler=scheduler)  # built with the preset's shift (7 or 5)
    pipe.generation_config = dataclasses.replace(tiny_generation_config(), scheduler=scheduler, shift=3.0)
    pipe.set_progress_bar_config(disable=True)
    recorder = _Recorder(pipe.transformer)
    _generate(pipe, reference_files, num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    _generate(
        pipe, reference_files, num_inference_steps=2, guidance_scale=1.0, output_type="latent", shift=2.0
    )
    # The second of 2 steps is at base sigma u, shifted: s*u / (1 + (s - 1)*u), seen by the model x1000
    # (UniPC rounds it down to an integer timestep).
    u = 0.5 if scheduler == "kaleido_euler" else (1 + 1 / 1000) / 2
    expected = [shift * u / (1 + (shift - 1) * u) * 1000 for shift in (3.0, 2.0)]
    seen = [float(call["timestep"][0]) for call in recorder.calls[1::2]]
    np.testing.assert_allclose(seen, expected, atol=1.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shift": 0.0}, "shift must be a finite number > 0, got 0.0"),
        ({"shift": float("inf")}, "shift must be a finite number > 0, got inf"),
        ({"max_sequence_length": 0}, "max_sequence_length must be at least 1, got 0"),
    ],
)
def test_bad_shift_and_text_length_are_refused(pipe, options, message):
    """New checks: a call's shift (new argument) and a zero max_sequence_length (before: 0 meant the
    model's value) are refused before any model runs."""
    with pytest.raises(ValueError, match=message):
        pipe(PROMPT, reference_images=[], **options)


def test_a_saved_scheduler_shift_that_disagrees_is_warned_about_and_the_file_decides(
    tiny_model_dir, reference_files, tmp_path
):
    """Behaviour change: generation_config.json's shift samples; before, the saved scheduler's did."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler_file.write_text(json.dumps({**json.loads(scheduler_file.read_text()), "shift": 3.0}))
    with pytest.warns(
        UserWarning, match="shift 3.0 differs from generation_config.json's 7.0; sampling uses"
    ):
        loaded = KaleidoPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    recorder = _Recorder(loaded.transformer)
    _generate(loaded, reference_files, guidance_scale=1.0, num_inference_steps=4, output_type="latent")
    seen = [float(call["timestep"][0]) for call in recorder.calls]
    np.testing.assert_allclose(seen, shifted_sigmas(4, 7.0)[:-1] * 1000, rtol=1e-6)
