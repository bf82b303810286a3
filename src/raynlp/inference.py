"""Run a task's model over rows in-process: PyTorch (evaluation, parity) or ONNX Runtime (export
checks, serving, batch prediction). Both go through the same task calls:
``encode → infer (per batch) → merge → predictions``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raynlp.tasks import Task, get_task
from raynlp.tasks.base import Features, InputSpec, Row, merge_outputs
from raynlp.training.checkpoints import read_model_meta


def batches(features: Features, size: int) -> Iterator[Features]:
    total = len(next(iter(features.values())))
    for start in range(0, total, size):
        yield {k: v[start : start + size] for k, v in features.items()}


def trim_features(features: Features, columns: tuple[str, ...]) -> Features:
    """Drop padding beyond the longest sequence from the token-aligned ``columns``."""
    longest = max(int(features["attention_mask"].sum(axis=1).max()), 1)
    return {
        k: np.ascontiguousarray(v[:, :longest]) if k in columns and v.ndim >= 2 else v
        for k, v in features.items()
    }


def session_options(threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def load_model(model_dir: str | Path, threads: int = 1) -> Any:
    """The model of a folder: a consolidated PyTorch model, an ONNX export (``*.onnx``) or a
    traced TorchScript module (``model.torchscript.pt``)."""
    from raynlp.export.torchscript import is_torchscript_dir, load_torchscript

    model_dir = Path(model_dir)
    task = get_task(read_model_meta(model_dir)["task"])
    if is_torchscript_dir(model_dir):
        return load_torchscript(model_dir, threads)
    if any(model_dir.glob("*.onnx")):
        return task.load_onnx(str(model_dir), session_options(threads), "CPUExecutionProvider")
    return task.load_trained(str(model_dir))


def infer(
    task: Task, model: Any, features: Features, spec: InputSpec, batch_size: int = 32
) -> Features:
    """The task's raw outputs for all ``features``, batch by batch (padding trimmed per batch)."""
    parts = []
    with torch.inference_mode():
        for batch in batches(features, batch_size):
            trimmed = trim_features(batch, task.token_columns)
            parts.append(
                task.infer(model, {k: torch.from_numpy(v) for k, v in trimmed.items()}, spec)
            )
    return merge_outputs(parts)


class ModelRunner:
    """A loaded model folder (PyTorch or ONNX) with its tokenizer, task and input spec."""

    def __init__(self, model_dir: str | Path, threads: int = 1) -> None:
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.meta = read_model_meta(self.model_dir)
        self.task = get_task(self.meta["task"])
        self.labels = self.meta.get("labels")
        self.spec = InputSpec.from_meta(self.meta)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = load_model(self.model_dir, threads)

    def encode(self, rows: list[Row], targets: bool, padding: str = "max_length") -> Features:
        return self.task.encode(rows, self.tokenizer, self.spec, self.labels, targets, padding)

    def run(self, features: Features, batch_size: int = 32) -> Features:
        return infer(self.task, self.model, features, self.spec, batch_size)

    def predict_rows(
        self, rows: list[Row], batch_size: int = 32, features: Features | None = None
    ) -> list[dict[str, Any]]:
        """One answer per row, in order."""
        if features is None:
            features = self.encode(rows, targets=False, padding="longest")
        outputs = self.run(features, batch_size)
        return self.task.predictions(outputs, rows, self.spec, self.labels, self.tokenizer)

    def score(self, rows: list[Row], batch_size: int = 32) -> tuple[dict[str, Any], list[dict]]:
        """(metrics, predictions) of this model on labelled rows."""
        predictions = self.predict_rows(rows, batch_size, self.encode(rows, targets=False))
        metrics = self.task.compute_metrics(predictions, rows, self.spec, self.labels)
        return metrics, predictions


def example_lengths(features: Features) -> np.ndarray:
    """Tokens used by each feature (to flag inputs that filled the window)."""
    return features["attention_mask"].sum(axis=1)
