import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from kaleido_s2v.models.rope import (
    ReferenceRotaryPosEmbed,
    check_positions_fit,
    reference_offset,
    token_positions,
)


def test_video_positions_are_frame_row_column():
    positions = token_positions((2, 2, 3), [], "kaleido")
    expected = [(f, y, x) for f in range(2) for y in range(2) for x in range(3)]
    assert positions.tolist() == [list(p) for p in expected]


@pytest.mark.parametrize(
    "policy, offset",
    [("kaleido", (80, 80)), ("video", (3, 5)), ("none", (0, 0))],
)
def test_reference_positions_per_policy(policy, offset):
    # Video grid F=4, H=3, W=5; two references of different sizes, given in order.
    positions = token_positions((4, 3, 5), [(2, 2), (1, 3)], policy).tolist()
    dh, dw = offset
    ref0 = [[0, dh + y, dw + x] for y in range(2) for x in range(2)]
    ref1 = [[1, dh + 0, dw + x] for x in range(3)]
    video = [[f, y, x] for f in range(4) for y in range(3) for x in range(5)]
    assert positions == ref0 + ref1 + video
    assert reference_offset(policy, (3, 5)) == offset


def test_reference_temporal_index_is_its_order_not_minus_one():
    positions = token_positions((1, 2, 2), [(1, 1)] * 4, "kaleido")
    assert positions[:4, 0].tolist() == [0, 1, 2, 3]


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="unknown R-RoPE policy 'shifted'"):
        token_positions((1, 2, 2), [(1, 1)], "shifted")


def test_lookup_matches_wan_rotary_for_a_video_alone():
    wan = WanRotaryPosEmbed(attention_head_dim=128, patch_size=(1, 2, 2), max_seq_len=256)
    ours = ReferenceRotaryPosEmbed(attention_head_dim=128, patch_size=(1, 2, 2), max_seq_len=256)
    latents = torch.zeros(1, 16, 3, 10, 14)
    wan_cos, wan_sin = wan(latents)
    cos, sin = ours(token_positions((3, 5, 7), [], "kaleido"))
    assert torch.equal(cos, wan_cos) and torch.equal(sin, wan_sin)
    # Head dim 128 splits into t/h/w = 44/42/42 channels.
    assert (ours.t_dim, ours.h_dim, ours.w_dim) == (44, 42, 42)


@pytest.mark.parametrize(
    "video_grid, reference_grids, policy, fits",
    [
        ((1, 4, 4), [(20, 4)], "kaleido", True),  # reaches 80 + 20 - 1 = 99: the last row of a 100-table
        ((1, 4, 4), [(21, 4)], "kaleido", False),  # reaches 100
        ((1, 4, 4), [(4, 20)], "kaleido", True),
        ((1, 4, 4), [(4, 21)], "kaleido", False),
        ((1, 100, 4), [], "kaleido", True),  # video positions 0..99
        ((1, 101, 4), [], "kaleido", False),
        ((1, 2, 2), [(1, 1)] * 100, "none", True),  # reference 99 sits at temporal position 99
        ((1, 2, 2), [(1, 1)] * 101, "none", False),
    ],
)
def test_positions_fit_exactly_up_to_the_last_row_of_the_table(video_grid, reference_grids, policy, fits):
    """The largest position check_positions_fit accepts is the table's last row, and it equals the
    largest entry token_positions actually produces."""
    reach = int(token_positions(video_grid, reference_grids, policy).max())
    assert fits == (reach < 100)
    if fits:
        check_positions_fit(video_grid, reference_grids, policy, table_size=100)
    else:
        with pytest.raises(ValueError, match="100 (temporal )?positions"):
            check_positions_fit(video_grid, reference_grids, policy, table_size=100)
