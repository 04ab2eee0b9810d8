import numpy as np
import pytest

from kaleido_s2v.data.backends import ClipScorer, DinoV2Embedder


@pytest.fixture(scope="module", params=["clip", "siglip", "siglip2"])
def scorer(request):
    return ClipScorer.from_pretrained(request.getfixturevalue(f"{request.param}_dir"))


def test_features_are_unit_vectors(scorer, astronaut, chelsea):
    images = scorer.image_features([astronaut, chelsea])
    texts = scorer.text_features(["a photo of a cat", "an astronaut with a flag", "red car"])
    assert images.dtype == np.float32 and texts.dtype == np.float32
    assert images.shape[0] == 2 and texts.shape[0] == 3 and images.shape[1] == texts.shape[1]
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(images[0], images[1])


def test_similarity_is_the_cosine_matrix_and_deterministic(scorer, astronaut, chelsea):
    texts = ["a photo of a cat", "a person"]
    similarity = scorer.image_text_similarity([astronaut, chelsea], texts)
    assert similarity.shape == (2, 2)
    assert np.all(similarity <= 1.0 + 1e-6) and np.all(similarity >= -1.0 - 1e-6)
    expected = scorer.image_features([astronaut, chelsea]) @ scorer.text_features(texts).T
    np.testing.assert_allclose(similarity, expected, atol=1e-6)
    np.testing.assert_array_equal(similarity, scorer.image_text_similarity([astronaut, chelsea], texts))


def test_batching_does_not_change_features(clip_dir, astronaut, chelsea):
    batched = ClipScorer.from_pretrained(clip_dir, batch_size=1)
    whole = ClipScorer.from_pretrained(clip_dir, batch_size=8)
    np.testing.assert_allclose(
        batched.image_features(np.stack([astronaut, astronaut])),
        whole.image_features([astronaut, astronaut]),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        batched.text_features(["cat", "dog"]), whole.text_features(["cat", "dog"]), atol=1e-5
    )


def test_bad_inputs(scorer, astronaut):
    with pytest.raises(ValueError, match="empty"):
        scorer.image_features([])
    with pytest.raises(TypeError, match="list of strings"):
        scorer.text_features("cat")
    with pytest.raises(ValueError, match="uint8"):
        scorer.image_features([astronaut / 255.0])


@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_embeddings(registers, dinov2_dir, tmp_path, astronaut, chelsea):
    from tiny_backends import save_tiny_dinov2

    folder = save_tiny_dinov2(tmp_path / "dinov2_reg", registers=True) if registers else dinov2_dir
    embedder = DinoV2Embedder.from_pretrained(folder)
    assert embedder.model.config.model_type == ("dinov2_with_registers" if registers else "dinov2")
    features = embedder.image_features([astronaut, chelsea, astronaut])
    assert features.shape == (3, embedder.model.config.hidden_size) and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(features[0], features[2], atol=1e-6)  # same image, same features
    assert float(features[0] @ features[1]) < 0.9999


def test_tiny_and_thin_crops_are_scored(scorer, dinov2_dir, astronaut):
    """The filter stage scores subject crops, which can be a few pixels wide."""
    crops = [astronaut[:1, :3], astronaut[:, :2], astronaut[5:9, 5:9]]
    assert scorer.image_text_similarity(crops, ["cat"]).shape == (3, 1)
    assert DinoV2Embedder.from_pretrained(dinov2_dir).image_features(crops).shape[0] == 3
