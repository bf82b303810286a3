"""In-process PyTorch inference over a trained model folder (evaluation and parity checks)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from raynlp.tasks import get_task
from raynlp.training.checkpoints import read_model_meta

Features = dict[str, np.ndarray]


def batches(features: Features, size: int) -> Iterator[Features]:
    total = len(next(iter(features.values())))
    for start in range(0, total, size):
        yield {k: v[start : start + size] for k, v in features.items()}


def trim_features(features: Features) -> Features:
    """Drop padding columns beyond the longest sequence (numpy twin of the loop's trim)."""
    longest = max(int(features["attention_mask"].sum(axis=1).max()), 1)
    return {k: v[:, :longest] if v.ndim == 2 else v for k, v in features.items()}


def torch_runner(model_dir: Path) -> Callable[[Features], np.ndarray]:
    """features → logits with the fine-tuned PyTorch model (labels ignored)."""
    task = get_task(read_model_meta(model_dir)["task"])
    model = task.load_trained(str(model_dir)).eval()

    def run(features: Features) -> np.ndarray:
        inputs = {k: torch.from_numpy(v) for k, v in features.items() if k != "labels"}
        with torch.inference_mode():
            return model(**inputs).logits.float().numpy()

    return run


def logits_in_batches(
    run: Callable[[Features], np.ndarray], features: Features, size: int = 32
) -> np.ndarray:
    return np.concatenate([run(trim_features(batch)) for batch in batches(features, size)])
