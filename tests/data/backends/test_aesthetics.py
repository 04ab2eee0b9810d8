import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kaleido_s2v.data.backends import LaionAestheticPredictor
from kaleido_s2v.data.backends.aesthetics import build_head
from tiny_backends import aesthetic_head_state as mlp_state
from tiny_backends import save_tiny_aesthetic_head


@pytest.fixture(scope="module")
def clip_dim(clip_dir) -> int:
    import json

    return json.loads((clip_dir / "config.json").read_text())["projection_dim"]


def test_mlp_head_from_safetensors_scores_like_the_formula(tmp_path, clip_dir, clip_dim, astronaut, chelsea):
    head = save_tiny_aesthetic_head(tmp_path / "head.safetensors", clip_dir)
    state = mlp_state(clip_dim)  # the same seeded weights the file holds
    predictor = LaionAestheticPredictor.from_pretrained(clip_dir, head_path=head)
    scores = predictor.score([astronaut, chelsea])
    assert scores.shape == (2,) and scores.dtype == np.float32 and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(scores, predictor.score([astronaut, chelsea]))

    # By hand: normalised CLIP image embedding through the five linear layers.
    from kaleido_s2v.data.backends import ClipScorer

    features = torch.from_numpy(ClipScorer.from_pretrained(clip_dir).image_features([astronaut, chelsea]))
    x = features
    for index in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    np.testing.assert_allclose(scores, x[:, 0].numpy(), rtol=1e-4, atol=1e-4)


def test_linear_head_from_pt_file(tmp_path, clip_dir, clip_dim, astronaut):
    torch.save({"weight": torch.ones(1, clip_dim), "bias": torch.tensor([5.0])}, tmp_path / "linear.pth")
    predictor = LaionAestheticPredictor.from_pretrained(clip_dir, head_path=tmp_path / "linear.pth")
    assert len(predictor.head) == 1
    assert predictor.score(astronaut).shape == (1,)


def test_head_errors(tmp_path, clip_dir, clip_dim):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        LaionAestheticPredictor.from_pretrained(clip_dir, head_path=tmp_path / "missing.pth")
    save_file(mlp_state(768), tmp_path / "vit_l.safetensors")
    with pytest.raises(ValueError, match="768-d"):
        LaionAestheticPredictor.from_pretrained(clip_dir, head_path=tmp_path / "vit_l.safetensors")
    with pytest.raises(ValueError, match="previous layer"):
        build_head({"layers.0.weight": torch.ones(4, clip_dim), "layers.2.weight": torch.ones(1, 5)})
    with pytest.raises(ValueError, match="1 outputs|gives 1"):
        build_head({"weight": torch.ones(3, clip_dim)})
    (tmp_path / "pickle.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="weights_only"):
        LaionAestheticPredictor.from_pretrained(clip_dir, head_path=tmp_path / "pickle.pth")
