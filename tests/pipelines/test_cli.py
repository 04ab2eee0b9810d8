"""`kaleido-s2v generate` end to end on a tiny saved model: MP4 + side-car, overrides, --batch with resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kaleido_s2v.cli import main
from kaleido_s2v.common.video_io import probe_video


def _generate(model_dir, *extra: str) -> int:
    return main(["generate", "--model", str(model_dir), "--device", "cpu", *extra])


def test_single_video_with_sidecar(tiny_model_dir, reference_files, tmp_path):
    out = tmp_path / "clip.mp4"
    refs = [arg for path in reference_files for arg in ("--ref", str(path))]
    assert _generate(tiny_model_dir, *refs, "--prompt", "a cat walks", "--out", str(out), "--seed", "3") == 0
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height, info.fps) == (5, 64, 64, 8.0)
    sidecar = json.loads((tmp_path / "clip.json").read_text())
    assert sidecar["seed"] == 3 and sidecar["prompt"] == "a cat walks" and sidecar["status"] != "writing"
    assert sidecar["num_inference_steps"] == 2 and sidecar["guidance_scale"] == 3.0
    assert sidecar["shift"] == 7.0 and sidecar["scheduler"] == "kaleido_euler"
    assert sidecar["negative_prompt"] == "低质量" and sidecar["reference_size"] == [64, 64]
    assert len(sidecar["reference_sha256"]) == 2 and sidecar["model_path"] == str(tiny_model_dir.resolve())
    assert len(sidecar["model_fingerprint"]) == 64

    # Same parameters and seed: the same frames (a result can be reproduced from its side-car).
    # Compared losslessly through PNG frames: libx264 with its default threads is not bit-reproducible.
    runs = []
    for name in ("again_a", "again_b"):
        folder = tmp_path / name
        assert (
            _generate(tiny_model_dir, *refs, "--prompt", "a cat walks", "--out", str(folder), "--seed", "3")
            == 0
        )
        runs.append(np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]))
    assert runs[0].shape == (5, 64, 64, 3) and np.array_equal(runs[0], runs[1])
    assert (tmp_path / "again_a.json").is_file()


def test_flags_override_the_generation_config(tiny_model_dir, reference_files, tmp_path):
    out = tmp_path / "wide.gif"
    args = ["--ref", str(reference_files[0]), "--prompt", "a dog runs", "--out", str(out)]
    args += [
        "--height",
        "48",
        "--width",
        "80",
        "--frames",
        "9",
        "--steps",
        "1",
        "--guidance",
        "1",
        "--fps",
        "4",
        "--shift",
        "3",
    ]
    assert _generate(tiny_model_dir, *args) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 9 and gif.size == (80, 48)
    sidecar = json.loads((tmp_path / "wide.json").read_text())
    assert (sidecar["height"], sidecar["width"], sidecar["num_frames"], sidecar["fps"]) == (48, 80, 9, 4)
    assert sidecar["num_inference_steps"] == 1 and sidecar["guidance_scale"] == 1.0
    assert sidecar["shift"] == 3.0  # --shift (new) decides the schedule's shift


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--prompt", "a cat", "--out", "x.mp4", "--height", "72"],
            "height 72 is not a positive multiple of 16",
        ),
        (["--prompt", "a cat", "--out", "x.mp4", "--frames", "10"], "num_frames 10 is not of the form 4k"),
        (["--prompt", "  ", "--out", "x.mp4"], "--prompt is empty"),
        (["--prompt", "a cat"], "--out PATH is required"),
        (["--batch", "cases.txt"], "--batch needs --out-dir"),
        (
            ["--prompt", "a cat", "--out", "x.mp4", "--ref", "missing.png"],
            "reference 0: missing.png does not exist",
        ),
        (["--prompt", "a cat", "--out", "x.mp4", "--fps", "0"], "fps 0 is not a frame rate"),
        (["--prompt", "a cat", "--out", "x.gif", "--fps", "-5"], "fps -5 is not a frame rate"),
        (["--prompt", "a cat", "--out", "x.gif", "--fps", "120"], "at most 100 fps"),
        (["--batch", "cases.txt", "--out-dir", "out", "--fps", "0"], "fps 0 is not a frame rate"),
        (["--prompt", "a cat", "--out", "x.mp4", "--guidance", "nan"], "--guidance nan is not a finite"),
        (["--prompt", "a cat \udcff walks", "--out", "x.mp4"], "--prompt: character 7 (U+DCFF)"),
        (
            ["--prompt", "a cat", "--negative-prompt", "\ud800", "--out", "x.mp4"],
            "--negative-prompt: character 1 (U+D800)",
        ),
        (["--prompt", "a cat", "--out", "x.mp4", "--device", "banana"], "--device 'banana' is not a torch"),
        (["--prompt", "a cat", "--out", "x.mp4", "--device", "meta"], "meta devices are not supported"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    tiny_model_dir, tmp_path, monkeypatch, capsys, extra, message
):
    monkeypatch.chdir(tmp_path)
    assert _generate(tiny_model_dir, *extra) == 2
    assert message in capsys.readouterr().err


def test_missing_model_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KALEIDO_S2V_MODEL", raising=False)
    assert main(["generate", "--model", str(tmp_path / "nothing"), "--prompt", "a", "--out", "x.mp4"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _write_cases(folder, reference_files) -> None:
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    wide, tall = reference_files
    lines = [
        f"a red and blue block slides left@@{wide}@@{tall}",  # 00001: good
        f"a cat sits@@{folder / 'missing.png'}",  # 00002: missing image (parser reports it)
        f"a dog runs@@{empty}",  # 00003: zero-byte image (fails when loaded)
        "",  # 00004: blank lines count and are skipped
        f"a boy jumps@@{corrupt}",  # 00005: corrupt image
        f"a green bar rises@@{tall}",  # 00006: good
    ]
    (folder / "cases.txt").write_text("\n".join(lines) + "\n")


def test_batch_skips_bad_lines_finishes_the_others_and_resumes(
    tiny_model_dir, reference_files, tmp_path, capsys
):
    _write_cases(tmp_path, reference_files)
    out_dir = tmp_path / "out"
    batch = ["--batch", str(tmp_path / "cases.txt"), "--out-dir", str(out_dir), "--seed", "7"]
    assert _generate(tiny_model_dir, *batch) == 1  # some cases failed
    captured = capsys.readouterr()
    assert "line 2" in captured.err and "missing.png" in captured.err
    assert "skipping case 00003" in captured.err and "empty file" in captured.err
    assert "skipping case 00005" in captured.err and "not a readable image" in captured.err
    assert "2 generated, 0 already done, 3 failed" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["00001.json", "00001.mp4", "00006.json", "00006.mp4"]
    assert probe_video(out_dir / "00001.mp4").num_frames == 5
    first = json.loads((out_dir / "00001.json").read_text())
    assert first["id"] == "00001" and first["seed"] == 7 and first["labels"] == ["wide", "tall"]
    stamps = {name: (out_dir / name).stat().st_mtime_ns for name in ("00001.mp4", "00006.mp4")}

    # A second run finds both videos done and leaves them untouched.
    assert _generate(tiny_model_dir, *batch) == 1
    assert "0 generated, 2 already done, 3 failed" in capsys.readouterr().out
    assert {name: (out_dir / name).stat().st_mtime_ns for name in stamps} == stamps

    # A run interrupted while writing (the side-car still says so) redoes that case only.
    pending = json.loads((out_dir / "00006.json").read_text())
    pending["status"] = "writing"
    del pending["output_sha256"], pending["output_bytes"]
    (out_dir / "00006.json").write_text(json.dumps(pending))
    assert _generate(tiny_model_dir, *batch) == 1
    assert "1 generated, 1 already done, 3 failed" in capsys.readouterr().out
    assert (out_dir / "00001.mp4").stat().st_mtime_ns == stamps["00001.mp4"]

    # A truncated video beside an intact side-car is not done: its size and digest are checked.
    video = (out_dir / "00006.mp4").read_bytes()
    (out_dir / "00006.mp4").write_bytes(video[: len(video) // 2])
    assert _generate(tiny_model_dir, *batch) == 1
    assert "1 generated, 1 already done, 3 failed" in capsys.readouterr().out
    assert (out_dir / "00006.mp4").read_bytes() == video  # the same seed writes the same bytes

    # Any resolved parameter that changes (here the seed) makes the case run again.
    batch[-1] = "8"
    assert _generate(tiny_model_dir, *batch) == 1
    assert "2 generated, 0 already done, 3 failed" in capsys.readouterr().out
    assert json.loads((out_dir / "00001.json").read_text())["seed"] == 8


def test_jsonl_case_seed_and_negative_prompt_win(tiny_model_dir, reference_files, tmp_path, capsys):
    case = {
        "id": "cat_walks",
        "prompt": "a cat walks",
        "references": [{"path": str(reference_files[0]), "label": "block"}],
        "negative_prompt": "静态",
        "seed": 11,
    }
    (tmp_path / "cases.jsonl").write_text(json.dumps(case, ensure_ascii=False) + "\n")
    out_dir = tmp_path / "out"
    args = ["--batch", str(tmp_path / "cases.jsonl"), "--out-dir", str(out_dir), "--steps", "1"]
    assert _generate(tiny_model_dir, *args) == 0
    sidecar = json.loads((out_dir / "cat_walks.json").read_text())
    assert sidecar["seed"] == 11 and sidecar["negative_prompt"] == "静态" and sidecar["labels"] == ["block"]
    assert "1 generated" in capsys.readouterr().out


def test_model_fingerprint_follows_file_contents_names_and_sizes(tmp_path):
    from kaleido_s2v.pipelines.generate import model_fingerprint

    (tmp_path / "transformer").mkdir()
    weights = tmp_path / "transformer" / "w.safetensors"
    weights.write_bytes(b"a" * 100)
    first = model_fingerprint(tmp_path)
    assert model_fingerprint(tmp_path) == first
    weights.write_bytes(b"b" * 100)
    assert model_fingerprint(tmp_path) != first
    weights.write_bytes(b"a" * 101)
    assert model_fingerprint(tmp_path) != first
    weights.write_bytes(b"a" * 100)
    assert model_fingerprint(tmp_path) == first
    weights.rename(tmp_path / "transformer" / "v.safetensors")
    assert model_fingerprint(tmp_path) != first


def test_out_folder_of_the_user_is_refused_and_kept(tiny_model_dir, reference_files, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"a photo")
    args = ["--ref", str(reference_files[0]), "--prompt", "a cat walks", "--out", str(folder)]
    assert _generate(tiny_model_dir, *args) == 2
    assert "beach.jpg" in capsys.readouterr().err
    assert _generate(tiny_model_dir, *args, "--overwrite") == 2  # never, even when asked
    assert sorted(p.name for p in folder.iterdir()) == ["beach.jpg"]
    assert not (tmp_path / "photos.json").exists()


@pytest.mark.parametrize("name", [".", "..", "~"])
def test_out_dot_dotdot_and_tilde_are_refused(
    tiny_model_dir, reference_files, tmp_path, monkeypatch, capsys, name
):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("keep")
    monkeypatch.chdir(work)
    args = ["--ref", str(reference_files[0]), "--prompt", "a cat walks", "--out", name, "--overwrite"]
    assert _generate(tiny_model_dir, *args) == 2
    assert "refusing to write PNG frames" in capsys.readouterr().err
    assert (work / "mine.txt").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "work"
    ]


def test_existing_video_is_replaced_only_when_ours_or_asked(
    tiny_model_dir, reference_files, tmp_path, capsys
):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"someone else's video")
    args = ["--ref", str(reference_files[0]), "--prompt", "a cat walks", "--out", str(out), "--steps", "1"]
    assert _generate(tiny_model_dir, *args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"someone else's video"
    assert _generate(tiny_model_dir, *args, "--overwrite") == 0
    recorded = json.loads((tmp_path / "clip.json").read_text())
    assert recorded["output_bytes"] == out.stat().st_size and recorded["status"] != "writing"
    assert _generate(tiny_model_dir, *args, "--seed", "1") == 0  # our own output: replaced
    assert json.loads((tmp_path / "clip.json").read_text())["seed"] == 1


def test_batch_never_replaces_a_video_it_did_not_write(tiny_model_dir, reference_files, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "00001.mp4").write_bytes(b"the user's video")
    (tmp_path / "cases.txt").write_text(
        f"a cat sits@@{reference_files[0]}\na dog runs@@{reference_files[1]}\n"
    )
    batch = ["--batch", str(tmp_path / "cases.txt"), "--out-dir", str(out_dir), "--steps", "1"]
    assert _generate(tiny_model_dir, *batch) == 1
    captured = capsys.readouterr()
    assert "skipping case 00001" in captured.err and "1 generated, 0 already done, 1 failed" in captured.out
    assert (out_dir / "00001.mp4").read_bytes() == b"the user's video"


def _write_jsonl(path, cases) -> None:
    path.write_text("".join(json.dumps(case) + "\n" for case in cases))


def test_batch_reports_any_error_of_one_case_and_finishes_the_others(
    tiny_model_dir, reference_files, tmp_path, monkeypatch, capsys
):
    import torch

    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

    encode_prompt = KaleidoPipeline.encode_prompt

    def out_of_memory_for_one_prompt(self, prompts, *args, **kwargs):
        if "a huge scene" in prompts:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2.00 GiB")
        return encode_prompt(self, prompts, *args, **kwargs)

    monkeypatch.setattr(KaleidoPipeline, "encode_prompt", out_of_memory_for_one_prompt)
    (tmp_path / "cases.txt").write_text(
        f"a huge scene@@{reference_files[0]}\na dog runs@@{reference_files[1]}\n"
    )
    out_dir = tmp_path / "out"
    batch = ["--batch", str(tmp_path / "cases.txt"), "--out-dir", str(out_dir), "--steps", "1"]
    assert _generate(tiny_model_dir, *batch) == 1
    captured = capsys.readouterr()
    assert (
        "skipping case 00001 (line 1): OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        in captured.err
    )
    assert "1 generated, 0 already done, 1 failed" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["00002.json", "00002.mp4"]


def test_batch_stops_on_keyboard_interrupt(tiny_model_dir, reference_files, tmp_path, monkeypatch):
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(KaleidoPipeline, "encode_prompt", interrupted)
    (tmp_path / "cases.txt").write_text(f"a cat sits@@{reference_files[0]}\n")
    with pytest.raises(KeyboardInterrupt):
        _generate(tiny_model_dir, "--batch", str(tmp_path / "cases.txt"), "--out-dir", str(tmp_path / "out"))


def test_batch_decompression_bomb_reference_fails_only_its_case(
    tiny_model_dir, reference_files, tmp_path, monkeypatch, capsys
):
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100), "white").save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # bomb: 10000 pixels; the references: 800, 768
    (tmp_path / "cases.txt").write_text(f"a white wall@@{bomb}\na block slides@@{reference_files[0]}\n")
    out_dir = tmp_path / "out"
    batch = ["--batch", str(tmp_path / "cases.txt"), "--out-dir", str(out_dir), "--steps", "1"]
    assert _generate(tiny_model_dir, *batch) == 1
    captured = capsys.readouterr()
    assert "skipping case 00001 (line 1):" in captured.err and "bomb.png" in captured.err
    assert "1 generated, 0 already done, 1 failed" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["00002.json", "00002.mp4"]


def test_prompt_with_a_lone_surrogate_in_a_case_file_fails_only_its_case(
    tiny_model_dir, reference_files, tmp_path, capsys
):
    reference = str(reference_files[0])
    _write_jsonl(
        tmp_path / "cases.jsonl",
        [
            {"id": "broken", "prompt": "a \ud800 cat", "references": [reference]},
            {"id": "fine", "prompt": "a cat", "references": [reference]},
        ],
    )
    out_dir = tmp_path / "out"
    batch = ["--batch", str(tmp_path / "cases.jsonl"), "--out-dir", str(out_dir), "--steps", "1"]
    assert _generate(tiny_model_dir, *batch) == 1
    captured = capsys.readouterr()
    assert "line 1 (case 'broken'): 'prompt': character 3 (U+D800) is not valid text" in captured.err
    assert "1 generated, 0 already done, 1 failed" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["fine.json", "fine.mp4"]


def test_case_id_too_long_for_a_file_name_fails_only_its_case(
    tiny_model_dir, reference_files, tmp_path, capsys
):
    reference = str(reference_files[0])
    cases = [{"id": "x" * 300, "prompt": "a cat", "references": [reference]}]
    cases.append({"id": "fine", "prompt": "a cat", "references": [reference]})
    _write_jsonl(tmp_path / "cases.jsonl", cases)
    out_dir = tmp_path / "out"
    batch = ["--batch", str(tmp_path / "cases.jsonl"), "--out-dir", str(out_dir), "--steps", "1"]
    assert _generate(tiny_model_dir, *batch) == 1
    captured = capsys.readouterr()
    assert "line 1: id 'xxxx" in captured.err and "is 300 bytes in UTF-8" in captured.err
    assert "1 generated, 0 already done, 1 failed" in captured.out
    assert sorted(p.name for p in out_dir.iterdir()) == ["fine.json", "fine.mp4"]


def test_fps_zero_from_the_model_config_is_refused_before_sampling(tmp_path):
    from kaleido_s2v.pipelines.generate import generate_to_file

    class NoPipeline:
        def __call__(self, *args, **kwargs):
            raise AssertionError("sampled although the frame rate cannot be written")

    model = type("Model", (), {"pipeline": NoPipeline()})()
    with pytest.raises(ValueError, match="fps 0 is not a frame rate"):
        generate_to_file(model, {"fps": 0, "seed": 0}, tmp_path / "clip.mp4")


@pytest.mark.parametrize(
    ("device", "built", "count", "message"),
    [
        ("cuda", False, 0, "--device cuda: torch was built without CUDA; use --device cpu or install a CUDA"),
        ("cuda:0", True, 0, "--device cuda:0: torch sees no CUDA GPU"),
        ("cuda:3", True, 1, "--device cuda:3: this machine has 1 CUDA GPU(s), cuda:0 to cuda:0"),
    ],
)
def test_unusable_cuda_device_is_a_clear_error(
    tiny_model_dir, tmp_path, monkeypatch, capsys, device, built, count, message
):
    import torch

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: built)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.chdir(tmp_path)
    assert _generate(tiny_model_dir, "--prompt", "a cat", "--out", "x.mp4", "--device", device) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_truncated_prompt_is_warned_about_and_recorded(tiny_model_dir, reference_files, tmp_path, capsys):
    args = ["--ref", str(reference_files[0]), "--steps", "1"]
    assert _generate(tiny_model_dir, *args, "--prompt", "a cat walks", "--out", str(tmp_path / "short")) == 0
    short = json.loads((tmp_path / "short.json").read_text())
    assert (short["prompt_tokens"], short["prompt_truncated"]) == (4, False)
    assert "warning" not in capsys.readouterr().err

    long_prompt = "a cat walks " * 300
    assert _generate(tiny_model_dir, *args, "--prompt", long_prompt, "--out", str(tmp_path / "long")) == 0
    recorded = json.loads((tmp_path / "long.json").read_text())
    assert (recorded["prompt_tokens"], recorded["prompt_truncated"], recorded["max_sequence_length"]) == (
        901,
        True,
        512,
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "warning: the prompt is 901 tokens, more than the 512 the model reads (max_sequence_length); "
        "the rest is cut off: shorten the prompt"
    ]


def test_truncated_prompt_in_a_batch_names_its_case(tiny_model_dir, reference_files, tmp_path, capsys):
    case = {"id": "wordy", "prompt": "a cat walks " * 300, "references": [str(reference_files[0])]}
    _write_jsonl(tmp_path / "cases.jsonl", [case])
    batch = ["--batch", str(tmp_path / "cases.jsonl"), "--out-dir", str(tmp_path / "out"), "--steps", "1"]
    assert _generate(tiny_model_dir, *batch) == 0
    assert "warning: case wordy (line 1): the prompt is 901 tokens" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "wordy.json").read_text())["prompt_truncated"] is True


def _png_frames(folder) -> np.ndarray:
    """(F, H, W, 3) uint8: the PNG frames `generate` wrote to `folder` (lossless, unlike MP4)."""
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


@pytest.fixture()
def loaded_models(monkeypatch) -> list:
    """Every `LoadedModel` that `generate` loads during the test, in order."""
    from kaleido_s2v.pipelines import generate

    loaded = []
    load_model = generate.load_model

    def recording(*args, **kwargs):
        loaded.append(load_model(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(generate, "load_model", recording)
    return loaded


def test_negative_prompt_changes_the_frames_and_is_recorded(tiny_model_dir, reference_files, tmp_path):
    args = ["--ref", str(reference_files[0]), "--prompt", "a cat walks", "--steps", "1"]
    assert _generate(tiny_model_dir, *args, "--out", str(tmp_path / "default")) == 0
    assert _generate(tiny_model_dir, *args, "--negative-prompt", "静态", "--out", str(tmp_path / "own")) == 0
    assert json.loads((tmp_path / "default.json").read_text())["negative_prompt"] == "低质量"  # the model's
    assert json.loads((tmp_path / "own.json").read_text())["negative_prompt"] == "静态"
    default, own = _png_frames(tmp_path / "default"), _png_frames(tmp_path / "own")
    assert default.shape == own.shape == (5, 64, 64, 3) and not np.array_equal(default, own)


def test_dtype_bf16_loads_bf16_weights_and_is_recorded(
    tiny_model_dir, reference_files, tmp_path, loaded_models
):
    import torch

    args = ["--ref", str(reference_files[0]), "--prompt", "a cat walks", "--steps", "1"]
    assert _generate(tiny_model_dir, *args, "--out", str(tmp_path / "fp32")) == 0  # fp32: CPU's default
    assert _generate(tiny_model_dir, *args, "--dtype", "bf16", "--out", str(tmp_path / "bf16")) == 0
    fp32, bf16 = (model.pipeline for model in loaded_models)
    assert fp32.transformer.dtype == fp32.text_encoder.dtype == torch.float32
    assert bf16.transformer.dtype == bf16.text_encoder.dtype == torch.bfloat16
    assert bf16.transformer.patch_embedding.weight.dtype == torch.bfloat16
    assert bf16.vae.dtype == torch.float32  # the VAE stays fp32
    assert json.loads((tmp_path / "fp32.json").read_text())["dtype"] == "fp32"
    assert json.loads((tmp_path / "bf16.json").read_text())["dtype"] == "bf16"
    full, half = _png_frames(tmp_path / "fp32"), _png_frames(tmp_path / "bf16")
    assert half.shape == full.shape == (5, 64, 64, 3) and not np.array_equal(half, full)


def test_memory_options_are_recorded_and_small_frames_are_not_tiled(
    tiny_model_dir, reference_files, tmp_path, loaded_models
):
    args = ["--ref", str(reference_files[0]), "--prompt", "a cat walks", "--steps", "1"]
    assert _generate(tiny_model_dir, *args, "--out", str(tmp_path / "plain")) == 0
    assert _generate(tiny_model_dir, *args, "--vae-tiling", "--out", str(tmp_path / "tiled")) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    tiled = json.loads((tmp_path / "tiled.json").read_text())
    assert {key: plain[key] for key in ("dtype", "device", "offload", "vae_tiling")} == {
        "dtype": "fp32",
        "device": "cpu",
        "offload": None,
        "vae_tiling": False,
    }
    assert tiled["vae_tiling"] is True and tiled["offload"] is None
    assert [model.pipeline.vae.use_tiling for model in loaded_models] == [False, True]
    # diffusers' Wan VAE tiles frames over 256 px only: 64x64 frames come out the same.
    assert np.array_equal(_png_frames(tmp_path / "tiled"), _png_frames(tmp_path / "plain"))


def test_offload_on_the_cpu_is_refused_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from kaleido_s2v.pipelines.kaleido import KaleidoPipeline

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded although --offload cannot work on the CPU")

    monkeypatch.setattr(KaleidoPipeline, "from_pretrained", never)
    monkeypatch.chdir(tmp_path)
    assert _generate(tiny_model_dir, "--prompt", "a cat", "--out", "x.mp4", "--offload") == 2
    assert (
        "--offload moves each model from CPU memory to the GPU while it runs; on device cpu every model "
        "already runs from CPU memory, so it would save nothing: drop --offload, or use --device cuda"
    ) in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_offloaded_model_writes_the_plain_frames_and_records_offload(
    tiny_model_dir, reference_files, tmp_path
):
    """--offload needs a GPU; on the CPU diffusers' offload runs with device="cpu", as `load_model`
    would set it up on a GPU, so the side-car and the frames can be checked here."""
    from dataclasses import replace

    from kaleido_s2v.pipelines.generate import generate_to_file, load_model, resolve_parameters
    from kaleido_s2v.pipelines.generation_config import GenerationSettings

    model = load_model(tiny_model_dir, device="cpu")
    model.pipeline.set_progress_bar_config(disable=True)
    settings = GenerationSettings(num_inference_steps=1)
    parameters = resolve_parameters(model, "a cat walks", reference_files[:1], settings, seed=0)
    generate_to_file(model, parameters, tmp_path / "plain")
    model.pipeline.enable_model_cpu_offload(device="cpu")
    offloaded = replace(model, offload="model")
    generate_to_file(
        offloaded,
        resolve_parameters(offloaded, "a cat walks", reference_files[:1], settings, 0),
        tmp_path / "offloaded",
    )
    assert json.loads((tmp_path / "offloaded.json").read_text())["offload"] == "model"
    assert np.array_equal(_png_frames(tmp_path / "offloaded"), _png_frames(tmp_path / "plain"))
