import numpy as np
import pytest

from kaleido_s2v.data.backends import Caption, VlmCaptioner, parse_caption
from kaleido_s2v.data.backends.captioning import clean_subject, sample_frames


@pytest.fixture(scope="module")
def captioner(qwen_vl_dir):
    return VlmCaptioner.from_pretrained(qwen_vl_dir, max_frames=3, max_new_tokens=12)


def test_caption_runs_the_model_on_frames(captioner, astronaut, chelsea):
    frames = [astronaut, chelsea, astronaut, chelsea, astronaut]
    generated = []
    original = captioner.model.generate

    def spy(**inputs):
        output = original(**inputs)
        generated.append(output.shape[1] - inputs["input_ids"].shape[1])
        assert inputs["image_grid_thw"].shape[0] == 3  # five frames sampled down to max_frames
        return output

    captioner.model.generate = spy
    try:
        caption = captioner.caption(frames)
        raw = captioner.generate_text(frames)
    finally:
        captioner.model.generate = original
    assert generated and all(0 < n <= 12 for n in generated)
    assert isinstance(caption, Caption) and isinstance(caption.text, str)
    assert all(isinstance(s, str) and s for s in caption.subjects)
    assert "<|" not in raw  # special tokens are stripped (random weights emit many)
    assert caption == parse_caption(raw, max_subjects=captioner.max_subjects)
    assert caption == captioner.caption(frames)  # greedy decoding is deterministic


def test_prompt_expands_one_placeholder_per_merged_patch(captioner, astronaut, chelsea):
    inputs = captioner.build_inputs([astronaut, chelsea])
    grid = inputs["image_grid_thw"]
    assert grid.shape == (2, 3)
    image_token = captioner.model.config.image_token_id
    n_placeholders = int((inputs["input_ids"] == image_token).sum())
    assert n_placeholders == int(grid.prod(dim=1).sum()) // captioner.image_processor.merge_size**2
    assert inputs["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())


def test_sample_frames_keeps_ends_and_order():
    frames = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(10)]
    picked = sample_frames(frames, 4)
    assert [int(f[0, 0, 0]) for f in picked] == [0, 3, 6, 9]
    assert len(sample_frames(frames[:2], 4)) == 2


@pytest.mark.parametrize(
    ("answer", "text", "subjects"),
    [
        (
            '{"caption": "A cat walks.", "subjects": ["Cat", "the red car"]}',
            "A cat walks.",
            ["cat", "red car"],
        ),
        (
            'Sure!\n```json\n{"caption": "A woman waves.", "subjects": "woman, dog and ball"}\n```',
            "A woman waves.",
            ["woman", "dog", "ball"],
        ),
        (
            "Caption: A man rides a bike.\nSubjects: man; bicycle; man",
            "A man rides a bike.",
            ["man", "bicycle"],
        ),
        ("**Caption:** Two dogs play.\n**Subjects:** dog", "Two dogs play.", ["dog"]),
        ("A plain sentence with no structure.", "A plain sentence with no structure.", []),
        ('{"caption": "broken json", "subjects": [', '{"caption": "broken json", "subjects": [', []),
    ],
)
def test_parse_caption_is_robust(answer, text, subjects):
    parsed = parse_caption(answer)
    assert parsed.text == text
    assert parsed.subjects == subjects


def test_parse_caption_limits_subjects_and_cleans_words():
    parsed = parse_caption('{"caption": "x", "subjects": ["a", "b", "c", "d"]}', max_subjects=2)
    assert parsed.subjects == ["a", "b"]
    assert clean_subject(' "The Red Car." ') == "red car"
    assert clean_subject("an") == "an"  # a lone word is not an article to strip
    assert clean_subject("...") == ""


def test_wrong_inputs(captioner):
    with pytest.raises(ValueError, match="empty"):
        captioner.caption([])


def test_max_pixels_caps_visual_tokens(qwen_vl_dir, astronaut):
    small = VlmCaptioner.from_pretrained(qwen_vl_dir, max_pixels=56 * 56)
    large = VlmCaptioner.from_pretrained(qwen_vl_dir, max_pixels=112 * 112)
    small_grid = small.build_inputs([astronaut])["image_grid_thw"][0]
    large_grid = large.build_inputs([astronaut])["image_grid_thw"][0]
    assert int(small_grid[1:].prod()) * 14 * 14 <= 56 * 56
    assert int(large_grid[1:].prod()) > int(small_grid[1:].prod())
