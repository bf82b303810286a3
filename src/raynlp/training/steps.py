"""Pure-PyTorch pieces of a training step (no Ray): padding trim, optimizer, LR schedule.

Kept apart from loop.py so they can be used and checked without a Ray cluster
(e.g. bench/gpu_check.py on a machine that has no Ray).
"""

from __future__ import annotations

import torch

from raynlp.config import JobConfig

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


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


def build_optimizer(model: torch.nn.Module, config: JobConfig) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases and norm weights (the BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name.endswith(NO_DECAY) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.training.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel (CPU and CUDA) makes the step ~3× faster than the per-tensor loop on CPU.
    return torch.optim.AdamW(groups, lr=config.training.learning_rate, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: JobConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then linear decay to zero."""
    warmup = int(total_steps * config.training.warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
