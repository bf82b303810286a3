"""Pure-PyTorch pieces of a training step (no Ray): padding trim.

Kept apart from loop.py so they can be used and checked without a Ray cluster
(e.g. bench/gpu_check.py on a machine that has no Ray).
"""

from __future__ import annotations

import torch

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def trim_padding(
    batch: dict[str, torch.Tensor], columns: tuple[str, ...] = TOKEN_COLUMNS
) -> dict[str, torch.Tensor]:
    """Cut the token-aligned ``columns`` (padded to max_length) down to the longest real
    sequence in the batch; other columns (e.g. seq2seq labels) stay as they are."""
    mask = batch.get("attention_mask")
    if mask is None:
        return batch
    longest = max(int(mask.sum(dim=1).max()), 1)
    # contiguous: losses call .view() on these (a column slice is not viewable)
    return {
        key: value[:, :longest].contiguous() if key in columns and value.dim() >= 2 else value
        for key, value in batch.items()
    }
