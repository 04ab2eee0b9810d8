"""R-RoPE: where each token of `[ref_0 | ... | ref_{S-1} | video]` sits in Wan's 3D rotary table.

Wan rotates q and k by a position (t, h, w) per token. Video token of latent frame f at patch row
y, column x sits at (f, y, x). Kaleido places the tokens of reference i at (i, dh + y, dw + x):
the same temporal index as video frame i, shifted in space by an offset that depends on the
policy (docs/model.md#2-r-rope-positions):

- "kaleido": (80, 80), the released checkpoint's rule (H_max = W_max = 80 patches = 1280 px);
- "video":   the video's own patch-grid (height, width), as the paper's figure draws it;
- "none":    (0, 0), reference i overlaps video frame i (the naive baseline of the ablation).
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

ROPE_POLICIES = ("kaleido", "video", "none")
KALEIDO_REFERENCE_OFFSET = 80


def reference_offset(policy: str, video_grid_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial (row, column) offset of every reference token under `policy`."""
    if policy == "kaleido":
        return KALEIDO_REFERENCE_OFFSET, KALEIDO_REFERENCE_OFFSET
    if policy == "video":
        return video_grid_hw
    if policy == "none":
        return 0, 0
    raise ValueError(f"unknown R-RoPE policy {policy!r}; choose one of {', '.join(ROPE_POLICIES)}")


def grid_positions(num_frames: int, height: int, width: int, t0: int = 0, h0: int = 0, w0: int = 0):
    """Integer (t, h, w) of every cell of a (num_frames, height, width) patch grid, row-major.

    Returns a LongTensor (num_frames * height * width, 3), in the order tokens are flattened
    from a (F, H, W) grid (frame, then row, then column).
    """
    t, h, w = torch.meshgrid(
        torch.arange(t0, t0 + num_frames),
        torch.arange(h0, h0 + height),
        torch.arange(w0, w0 + width),
        indexing="ij",
    )
    return torch.stack([t, h, w], dim=-1).reshape(-1, 3)


def token_positions(
    video_grid: tuple[int, int, int], reference_grids: list[tuple[int, int]], policy: str
) -> torch.Tensor:
    """Positions of the whole sequence `[ref_0 | ... | ref_{S-1} | video]`.

    Args:
        video_grid: the video's patch grid (F, H, W).
        reference_grids: each reference's patch grid (h_i, w_i); one latent frame each.
    Returns:
        LongTensor (sum_i h_i * w_i + F * H * W, 3).
    """
    num_frames, height, width = video_grid
    offset_h, offset_w = reference_offset(policy, (height, width))
    parts = [
        grid_positions(1, ref_h, ref_w, t0=index, h0=offset_h, w0=offset_w)
        for index, (ref_h, ref_w) in enumerate(reference_grids)
    ]
    parts.append(grid_positions(num_frames, height, width))
    return torch.cat(parts, dim=0)


def check_positions_fit(
    video_grid: tuple[int, int, int], reference_grids: list[tuple[int, int]], policy: str, table_size: int
) -> None:
    """Refuse a sequence whose positions reach past a rotary table of `table_size` rows (docs/contracts.md#8-limits).

    Reference i reaches max(i, offset_h + h_i - 1, offset_w + w_i - 1); the video max(F, H, W) - 1: the
    largest entry of `token_positions`, computed without building it, so a caller can check a request
    before encoding anything. Raises ValueError naming the first part that does not fit.
    """
    if len(reference_grids) > table_size:
        raise ValueError(
            f"{len(reference_grids)} references exceed the rotary position table ({table_size} temporal "
            f"positions, rope_max_seq_len); reference i sits at temporal position i, so use at most {table_size}"
        )
    offset_h, offset_w = reference_offset(policy, video_grid[1:])
    for index, (ref_h, ref_w) in enumerate(reference_grids):
        reach = max(index, offset_h + ref_h - 1, offset_w + ref_w - 1)
        if reach >= table_size:
            raise ValueError(
                f"reference {index} (patch grid {ref_h}x{ref_w}) at R-RoPE offset ({offset_h}, {offset_w}) "
                f"under policy {policy!r} reaches rotary position {reach}, but the table holds "
                f"{table_size} positions (rope_max_seq_len); use fewer or smaller references, or a model "
                f"with rope_max_seq_len > {reach}"
            )
    if max(video_grid) - 1 >= table_size:
        raise ValueError(
            f"video patch grid {video_grid} exceeds the rotary table of {table_size} positions "
            "(rope_max_seq_len); use a smaller video"
        )


class ReferenceRotaryPosEmbed(WanRotaryPosEmbed):
    """Wan's rotary tables, looked up at explicit per-token positions instead of one video grid.

    The tables (`freqs_cos`, `freqs_sin`: (max_seq_len, head_dim), the t/h/w blocks side by side)
    are Wan's own, so for a video alone the lookup returns exactly what Wan computes.
    """

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (N, 3) -> (cos, sin), each (1, N, 1, head_dim)."""
        split_sizes = [self.t_dim, self.h_dim, self.w_dim]
        positions = positions.to(self.freqs_cos.device)
        cos_tables = self.freqs_cos.split(split_sizes, dim=1)
        sin_tables = self.freqs_sin.split(split_sizes, dim=1)
        # index_select on the column blocks; advanced indexing of these strided views is ~100x slower.
        cos = torch.cat(
            [table.index_select(0, positions[:, axis]) for axis, table in enumerate(cos_tables)], dim=-1
        )
        sin = torch.cat(
            [table.index_select(0, positions[:, axis]) for axis, table in enumerate(sin_tables)], dim=-1
        )
        return cos[None, :, None, :], sin[None, :, None, :]
