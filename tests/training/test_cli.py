import json
import math

import pytest
import yaml
from PIL import Image

from kaleido_s2v.cli import main
from kaleido_s2v.training.datasets import LatentCacheDataset
from tiny_components import TINY_TRANSFORMER_CONFIG, save_tiny_pipeline
from training.training_helpers import clip, write_sample


def test_cache_then_train_end_to_end(tmp_path, capsys):
    write_sample(tmp_path, "a", clip(9), 8.0)
    write_sample(tmp_path, "b", clip(9, seed=1), 8.0, refs=2, caption="a dog runs")
    encoders = save_tiny_pipeline(tmp_path / "pipeline")
    config = dict(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        micro_batch_size=2,
        mixed_precision="no",
        checkpoint_every=2,
        log_every=1,
        model=dict(config=dict(TINY_TRANSFORMER_CONFIG)),
        encoders=dict(path=str(encoders), max_text_length=16),
        data=dict(
            paths=[str(tmp_path / "set")],
            resolutions=[[64, 64]],
            num_frames=9,
            fps=8,
            cache_dir=str(tmp_path / "cache"),
        ),
        optimizer=dict(lr=1e-3),
        sampling=dict(
            every=2, cases=str(tmp_path / "cases.jsonl"), num_inference_steps=2, guidance_scale=3.0
        ),
    )
    Image.new("RGB", (24, 40), (200, 30, 30)).save(tmp_path / "red.png")
    case = {"id": "red_thing", "prompt": "a red ball", "references": [{"path": "red.png", "label": "ball"}]}
    (tmp_path / "cases.jsonl").write_text(json.dumps(case) + "\n")
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))

    assert main(["train", "cache", str(path)]) == 0
    assert len(LatentCacheDataset(tmp_path / "cache")) == 2
    assert main(["train", str(path)]) == 0
    assert "trained steps 0..3" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert (tmp_path / "run" / "final" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()
    assert json.loads((tmp_path / "run" / "final" / "training_state.json").read_text())["shift"] == {
        "setting": "auto",
        "values": {"64x64": pytest.approx(math.exp(0.5 + 0.65 * (16 - 256) / 3840))},
    }
    assert (tmp_path / "run" / "samples" / "step-00000002" / "red_thing.mp4").is_file()
    assert not (tmp_path / "run" / "samples" / "step-00000003").exists()


def test_cli_names_an_unknown_config_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  config: {}\ndata:\n  num_frame: 81\n")
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err
    assert "unknown config key 'data.num_frame'" in error and "num_frames" in error
    assert main(["train", "cache", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
