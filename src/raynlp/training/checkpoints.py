"""DeepSpeed checkpoints through Ray Train, and their consolidation into a Hugging Face folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

DEEPSPEED_TAG = "deepspeed"
META_FILE = "raynlp_checkpoint.json"
MODEL_META_FILE = "raynlp.json"
"""Written beside a consolidated model: task, labels, max length, columns."""


def save_checkpoint(engine: Any, directory: Path, meta: dict[str, Any], rank: int) -> None:
    """Every rank writes its own shard files; rank 0 adds the metadata."""
    engine.save_checkpoint(str(directory), tag=DEEPSPEED_TAG)
    if rank == 0:
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META_FILE).read_text())


def consolidated_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """A full fp32 state dict from a DeepSpeed checkpoint of any ZeRO stage."""
    directory = Path(directory)
    tag_dir = directory / DEEPSPEED_TAG
    if any(tag_dir.glob("*zero_pp_rank_*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=DEEPSPEED_TAG)
    else:  # ZeRO stage 0: rank 0's module file holds every weight.
        module_file = tag_dir / "mp_rank_00_model_states.pt"
        state = torch.load(module_file, map_location="cpu", weights_only=False)["module"]
    return {name: tensor.float() for name, tensor in state.items()}


def write_model_dir(
    model: Any,
    state_dict: dict[str, torch.Tensor],
    tokenizer: Any,
    target: Path,
    meta: dict[str, Any],
) -> Path:
    """Load ``state_dict`` into ``model`` and write a standard ``save_pretrained`` folder."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    real_missing = [name for name in missing if name not in buffers]
    if real_missing or unexpected:
        raise RuntimeError(
            f"checkpoint does not match the model: missing {real_missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if target.exists():
        shutil.rmtree(target)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    (target / MODEL_META_FILE).write_text(json.dumps(meta, indent=2))
    return target


def read_model_meta(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / MODEL_META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a raynlp model folder (no {MODEL_META_FILE}); "
            "train one with `raynlp train`"
        )
    return json.loads(path.read_text())
