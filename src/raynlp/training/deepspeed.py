"""Build the DeepSpeed config from the job config: the one place CPU/GPU and precision are decided."""

from __future__ import annotations

from typing import Any

from raynlp.config import JobConfig


def resolve_precision(config: JobConfig) -> str:
    """'auto' means bf16 on GPU and fp32 on CPU (DeepSpeed's CPU path trains in fp32)."""
    precision = config.deepspeed.precision
    if precision == "auto":
        return "bf16" if config.scaling.use_gpu else "fp32"
    return precision


def distributed_backend(config: JobConfig) -> str:
    return "nccl" if config.scaling.use_gpu else "gloo"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_deepspeed_config(config: JobConfig) -> dict[str, Any]:
    """A DeepSpeed JSON for this job; ``deepspeed.config`` from the job is merged over it."""
    training = config.training
    precision = resolve_precision(config)
    built: dict[str, Any] = {
        "train_batch_size": training.batch_size,
        "train_micro_batch_size_per_gpu": config.per_worker_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "gradient_clipping": training.max_grad_norm,
        "zero_optimization": {"stage": config.deepspeed.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        # raynlp passes a torch AdamW (no JIT-built DeepSpeed optimizer ops needed on CPU).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if config.deepspeed.config:
        built = _merge(built, config.deepspeed.config)
    return built
